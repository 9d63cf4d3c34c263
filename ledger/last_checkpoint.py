"""The log's last signed checkpoint, kept in a file outside the database.

A database restored from an old backup, or rolled back by hand, would let a log sign a
checkpoint that contradicts one it already gave out: the distrust event of several CT logs.
The log therefore writes every new checkpoint to a file beside its key and, on start, refuses
to append when the store's tree is smaller than, or not consistent with, that checkpoint.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def read_last_checkpoint(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def write_last_checkpoint(path: Path, note: str) -> None:
    """Replaces the file atomically and durably: temp file, fsync, rename, fsync directory."""
    # Unique per process and thread: two writers sharing a directory must not clobber one
    # another's half-written temp file before the atomic rename.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, note.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
