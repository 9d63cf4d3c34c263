"""C2SP tlog-checkpoint (c2sp.org/tlog-checkpoint): the signed head of a log.

Body: ``<origin>\\n<decimal size>\\n<base64 root>\\n`` then optional extension lines.
"""

from __future__ import annotations

from dataclasses import dataclass

from .encoding import b64
from .merkle import HASH_SIZE
from .untrusted import InputRejected, read_base64, read_uint64


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
        lines = [self.origin, str(self.size), b64(self.root), *self.extensions]
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
        root = read_base64(root_s, "root", size=HASH_SIZE)
    except InputRejected as e:
        raise CheckpointError(f"checkpoint {e}") from None
    if any(not line for line in ext):
        raise CheckpointError("checkpoint has an empty extension line")
    return Checkpoint(origin, size, root, tuple(ext))
