"""The linear check: one pass over a log's entries that re-derives every leaf, the hash chain,
the RFC 6962 tree and its root at every signed checkpoint, and the stored interior hashes.

Entries are read a page at a time and checked an aligned block at a time: a block whose bytes
all match the canonical entry pattern, chain on and hash as stored is taken whole; at the first
doubt the block is re-checked entry by entry (parse_entry, the chain, append_leaf), which names
the first bad entry and tells an altered entry from an inserted, missing or moved one by what
its neighbours and the signed roots commit to. Memory is O(page + log n): the tree is kept as
its frontier. A stored checkpoint whose root the entries contradict while their chain runs on
is held as a suspect; a later checkpoint that matches the entries proves it false (`proven`),
which the driver turns into evidence.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from .. import merkle
from ..checkpoint import Checkpoint
from ..encoding import b64
from ..entry import EntryError, parse_entry
from ..merkle import (
    Hash,
    complete_subtrees,
    fold_frontier,
    leaf_hash,
    leaf_hashes,
    node_hash,
    postorder_levels,
    stored_hash_index,
    subtree_levels,
)
from ..note import Verifier
from .checkpoints import CheckpointRejected, open_checkpoint
from .errors import AuditError
from .source import LogSource

_b2a = binascii.b2a_base64

_H = rb"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]="  # canonical base64 of 32 bytes
_ENTRY = re.compile(
    rb'\{"commit":"' + _H + rb'","index":(0|[1-9][0-9]{0,15}),"kind":"[a-z][a-z0-9-]{0,31}"'
    rb',"media":"[a-z]+/[a-z0-9.+\-]{1,64}","prev":"(' + _H + rb'|)"'
    rb',"sender":"[A-Za-z0-9\-.]{1,64}"(?:,"subject":"' + _H + rb'")?'
    rb',"time":"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z","v":1\}'
)
"""Canonical version-1 entries (docs/ledger-format.md). Every match also passes
entry.parse_entry; what does not match is handed to parse_entry for the exact verdict."""
_match_entry = _ENTRY.fullmatch
_ENTRY_LINES = re.compile(b"(?m)^" + _ENTRY.pattern + b"$")
"""The same, for entries joined by newlines (which no well-formed entry contains)."""


def _prev_field(data: bytes | None) -> bytes | None:
    """The `prev` of well-formed entry bytes, or None."""
    if data is None:
        return None
    m = _match_entry(data)
    if m is not None:
        return binascii.a2b_base64(m[2])
    try:
        return parse_entry(data).prev
    except EntryError:
        return None


# --- the stream ----------------------------------------------------------------------------


@dataclass
class _Suspect:
    """A validly signed stored checkpoint whose root differs from the entries' while the hash
    chain runs on intact: either the log signed a false checkpoint, or the entries were forged.
    A later checkpoint that matches the entries decides for the first."""

    size: int
    note: str
    cp: Checkpoint
    root: Hash


class Stream:
    """One pass over the entries [start, target.size) of a source. Raises AuditError."""

    def __init__(
        self,
        source: LogSource,
        keys: tuple[Verifier, ...],
        target: Checkpoint,
        *,
        check_stored: bool,
        progress: Callable[[int, int], None] | None,
        stops: Iterable[int] = (),
    ) -> None:
        self.source = source
        self.keys = keys
        self.target = target
        self.check_stored = check_stored
        self.progress = progress
        self.page_size = max(1, int(getattr(source, "page_size", 1000)))
        self.stops = set(stops)
        self.roots_at: dict[int, Hash] = {}
        self.pos = 0
        self.start = 0
        self.frontier: list[Hash] = []
        self.frontier_prev: list[Hash] | None = None  # frontier before the last entry
        self.prev = b""
        self.vouched = 0  # entries below this are bound by a matching signed root
        self.suspect: _Suspect | None = None
        self.proven: tuple[_Suspect, int, str, Checkpoint] | None = None
        self.entries_checked = self.checkpoints_checked = self.hashes_checked = 0
        self._page: list[bytes] = []
        self._page_start = 0
        self._stored_base = 0

    def start_at(self, size: int, frontier: Sequence[Hash], prev: Hash) -> None:
        self.pos = self.start = self.vouched = size
        self.frontier = list(frontier)
        self.prev = prev

    # -- driving

    def run(self) -> None:
        b = self.target.size
        if self.pos == 0:
            for s, note in self.source.checkpoints(0, 0) or ():
                self._checkpoint(s, note)
        if self.pos in self.stops:
            self.roots_at[self.pos] = fold_frontier(self.frontier)
        while self.pos < b and self.proven is None:
            start = self.pos
            page = list(self.source.entries(start, min(start + self.page_size, b)))[: b - start]
            if not page:
                self._fail(
                    AuditError(
                        f"the source has no entry {start}, though the signed checkpoint has "
                        f"size {b}",
                        start,
                        "missing-entry",
                    )
                )
            end = start + len(page)
            cps = dict(self.source.checkpoints(start + 1, end) or ())
            stored = self._stored(start, end) if self.check_stored else None
            self._page, self._page_start = page, start
            cuts = sorted({s for s in (*cps, *self.stops) if start < s <= end} | {end})
            x = start
            for y in cuts:
                self._segment(x, y, stored)
                if y in self.stops:
                    self.roots_at[y] = fold_frontier(self.frontier)
                if y in cps and self._checkpoint(y, cps[y]):
                    return  # it proved the suspect checkpoint false: evidence, not a failure
                x = y
            if self.progress is not None:
                self.progress(self.pos, b)
        if self.proven is not None:
            return
        if fold_frontier(self.frontier) != self.target.root:
            self._root_anomaly(b, self.target, final=True)
        elif self.suspect is not None:
            self.proven = (self.suspect, b, "", self.target)
            return
        else:
            self.vouched = b
        self._check_beyond(b)

    def _stored(self, start: int, end: int) -> list[Hash | None] | None:
        lo, hi = stored_hash_index(0, start), stored_hash_index(0, end)
        rows = self.source.stored_hashes(lo, hi)
        if rows is None:
            self.check_stored = False
            return None
        self._stored_base = lo
        if len(rows) == hi - lo and rows and rows[0][0] == lo and rows[-1][0] == hi - 1:
            return [h for _, h in rows]  # sorted unique indexes spanning the range: contiguous
        out: list[Hash | None] = [None] * (hi - lo)
        for i, h in rows:
            if lo <= i < hi:
                out[i - lo] = h
        return out

    def _segment(self, x: int, y: int, stored: list[Hash | None] | None) -> None:
        for u, height in complete_subtrees(x, y):
            if not self._fast(u, height, stored):
                self._slow(u, y, stored)
                return

    def _fast(self, u: int, height: int, stored: list[Hash | None] | None) -> bool:
        """Checks an aligned block in bulk; False (and nothing changed) on any doubt."""
        n = 1 << height
        i0 = u - self._page_start
        blk = self._page[i0 : i0 + n]
        joined = b"\n".join(blk)
        if joined.count(b"\n") != n - 1:
            return False
        groups = _ENTRY_LINES.findall(joined)  # one match per line, each the whole line
        if len(groups) != n:
            return False
        idx, prevs = zip(*groups, strict=True)
        if list(map(int, idx)) != list(range(u, u + n)):
            return False
        leaves = leaf_hashes(blk)
        if list(prevs) != [_b2a(h, newline=False) for h in (self.prev, *leaves[:-1])]:
            return False
        levels = subtree_levels(leaves)
        f = self.frontier[:]
        h = levels[-1][0]
        merged = []
        k = u >> height
        while k & 1:
            h = node_hash(f.pop(), h)
            merged.append(h)
            k >>= 1
        f.append(h)
        if stored is not None:
            off = stored_hash_index(0, u) - self._stored_base
            rows = stored[off : off + 2 * n - 1 + len(merged)]
            if len(rows) != 2 * n - 1 + len(merged) or rows[2 * n - 1 :] != merged:
                return False
            for level, get in enumerate(postorder_levels(height)):
                if get(rows) != tuple(levels[level]):
                    return False
            self.hashes_checked += len(rows)
        self.frontier_prev = self.frontier + [
            levels[k][(1 << (height - k)) - 2] for k in range(height - 1, -1, -1)
        ]
        self.frontier, self.prev, self.pos = f, leaves[-1], u + n
        self.entries_checked += n
        return True

    def _slow(self, x: int, y: int, stored: list[Hash | None] | None) -> None:
        """Checks entries one by one and names the first bad one exactly."""
        for p in range(x, y):
            data = self._page[p - self._page_start]
            try:
                e = parse_entry(data)
            except EntryError as err:
                self._fail(AuditError(f"malformed entry: {err}", p, "malformed-entry"))
            if e.index != p:
                self._index_anomaly(p, e.index, data)
            if e.prev != self.prev:
                self._chain_anomaly(p, e.prev, data)
            leaf = leaf_hash(data)
            new, f = merkle.append_leaf(self.frontier, p, leaf)
            if stored is not None:
                for i, h in new:
                    j = i - self._stored_base
                    have = stored[j] if 0 <= j < len(stored) else None
                    if have != h:
                        self._stored_anomaly(p, leaf, i, h, have)
                self.hashes_checked += len(new)
            self.frontier_prev, self.frontier, self.prev, self.pos = self.frontier, f, leaf, p + 1
            self.entries_checked += 1

    # -- checkpoints

    def _checkpoint(self, y: int, note: str) -> bool:
        """Checks the stored checkpoint of size y against the entries so far; True when it
        vouches for entries that the suspect, an earlier checkpoint, contradicts."""
        self.checkpoints_checked += 1
        i = max(y - 1, 0)
        try:
            cp = open_checkpoint(note, self.keys)
        except CheckpointRejected as e:
            self._fail(
                AuditError(
                    f"the checkpoint stored for size {y} is not valid: {e}",
                    i,
                    "checkpoint",
                    checkpoint=y,
                )
            )
        if cp.size != y:
            self._fail(
                AuditError(
                    f"the checkpoint stored for size {y} is signed for size {cp.size}",
                    i,
                    "checkpoint",
                    checkpoint=y,
                )
            )
        if cp.origin != self.target.origin:
            self._fail(
                AuditError(
                    f"the checkpoint stored for size {y} is of log {cp.origin!r}",
                    i,
                    "checkpoint",
                    checkpoint=y,
                )
            )
        if cp.root == fold_frontier(self.frontier):
            self.vouched = y
            if self.suspect is not None:
                self.proven = (self.suspect, y, note, cp)
                return True
            return False
        self._root_anomaly(y, cp, note=note)
        return False

    def _check_beyond(self, b: int) -> None:
        entry, cp = self.source.beyond(b)
        if entry is not None:
            self._fail(
                AuditError(
                    f"the store holds entry {entry} beyond the signed checkpoint of size {b}",
                    entry,
                    "extra-entry",
                )
            )
        if cp is not None:
            self._fail(
                AuditError(
                    f"the store keeps a checkpoint of size {cp}, beyond the latest one it hands "
                    f"out (size {b}): the head was rolled back or altered",
                    b,
                    "extra-entry",
                    checkpoint=cp,
                )
            )

    # -- naming the first bad entry

    def _fail(self, err: AuditError) -> NoReturn:
        """Raises `err`, or the earlier unresolved checkpoint mismatch if there is one."""
        s = self.suspect
        if s is not None and (err.index is None or s.size - 1 < err.index):
            raise AuditError(
                f"the root of entries 0..{s.size - 1} differs from the signed checkpoint of "
                f"size {s.size}, and no later checkpoint vouches for those entries",
                s.size - 1,
                "root",
                checkpoint=s.size,
            ) from err
        raise err

    def _peek(self, i: int) -> bytes | None:
        """Entry bytes at position i (< target size), from the page or the source."""
        j = i - self._page_start
        if 0 <= j < len(self._page):
            return self._page[j]
        if not 0 <= i < self.target.size:
            return None
        got = self.source.entries(i, i + 1)
        return got[0] if got else None

    def _index_anomaly(self, p: int, q: int, data: bytes) -> None:
        if q > p:
            self._fail(
                AuditError(
                    f"entry {p} is missing: the entry stored at position {p} is entry {q} "
                    f"(entries {p}..{q - 1} are missing or out of order)",
                    p,
                    "missing-entry",
                )
            )
        if self._peek(q) == data:
            self._fail(AuditError(f"entry {p} is a second copy of entry {q}", p, "inserted-entry"))
        if q == p - 1 and _prev_field(self._peek(p + 1)) == leaf_hash(data):
            self._fail(
                AuditError(
                    f"the entry stored at {q} was inserted: the one stored at {p} is the signed "
                    f"entry {q}, and entry {q + 1} (stored at {p + 1}) chains to it",
                    q,
                    "inserted-entry",
                )
            )
        self._fail(
            AuditError(
                f"the entry stored at position {p} says index {q}, which position {q} already "
                "holds: an entry was inserted or moved",
                p,
                "inserted-entry",
            )
        )

    def _chain_anomaly(self, p: int, prev: bytes, data: bytes) -> None:
        named, actual = b64(prev) or "nothing", b64(self.prev)
        wrong_prev = AuditError(
            f"hash chain broken: entry {p}'s prev names {named}, but entry {p - 1} hashes to "
            f"{actual}",
            p,
            "chain",
        )
        altered = AuditError(
            f"entry {p - 1} was altered: its bytes hash to {actual}, but entry {p} (which "
            f"entry {p + 1} or the signed root confirms) names {named}",
            p - 1,
            "altered-entry",
        )
        if p - 1 < self.vouched:
            self._fail(wrong_prev)
        leaf = leaf_hash(data)
        nxt = self._peek(p + 1)
        if nxt is not None:
            self._fail(altered if _prev_field(nxt) == leaf else wrong_prev)
        if self.frontier_prev is not None and self.target.size == p + 1:
            _, f = merkle.append_leaf(self.frontier_prev, p - 1, prev)
            _, f = merkle.append_leaf(f, p, leaf)
            if fold_frontier(f) == self.target.root:
                self._fail(altered)
        self._fail(wrong_prev)

    def _stored_anomaly(
        self, p: int, leaf: Hash, index: int, want: Hash, have: Hash | None
    ) -> None:
        level = index - stored_hash_index(0, p)
        lo = p + 1 - (1 << level)
        if have is None:
            self._fail(
                AuditError(
                    f"the stored hash of entries {lo}..{p} (level {level}, stored index {index}) "
                    "is missing",
                    p,
                    "stored-hash",
                )
            )
        if level == 0:
            nxt = _prev_field(self._peek(p + 1))
            if nxt is None and self.target.size == p + 1:  # the last entry: ask the root
                for candidate in (have, leaf):
                    _, f = merkle.append_leaf(self.frontier, p, candidate)
                    if fold_frontier(f) == self.target.root:
                        nxt = candidate
            if nxt == have:
                self._fail(
                    AuditError(
                        f"entry {p} was altered: its bytes hash to {b64(leaf)}, but its stored "
                        f"leaf hash and the rest of the log name {b64(have)}",
                        p,
                        "altered-entry",
                    )
                )
            if nxt != leaf:
                self._fail(
                    AuditError(
                        f"entry {p} does not match its stored leaf hash: its bytes hash to "
                        f"{b64(leaf)}, the store says {b64(have)}, and entry {p + 1} confirms "
                        f"neither: entry {p} or its neighbours were altered",
                        p,
                        "altered-entry",
                    )
                )
        self._fail(
            AuditError(
                f"the stored hash of entries {lo}..{p} (level {level}, stored index {index}) is "
                f"{b64(have)}, but the entries hash to {b64(want)}",
                p,
                "stored-hash",
            )
        )

    def _root_anomaly(self, y: int, cp: Checkpoint, *, note: str = "", final: bool = False) -> None:
        i = max(y - 1, 0)
        mismatch = AuditError(
            f"the root of entries 0..{i} differs from the signed checkpoint of size {y}; "
            f"entry {i} is the last one it covers",
            i,
            "root",
            checkpoint=y,
        )
        nxt = self._peek(y) if y > 0 and not final else None
        if nxt is not None and self.frontier_prev is not None:
            named = _prev_field(nxt)
            if named is not None and named != self.prev:
                _, f = merkle.append_leaf(self.frontier_prev, y - 1, named)
                if fold_frontier(f) == cp.root:
                    self._fail(
                        AuditError(
                            f"entry {y - 1} was altered: its bytes hash to {b64(self.prev)}, "
                            f"but the checkpoint of size {y} and entry {y}'s prev both commit "
                            f"to {b64(named)}",
                            y - 1,
                            "altered-entry",
                        )
                    )
            elif named == self.prev:
                # The chain runs on: the checkpoint or a longer run of entries is false.
                if self.suspect is None:
                    self.suspect = _Suspect(y, note, cp, fold_frontier(self.frontier))
                return
        self._fail(mismatch)
