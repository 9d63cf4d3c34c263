"""C2SP tlog-checkpoint (c2sp.org/tlog-checkpoint): the signed head of a log.

Body: ``<origin>\\n<decimal size>\\n<base64 root>\\n`` then optional extension lines.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from .merkle import HASH_SIZE
from .untrusted import InputRejected, read_uint64


class CheckpointError(ValueError):
    """The checkpoint body is malformed."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        """The note text this checkpoint is signed as."""
        root = base64.b64encode(self.root).decode()
        lines = [self.origin, str(self.size), root, *self.extensions]
        return "\n".join(lines) + "\n"


def format_checkpoint(origin: str, size: int, root: bytes) -> str:
    return Checkpoint(origin, size, root).text()


def parse_checkpoint(text: str) -> Checkpoint:
    """Parses a checkpoint body (the note's text, not the signatures)."""
    if not text.endswith("\n"):
        raise CheckpointError("checkpoint must end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("checkpoint needs origin, size and root lines")
    origin, size_s, root_s, *ext = lines
    if not origin:
        raise CheckpointError("checkpoint origin is empty")
    try:
        size = read_uint64(size_s)
    except InputRejected as e:
        raise CheckpointError(f"checkpoint size: {e}") from None
    try:
        root = base64.b64decode(root_s, validate=True)
    except ValueError as e:  # binascii.Error, or a plain ValueError for non-ASCII text
        raise CheckpointError("checkpoint root is not base64") from e
    if len(root) != HASH_SIZE:
        raise CheckpointError("checkpoint root is not a SHA-256 hash")
    if any(not line for line in ext):
        raise CheckpointError("checkpoint has an empty extension line")
    return Checkpoint(origin, size, root, tuple(ext))
