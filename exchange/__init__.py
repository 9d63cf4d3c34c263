"""The medledger service and command (docs/architecture.md is the package map)."""

from importlib import metadata

try:
    __version__ = metadata.version("medledger")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
