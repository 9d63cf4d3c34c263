"""A log's tiles from its store: served by path (LogTiles) or written to a directory (sync).

Hash tiles are the store's stored hashes (one query of 256 indexes a tile), entry bundles its
entries; neither is computed by hashing. Every tile path names immutable bytes: a full tile
never changes, and a partial tile's path carries its width, so the partial tile of a given
width never changes either.

sync(log, out_dir) writes the tree of the log's latest checkpoint under out_dir as a static
host serves it (``checkpoint``, ``tile/...``): each file that is not there yet, written
whole (a temporary file, fsynced, renamed into place), so a reader never sees half a tile; the
partial tiles of a tile that is now full are removed (the spec lets a log delete them once
the full tile exists; narrower partial tiles of a tile still partial stay, for clients that
hold an older checkpoint); the checkpoint last, after every tile it needs is durable. A
second run writes only what changed. A directory holding another log's tiles, or a tree the
log does not extend, is refused.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import CheckpointError, parse_checkpoint
from ..log import Log
from ..note import NoteError
from ..note import split as split_note
from .layout import ENTRIES, Tile, TileError, format_bundle, parse_path, tile_count, tiles

CHECKPOINT = "checkpoint"


class LogTiles:
    """The tile resources of a log, read from its store."""

    def __init__(self, log: Log) -> None:
        self.log = log

    def read(self, tile: Tile) -> bytes:
        """The bytes of `tile`, which the log's current tree must contain (TileError)."""
        size = self.log.size()
        full, partial = tile_count(size, tile.level)
        have = full * 256 + partial  # hashes (or entries) at this tile's level
        if tile.start + tile.width > have:
            raise TileError(f"{tile.path()} is beyond the log's tree of size {size}")
        if tile.level == ENTRIES:
            return format_bundle(self.log.entries(tile.start, tile.start + tile.width))
        return b"".join(self.log.stored_hashes(tile.stored_indexes()))

    def get(self, path: str) -> bytes | None:
        """The bytes at a tile path (``tile/...``), or None when there is no such tile."""
        try:
            return self.read(parse_path(path))
        except TileError:
            return None


@dataclass(frozen=True)
class SyncResult:
    """What a sync wrote (paths relative to the directory, the checkpoint last when it
    changed), how many tiles were already there, and what it removed."""

    size: int
    written: tuple[str, ...]
    unchanged: int
    removed: tuple[str, ...]


def sync(log: Log, out_dir: Path, note: str | None = None) -> SyncResult:
    """Writes the tiles of the log's latest checkpoint under `out_dir` (see module doc).

    With `note`, a checkpoint of this log given verbatim (a witnessed one keeps its
    cosignature lines, so readers of the tiles can require a quorum), its tree is written
    instead; TileError when it is not a checkpoint of the log's tree, or older than the one
    the directory holds.
    """
    if note is None:
        note = log.checkpoint()
    try:
        cp = parse_checkpoint(split_note(note)[0])
    except (NoteError, CheckpointError) as e:
        raise TileError(f"not a checkpoint: {e}") from e
    if cp.origin != log.origin or cp.size > log.size() or log.root(cp.size) != cp.root:
        raise TileError(f"the checkpoint of {cp.origin!r}, size {cp.size} is not of this log")
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_directory(log, out_dir / CHECKPOINT, cp.size)
    source = LogTiles(log)
    written: list[str] = []
    removed: list[str] = []
    unchanged = 0
    touched: set[Path] = set()
    for t in tiles(cp.size):
        path = out_dir / t.path()
        if path.exists():
            unchanged += 1
            continue
        _write(path, source.read(t), fsync_dir=False)
        written.append(t.path())
        touched.add(path.parent)
        if t.full:
            stale = out_dir / (t.path() + ".p")
            if stale.is_dir():
                removed += sorted(f"{t.path()}.p/{p.name}" for p in stale.iterdir())
                shutil.rmtree(stale)
                touched.add(stale.parent)
    for d in sorted(touched):  # every new tile's name is durable before the checkpoint's
        _fsync_dir(d)
    cp_path = out_dir / CHECKPOINT
    if not cp_path.exists() or cp_path.read_text(encoding="utf-8") != note:
        _write(cp_path, note.encode(), fsync_dir=True)
        written.append(CHECKPOINT)
    return SyncResult(cp.size, tuple(written), unchanged, tuple(removed))


def _check_directory(log: Log, cp_path: Path, size: int) -> None:
    """Refuses a directory whose checkpoint is of another log, or of a tree this log's does
    not extend (its tiles would be mixed with this log's), or larger than `size` (the
    directory's checkpoint never moves back)."""
    if not cp_path.exists():
        return
    try:
        old = parse_checkpoint(split_note(cp_path.read_text(encoding="utf-8"))[0])
    except (OSError, UnicodeDecodeError, NoteError, CheckpointError) as e:
        raise TileError(f"{cp_path} is not a checkpoint ({e}); sync into an empty directory") from e
    if old.origin != log.origin:
        raise TileError(f"{cp_path.parent} holds the tiles of {old.origin!r}, not {log.origin!r}")
    if old.size > log.size() or (old.size and log.root(old.size) != old.root):
        raise TileError(
            f"{cp_path.parent} holds a tree of size {old.size} that this log's does not extend"
        )
    if old.size > size:
        raise TileError(
            f"{cp_path.parent} holds a tree of size {old.size}, larger than the {size} asked for"
        )


def _write(path: Path, data: bytes, *, fsync_dir: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync_dir:
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
