"""Prints the service's OpenAPI document as YAML: `python -m exchange.openapi_dump > openapi.yaml`.

openapi.yaml at the repository root is the HTTP contract; tests/http/test_openapi_contract.py fails
when it differs from what the app generates.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from exchange.app import create_app
from exchange.config import Settings


def openapi_document() -> dict[str, Any]:
    """The app's OpenAPI document (built on a throwaway data directory)."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data_dir=Path(tmp)))
        try:
            return app.openapi()
        finally:
            app.services.close()


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (descriptions) as literal blocks, as they read in the source."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


if __name__ == "__main__":
    sys.stdout.write(dump(openapi_document()))
