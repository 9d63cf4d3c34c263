"""Stored hashes kept in memory between proofs.

A stored hash never changes once written: it is the hash of a complete subtree of an
append-only tree (RFC 6962 section 2.1), so a copy held in memory is never stale and needs no
invalidation. Only hashes read from committed rows may be put here, never those of a write
transaction that could still roll back. The cache is bounded; the least recently used
hashes leave first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

from .merkle import Hash

DEFAULT_MAX_HASHES = 1 << 17  # about 25 MB of Python objects


class HashCache:
    def __init__(self, max_hashes: int = DEFAULT_MAX_HASHES) -> None:
        self.max_hashes = max_hashes
        self._hashes: OrderedDict[int, Hash] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._hashes)

    def read(
        self, indexes: Sequence[int], read_missing: Callable[[list[int]], list[Hash]]
    ) -> list[Hash]:
        """The hashes at `indexes`, in order; those not held are fetched with `read_missing`
        (given the missing indexes, it returns their hashes in that order) and kept."""
        with self._lock:
            held = self._hashes
            found = [held.get(i) for i in indexes]
            for i, h in zip(indexes, found, strict=True):
                if h is not None:
                    held.move_to_end(i)  # the top of the tree, in every proof, stays
        missing = list(dict.fromkeys(i for i, h in zip(indexes, found, strict=True) if h is None))
        if not missing:
            return found  # type: ignore[return-value]  # no None left
        fetched = dict(zip(missing, read_missing(missing), strict=True))
        with self._lock:
            held = self._hashes
            held.update(fetched)
            while len(held) > self.max_hashes:
                held.popitem(last=False)
        return [fetched[i] if h is None else h for i, h in zip(indexes, found, strict=True)]
