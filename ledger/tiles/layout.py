"""Where tiles are and what they hold (c2sp.org/tlog-tiles): coordinates, paths, contents.

A tile is 256 consecutive Merkle tree hashes at one height: at tile level L its hashes are
those of the complete subtrees of 256^L leaves, so tile (L, N) holds, for i in 0..255,

    MTH(D[(N*256 + i) * 256^L : (N*256 + i + 1) * 256^L])

the hash of height 8L and index N*256 + i: stored_hash_index(8*L, N*256 + i) in the store.
A tree of size s has, at level L, floor(s / 256^(L+1)) full tiles and, when
w = floor(s / 256^L) mod 256 is not 0, one partial tile of width w. Entry bundles (level
ENTRIES here) hold the entries of level 0's tiles, each as a big-endian uint16 length and the
entry's bytes. Paths:

    tile/<L>/<N>[.p/<W>]        tile/entries/<N>[.p/<W>]

<N> in 3-digit groups, all but the last prefixed with ``x`` (1234067 is ``x001/x234/067``);
``.p/<W>`` only for partial tiles. A full tile is 8,192 bytes. Standard library only.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..merkle import HASH_SIZE, Hash, stored_hash_index

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
ENTRIES = -1
"""The level of entry bundles, beside hash tiles 0..63."""
MAX_LEVEL = 63
MAX_ENTRY_BYTES = 0xFFFF

_PATH = re.compile(
    r"tile/(?P<level>0|[1-9][0-9]?|entries)/(?P<n>(?:x[0-9]{3}/)*[0-9]{3})"
    r"(?:\.p/(?P<w>[1-9][0-9]{0,2}))?"
)


class TileError(ValueError):
    """A tile path, tile or entry bundle is malformed, or not part of the tree."""


@dataclass(frozen=True, order=True)
class Tile:
    """Tile `index` of `level` (ENTRIES for an entry bundle), `width` hashes or entries wide."""

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not ENTRIES <= self.level <= MAX_LEVEL:
            raise TileError(f"tile level {self.level} is outside 0..63")
        if self.index < 0 or not 1 <= self.width <= TILE_WIDTH:
            raise TileError(f"tile index {self.index} or width {self.width} is out of range")

    @property
    def full(self) -> bool:
        return self.width == TILE_WIDTH

    @property
    def height(self) -> int:
        """The Merkle tree height of this tile's hashes (level 0 and bundles: the leaves)."""
        return max(self.level, 0) * TILE_HEIGHT

    @property
    def start(self) -> int:
        """The first of the hashes (of height `height`) this tile holds."""
        return self.index * TILE_WIDTH

    def path(self) -> str:
        level = "entries" if self.level == ENTRIES else str(self.level)
        suffix = "" if self.full else f".p/{self.width}"
        return f"tile/{level}/{encode_index(self.index)}{suffix}"

    def full_path(self) -> str:
        """The path of the full tile this one is (or becomes once 256 wide)."""
        return Tile(self.level, self.index).path()

    def stored_indexes(self) -> list[int]:
        """The stored-hash indexes (ledger/merkle.py) of a hash tile's hashes, in order."""
        if self.level == ENTRIES:
            raise TileError("an entry bundle holds entries, not hashes")
        return [stored_hash_index(self.height, self.start + i) for i in range(self.width)]


def encode_index(n: int) -> str:
    """The path form of a tile index: 3-digit groups, all but the last prefixed with x."""
    if n < 0:
        raise TileError(f"tile index {n} is negative")
    out = f"{n % 1000:03d}"
    n //= 1000
    while n:
        out = f"x{n % 1000:03d}/{out}"
        n //= 1000
    return out


def parse_path(path: str) -> Tile:
    """The tile (or entry bundle) at `path` (``tile/...``, no leading slash); TileError when
    the path is not one the spec writes (leading zero groups, level above 63, width 256)."""
    m = _PATH.fullmatch(path)
    if m is None:
        raise TileError(f"not a tile path: {path[:80]!r}")
    groups = m.group("n").replace("x", "").split("/")
    if len(groups) > 1 and groups[0] == "000":
        raise TileError(f"tile index with a leading zero group: {path[:80]!r}")
    level = ENTRIES if m.group("level") == "entries" else int(m.group("level"))
    width = TILE_WIDTH
    if m.group("w"):
        width = int(m.group("w"))
        if width >= TILE_WIDTH:
            raise TileError(f"partial tile width {width} is not below {TILE_WIDTH}")
    return Tile(level, int("".join(groups)), width)


def tile_count(size: int, level: int) -> tuple[int, int]:
    """(full tiles, partial tile width or 0) at `level` (ENTRIES as 0) of a tree of `size`."""
    n = size >> (max(level, 0) * TILE_HEIGHT)
    return n >> TILE_HEIGHT, n & (TILE_WIDTH - 1)


def tile_for(level: int, index: int, size: int) -> Tile:
    """Tile `index` of `level` as a tree of `size` has it: full, or the partial one."""
    full, partial = tile_count(size, level)
    if index < full:
        return Tile(level, index)
    if index == full and partial:
        return Tile(level, index, partial)
    raise TileError(f"a tree of size {size} has no tile {index} at level {level}")


def tiles(size: int) -> Iterator[Tile]:
    """Every hash tile and entry bundle of a tree of `size`: level by level, bundles last."""
    level = 0
    while size >> (level * TILE_HEIGHT):
        yield from _level(size, level)
        level += 1
    yield from _level(size, ENTRIES)


def _level(size: int, level: int) -> Iterator[Tile]:
    full, partial = tile_count(size, level)
    for k in range(full):
        yield Tile(level, k)
    if partial:
        yield Tile(level, full, partial)


def split_tile(data: bytes, tile: Tile) -> list[Hash]:
    """The hashes of a hash tile's bytes, which must be exactly width * 32 of them."""
    if len(data) != tile.width * HASH_SIZE:
        raise TileError(f"{tile.path()} is {len(data):,} bytes, not {tile.width * HASH_SIZE:,}")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def format_bundle(entries: Sequence[bytes]) -> bytes:
    """An entry bundle: each entry as a big-endian uint16 length and its bytes."""
    out = bytearray()
    for e in entries:
        if len(e) > MAX_ENTRY_BYTES:
            raise TileError(f"an entry of {len(e):,} bytes does not fit a uint16 length")
        out += struct.pack(">H", len(e)) + e
    return bytes(out)


def parse_bundle(data: bytes, tile: Tile) -> list[bytes]:
    """The entries of an entry bundle, which must hold exactly tile.width of them."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise TileError(f"{tile.path()} ends inside a length prefix")
        (n,) = struct.unpack_from(">H", data, pos)
        if pos + 2 + n > len(data):
            raise TileError(f"{tile.path()} ends inside entry {len(out)}")
        out.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    if len(out) != tile.width:
        raise TileError(f"{tile.path()} holds {len(out)} entries, not {tile.width}")
    return out
