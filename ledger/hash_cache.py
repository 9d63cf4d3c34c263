"""Stored hashes kept in memory between proofs.

A stored hash never changes once written: it is the hash of a complete subtree of an
append-only tree (RFC 6962 section 2.1), so a copy held in memory is never stale and needs no
invalidation. Only hashes read from committed rows may be put here, never those of a write
transaction that could still roll back.

The cache is bounded and approximates least-recently-used eviction with two generations:
new and recently used hashes go to the young one; when it is full it becomes the old one
and the previous old one is dropped; a hash found in the old generation moves back to the
young one. A hit in the young generation, which is every hit once a working set (the top of
the tree, above all) has settled, is one dictionary lookup and no bookkeeping.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from .merkle import Hash

DEFAULT_MAX_HASHES = 1 << 17  # about 25 MB of Python objects


class HashCache:
    def __init__(self, max_hashes: int = DEFAULT_MAX_HASHES) -> None:
        if max_hashes < 2:
            raise ValueError("a hash cache holds at least 2 hashes (two generations)")
        self.max_hashes = max_hashes
        self._generation = max_hashes // 2
        self._young: dict[int, Hash] = {}
        self._old: dict[int, Hash] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def read(
        self, indexes: Sequence[int], read_missing: Callable[[list[int]], list[Hash]]
    ) -> list[Hash]:
        """The hashes at `indexes`, in order; those not held are fetched with `read_missing`
        (given the missing indexes, it returns their hashes in that order) and kept.

        A read of at most max_hashes // 2 distinct indexes leaves all of them held: every
        lookup happens before anything is added, and adding them rotates the generations
        at most once.
        """
        # Lookups need no lock: a dict lookup is atomic, and a generation that is rotated
        # away meanwhile still holds correct hashes.
        young = self._young
        found = [young.get(i) for i in indexes]
        if all(found):
            return found  # type: ignore[return-value]  # a stored hash is never empty
        old = self._old
        keep: dict[int, Hash] = {}
        missing: list[int] = []
        for k, i in enumerate(indexes):
            if found[k] is None:
                h = old.get(i)
                if h is None:
                    missing.append(i)
                else:
                    found[k] = keep[i] = h
        if missing:
            unique = list(dict.fromkeys(missing))
            fetched = dict(zip(unique, read_missing(unique), strict=True))
            keep.update(fetched)
            found = [fetched[i] if h is None else h for i, h in zip(indexes, found, strict=True)]
        self.keep(keep)
        return found  # type: ignore[return-value]

    def keep(self, hashes: dict[int, Hash]) -> None:
        """Holds committed stored hashes (index: hash)."""
        with self._lock:
            for i, h in hashes.items():
                if len(self._young) >= self._generation:
                    self._old, self._young = self._young, {}
                self._young[i] = h


DEFAULT_MAX_EDGES = 1 << 12  # tree sizes; about 4 MB at 10^6 leaves


class RightEdgeCache:
    """merkle.right_edge of recent tree sizes, for proofs against them.

    The right edge of a size is as immutable as a stored hash once that size is committed,
    so the same rule holds: only edges of committed sizes go in. Proofs against one size
    (the latest checkpoint's, above all) share one edge. Two generations, as above.
    """

    def __init__(self, max_sizes: int = DEFAULT_MAX_EDGES) -> None:
        if max_sizes < 2:
            raise ValueError("a right-edge cache holds at least 2 sizes (two generations)")
        self._generation = max_sizes // 2
        self._young: dict[int, list[Hash]] = {}
        self._old: dict[int, list[Hash]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def get(self, size: int) -> list[Hash] | None:
        """The right edge of `size`, when held."""
        edge = self._young.get(size)
        if edge is None:
            edge = self._old.get(size)
            if edge is not None:
                self.put(size, edge)
        return edge

    def put(self, size: int, edge: list[Hash]) -> None:
        """Keeps the right edge of a committed size."""
        with self._lock:
            if len(self._young) >= self._generation:
                self._old, self._young = self._young, {}
            self._young[size] = edge
