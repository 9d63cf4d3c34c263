"""Proofs, roots and entries of a tree of known size and root, from its tiles alone.

TileReader(size, root, fetch) reads any Merkle tree hash of the tree through
`fetch(path) -> bytes` and authenticates every tile it uses before trusting a hash in it, as
golang.org/x/mod/sumdb/tlog's TileHashReader does: the partial tiles of the tree's right edge
(one per level, and the top level is always partial) must fold to the signed root, and a full
tile must hash to the hash its parent tile holds for it. Proofs and entries read through it
are then those of the signed tree; a server that serves a wrong tile makes the read fail
(TileMismatch, a TileError naming the tile), never succeed with a wrong answer. A tile of the
wrong length, or an entry bundle that does not parse, is a plain TileError.

The proofs are merkle.inclusion_proof and merkle.consistency_proof over the tile hashes: the
same plans the store uses, reading from tiles instead of rows. Standard library only.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence

from .. import merkle
from ..merkle import HASH_SIZE, Hash, fold_frontier, split_stored_hash_index
from .layout import ENTRIES, TILE_HEIGHT, Tile, TileError, parse_bundle, tile_for


class TileMismatch(TileError):
    """A tile (or the entries of a bundle) well formed but not of the signed tree: `tiles`
    are the ones that failed (a full tile against its parent's hash, or the partial tiles of
    the right edge against the root), `entry` the entry of a bundle that does not hash to its
    authenticated leaf."""

    def __init__(self, message: str, tiles: tuple[Tile, ...], entry: int | None = None) -> None:
        super().__init__(message)
        self.tiles = tiles
        self.entry = entry


Fetch = Callable[[str], bytes]
"""fetch(path): the bytes at a tile path (``tile/...``); raises what it raises when absent."""


Levels = list[bytes]
"""A tile's hashes (level 0) and those of the complete subtrees among them, level by level,
each level one string of 32-byte hashes: levels[s][32j : 32j + 32] is the hash of the tile's
hashes [j * 2^s, (j+1) * 2^s)."""

_sha256 = hashlib.sha256


def _levels(data: bytes) -> Levels:
    levels = [data]
    while len(levels[-1]) > HASH_SIZE:
        cur = levels[-1]
        levels.append(
            b"".join(
                _sha256(b"\x01" + cur[i : i + 2 * HASH_SIZE]).digest()
                for i in range(0, len(cur) - 2 * HASH_SIZE + 1, 2 * HASH_SIZE)
            )
        )
    return levels


def _at(level: bytes, j: int) -> Hash:
    return level[j * HASH_SIZE : (j + 1) * HASH_SIZE]


class TileReader:
    """The tree of `size` leaves with `root` (from a verified checkpoint), read from tiles.

    Keeps up to `cache_tiles` authenticated full tiles, with the hashes of the subtrees
    inside them (16 KiB a tile: 4,096 tiles, 64 MiB, cover 2^20 leaves; the oldest out
    first), and the partial ones. Safe for use from several threads.
    """

    def __init__(self, size: int, root: Hash, fetch: Fetch, *, cache_tiles: int = 4096) -> None:
        self.size = size
        self.root = root
        self.fetch = fetch
        self._cache: dict[tuple[int, int], Levels] = {}  # (level, index): full tiles
        self._cache_tiles = max(cache_tiles, 1)
        self._lock = threading.Lock()
        self._edge: dict[tuple[int, int], Levels] | None = None  # partial tiles, once checked

    # --- tiles -----------------------------------------------------------------------------

    def _levels_of(self, level: int, index: int) -> Levels:
        """The authenticated levels of tile `index` at `level` (a dict lookup once read)."""
        key = (level, index)
        got = self._cache.get(key)
        if got is not None:
            return got
        edge = self._check_edge()
        if key in edge:
            return edge[key]
        tile = tile_for(level, index, self.size)
        if not tile.full:  # a partial tile the tree has is on its edge
            raise TileError(f"{tile.path()} is not on the edge of size {self.size}")
        levels = _levels(self._fetch(tile))
        parent = self._levels_of(level + 1, index >> TILE_HEIGHT)
        if levels[-1] != _at(parent[0], index & 0xFF):
            raise TileMismatch(f"{tile.path()} does not hash to its parent tile's hash", (tile,))
        with self._lock:
            self._cache[key] = levels
            while len(self._cache) > self._cache_tiles:
                del self._cache[next(iter(self._cache))]
        return levels

    def _check_edge(self) -> dict[tuple[int, int], Levels]:
        """The partial tile of every level, fetched once and checked to fold to the root
        (kept apart from the cache: proofs near the end of the tree all read them)."""
        if self._edge is not None:
            return self._edge
        frontier: list[Hash] = []
        edge: dict[tuple[int, int], Levels] = {}
        read: list[Tile] = []
        top = 0
        while self.size >> (top * TILE_HEIGHT):
            top += 1
        for lvl in range(top - 1, -1, -1):  # top level first: the frontier's order
            n = self.size >> (lvl * TILE_HEIGHT)
            if not n & 0xFF:
                continue
            t = tile_for(lvl, n >> TILE_HEIGHT, self.size)
            read.append(t)
            levels = edge[lvl, t.index] = _levels(self._fetch(t))
            pos = 0  # the tile's width in binary: its maximal complete subtrees, left first
            for bit in range(TILE_HEIGHT - 1, -1, -1):
                if t.width >> bit & 1:
                    frontier.append(_at(levels[bit], pos >> bit))
                    pos += 1 << bit
        if fold_frontier(frontier) != self.root:
            paths = ", ".join(t.path() for t in read)
            raise TileMismatch(
                f"the partial tiles of size {self.size} ({paths}) do not fold to its root",
                tuple(read),
            )
        self._edge = edge
        return edge

    def _fetch(self, tile: Tile) -> bytes:
        data = self.fetch(tile.path())
        if len(data) != tile.width * HASH_SIZE:
            raise TileError(f"{tile.path()} is {len(data):,} bytes, not {tile.width * HASH_SIZE:,}")
        return data

    def tile_hashes(self, level: int, index: int) -> list[Hash]:
        """The authenticated hashes of tile `index` at `level`, as the tree has it."""
        data = self._levels_of(level, index)[0]
        return [_at(data, j) for j in range(len(data) // HASH_SIZE)]

    # --- hashes and proofs ---------------------------------------------------------------

    def hash_at(self, height: int, n: int) -> Hash:
        """The hash of the n-th complete subtree of `height` (it must lie within the tree)."""
        if (n + 1) << height > self.size:
            raise TileError(f"no complete subtree {n} of height {height} in size {self.size}")
        level, sub = divmod(height, TILE_HEIGHT)
        lo = n << sub  # the first of the tile-level hashes this subtree covers
        return _at(self._levels_of(level, lo >> TILE_HEIGHT)[sub], (lo & 0xFF) >> sub)

    def read_hashes(self, indexes: Sequence[int]) -> list[Hash]:
        """merkle.HashReader over the tiles: the hashes at stored-hash indexes."""
        return [self.hash_at(*split_stored_hash_index(i)) for i in indexes]

    def tree_root(self) -> Hash:
        """The root recomputed from tiles (equal to `root`, or a TileError was raised)."""
        return merkle.tree_hash(self.size, self.read_hashes)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[Hash]:
        """RFC 6962 PATH(index, D[0:size]) for size <= the reader's (default: its size)."""
        return merkle.inclusion_proof(index, self._size(size), self.read_hashes)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[Hash]:
        """RFC 6962 PROOF(size1, D[0:size2]) for size2 <= the reader's (default: its size)."""
        return merkle.consistency_proof(size1, self._size(size2), self.read_hashes)

    def _size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 < size <= self.size:
            raise merkle.ProofError(f"size {size} is not within the tree of size {self.size}")
        return size

    # --- entries ---------------------------------------------------------------------------

    def entries(self, bundle: int) -> list[bytes]:
        """The entries of bundle `bundle` (entries 256*bundle on), each checked against its
        leaf hash in the authenticated level-0 tile."""
        t = tile_for(ENTRIES, bundle, self.size)
        got = parse_bundle(self.fetch(t.path()), t)
        leaves = self.tile_hashes(0, bundle)
        for i, (e, leaf) in enumerate(zip(got, leaves, strict=True)):
            if merkle.leaf_hash(e) != leaf:
                raise TileMismatch(
                    f"{t.path()}: entry {t.start + i} does not hash to its leaf", (t,), t.start + i
                )
        return got
