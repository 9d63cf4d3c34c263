"""Whole-log audits, evidence of log misbehaviour, and step-by-step proof explanations.

An audit reads every entry of a log from a LogSource and re-derives, trusting the source for
nothing: each entry's canonical form (docs/ledger-format.md), the hash chain (`prev`), the
RFC 6962 tree (section 2.1), its root at every signed checkpoint the source keeps and at the
latest one, and, when the source has them, the stored interior hashes the server builds its
proofs from. Given the state of an earlier audit (audit_state.py) it resumes there and proves
that the log only grew (RFC 9162 section 2.1.4). Two validly signed checkpoints that cannot
both be true become an Evidence file that anyone can re-check with the log's verifier key.

Exit-code classes: SourceUnavailable (2), SourceMalformed, StateError and MalformedInput (3),
AuditError (4), Evidence (5). Standard library and ``cryptography`` only; reading is the
source's job.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import NoReturn, Protocol

from . import merkle
from .audit_state import AuditState, StateError
from .checkpoint import Checkpoint, CheckpointError, parse_checkpoint
from .entry import EntryError, format_time, parse_entry
from .keyset import KeyRuleError, KeySet
from .merkle import Hash, ProofError, fold_frontier, leaf_hash, node_hash, stored_hash_index
from .note import NoteError, Verifier, open_note
from .untrusted import InputRejected, read_json
from .verify import MalformedInput, VerificationError

__all__ = [
    "AuditError",
    "AuditResult",
    "AuditUsageError",
    "Evidence",
    "EvidenceError",
    "EvidenceReport",
    "LogSource",
    "RootClaim",
    "SourceMalformed",
    "SourceUnavailable",
    "audit",
    "consistency_proof_by",
    "explain_consistency",
    "explain_inclusion",
    "frontier_from_inclusion",
    "open_checkpoint",
    "stored_hash_leaf",
    "verify_evidence",
]

_sha256 = hashlib.sha256
_b2a = binascii.b2a_base64


# --- errors --------------------------------------------------------------------------------


class SourceUnavailable(Exception):
    """The log could not be read: network, server or database down, an HTTP error status, or
    the run's deadline passed. Exit 2."""

    def __init__(self, message: str, hint: str = "check the address and retry later") -> None:
        super().__init__(message)
        self.hint = hint


class SourceMalformed(SourceUnavailable):
    """The source answered, but not as a log does: an answer over its size cap, not the API's
    strict JSON or of the wrong shape. Exit 3. A kind of SourceUnavailable (nothing usable was
    read), so whatever tolerates an unreadable source tolerates this one too."""


class AuditUsageError(ValueError):
    """The audit was asked for something impossible (e.g. --from beyond the log). Exit 1."""


_HINTS = {
    "malformed-entry": "the stored bytes of entry {i} are damaged: restore them from a backup "
    "or from the receipt the sender holds (its extra line is the signed entry), then audit again",
    "missing-entry": "entries are missing at {i}: restore them from a backup (a log never "
    "deletes entries); a server that withholds them should be reported to its operator",
    "inserted-entry": "an entry was added at {i} that the log never signed: restore the store "
    "from a backup and audit again",
    "altered-entry": "entry {i} is not the one the log signed: restore it from a backup or "
    "from its receipt, then audit again",
    "chain": "entry {i} does not chain to entry {i_1}: restore both from a backup and audit again",
    "stored-hash": "the stored tree hashes are damaged at entry {i}, so the server hands out "
    "wrong proofs: rebuild ledger_hashes from the entries (they verify) or restore it from a "
    "backup",
    "checkpoint": "a stored checkpoint is not the log's: restore ledger_checkpoints from a "
    "backup; if --key is not this log's verifier key, pass the right one (GET /v1/log/key)",
    "root": "entries 0..{i} do not have the signed root: restore the store from a backup and "
    "audit again; if a clean copy fails the same way, report the log to its operator",
    "extra-entry": "the store holds data beyond the signed checkpoint, added outside the log: "
    "restore it from a backup",
    "latest-checkpoint": "check that --key is this log's verifier key (GET /v1/log/key); if it "
    "is, the checkpoint the source hands out is damaged or forged: report it to the operator",
    "proof": "the server's proofs are wrong although its entries verify: its operator should run "
    "`medledger audit --db` on its database and rebuild the stored hashes",
    "key-rule": "that checkpoint's signatures contradict the log's own key entries (a retired "
    "key signed it, or an active key did not): if the log's operator did not sign it, a key is "
    "compromised; report it to the operator with the checkpoint",
    "unstable-source": "the source answered two reads of the same entries differently: retry; "
    "if it persists, report the server to its operator",
}


class AuditError(VerificationError):
    """The log's data does not verify. `index` is the first bad entry; `code` says what failed."""

    def __init__(
        self, message: str, index: int | None, code: str, *, checkpoint: int | None = None
    ) -> None:
        super().__init__(message, index)
        self.code = code
        self.checkpoint = checkpoint
        i = index if index is not None else 0
        self.hint = _HINTS[code].format(i=i, i_1=max(i - 1, 0))


class EvidenceError(VerificationError):
    """An evidence file's claims do not hold: it proves no misbehaviour. Exit 4."""


# --- the source ----------------------------------------------------------------------------


class LogSource(Protocol):
    """Where an audit reads a log from. Every method may raise SourceUnavailable.

    `checkpoints`, `stored_hashes` and `beyond` describe the store behind a log; a source
    without such access (an HTTP API) returns None / (None, None) and those checks are skipped.
    """

    description: str
    page_size: int

    def checkpoint(self) -> str:
        """The latest signed checkpoint note."""
        ...

    def entries(self, start: int, end: int) -> Sequence[bytes]:
        """Entry bytes from `start` on, at most end-start of them, in order; fewer is allowed."""
        ...

    def consistency_proof(self, size1: int, size2: int) -> Sequence[bytes]:
        """The source's RFC 6962 consistency proof; raises ProofError when it has none."""
        ...

    def inclusion_proof(self, index: int, size: int) -> Sequence[bytes]:
        """The source's RFC 6962 audit path; raises ProofError when it has none."""
        ...

    def checkpoints(self, first: int, last: int) -> Sequence[tuple[int, str]] | None:
        """Stored (size, note) rows with first <= size <= last, by size; None if not kept."""
        ...

    def stored_hashes(self, start: int, end: int) -> Sequence[tuple[int, bytes]] | None:
        """Stored (index, hash) rows with start <= index < end, by index; None if not kept."""
        ...

    def beyond(self, size: int) -> tuple[int | None, int | None]:
        """(first entry index >= size, first checkpoint size > size) the store holds."""
        ...


# --- checkpoints -----------------------------------------------------------------------------


class CheckpointRejected(ValueError):
    """The note is malformed, or not signed by a trusted key of the log it names."""


@functools.lru_cache(maxsize=8192)
def _open_cached(note: str, keys: tuple[Verifier, ...]) -> Checkpoint:
    try:
        opened = open_note(note, keys)
        cp = parse_checkpoint(opened.text)
    except (NoteError, CheckpointError) as e:
        raise CheckpointRejected(str(e)) from e
    if not any(sig.name == cp.origin for sig in opened.verified):
        signers = ", ".join(sorted({s.name for s in opened.verified}))
        raise CheckpointRejected(f"checkpoint of log {cp.origin!r} is signed by {signers}")
    return cp


def open_checkpoint(note: str, keys: Iterable[Verifier]) -> Checkpoint:
    """Opens a C2SP checkpoint: a trusted key named after its origin must have signed it.

    A key's name is the log's origin (C2SP tlog-checkpoint); signatures by other keys are
    ignored, and a bad signature by a trusted key is an error (note.open_note).
    """
    return _open_cached(note, tuple(keys))


# --- pure tree helpers (RFC 6962 section 2.1; golang.org/x/mod/sumdb/tlog layout) ----------


def _blocks(lo: int, hi: int) -> Iterable[tuple[int, int]]:
    """Splits leaves [lo, hi) into maximal aligned complete subtrees: (start, height) pairs."""
    while lo < hi:
        height = (hi - lo).bit_length() - 1
        if lo:
            height = min(height, (lo & -lo).bit_length() - 1)
        yield lo, height
        lo += 1 << height


def _levels(leaves: list[Hash]) -> list[list[Hash]]:
    """All levels of the perfect tree over 2^k leaf hashes, leaves first, root last."""
    levels = [leaves]
    cur = leaves
    while len(cur) > 1:
        cur = [_sha256(b"\x01" + a + b).digest() for a, b in zip(cur[::2], cur[1::2], strict=True)]
        levels.append(cur)
    return levels


def _extend(frontier: list[Hash], size: int, leaves: Sequence[Hash]) -> list[Hash]:
    """The frontier after appending `leaves` to a tree of `size` (RFC 6962 MTH, incremental)."""
    f = list(frontier)
    for start, height in _blocks(size, size + len(leaves)):
        off = start - size
        h = _levels(list(leaves[off : off + (1 << height)]))[-1][0]
        k = start >> height
        while k & 1:
            h = node_hash(f.pop(), h)
            k >>= 1
        f.append(h)
    return f


def _leaf_hashes(entries: Iterable[bytes]) -> list[Hash]:
    return [_sha256(b"\x00" + d).digest() for d in entries]


@functools.lru_cache(maxsize=32)
def _postorder(height: int) -> tuple[Callable[[Sequence[object]], object], ...]:
    """Per level, a getter of that level's hashes among a block's stored hashes.

    Stored hashes are written leaf by leaf, each leaf followed by the subtrees it completes
    (merkle.append_leaf), so a block of 2^height aligned leaves is stored in post-order.
    """
    positions: list[list[int]] = [[] for _ in range(height + 1)]
    p = 0
    for i in range(1 << height):
        positions[0].append(p)
        p += 1
        level = 0
        while i & 1:
            level += 1
            i >>= 1
            positions[level].append(p)
            p += 1
    return tuple(
        (lambda rows, _i=pos[0]: (rows[_i],)) if len(pos) == 1 else itemgetter(*pos)
        for pos in positions
    )


def stored_hash_leaf(index: int) -> tuple[int, int]:
    """(leaf, level) of stored hash `index`: the leaf whose append writes it, and its height.

    Leaf i writes the stored hashes [stored_hash_index(0, i), stored_hash_index(0, i + 1)).
    """
    lo, hi = 0, max(1, index + 1)
    while lo < hi:  # the last leaf whose first stored hash is at or before `index`
        mid = (lo + hi + 1) // 2
        if stored_hash_index(0, mid) <= index:
            lo = mid
        else:
            hi = mid - 1
    return lo, index - stored_hash_index(0, lo)


def frontier_from_inclusion(
    index: int, size: int, leaf: Hash, proof: Sequence[Hash], root: Hash
) -> list[Hash]:
    """The frontier of the first index+1 leaves, taken from a verified audit path.

    The left siblings on leaf `index`'s path (RFC 9162 section 2.1.3.2) are the maximal
    complete subtrees of [0, index): with the leaf they are everything needed to go on
    hashing from index+1 without reading the leaves before it.
    """
    merkle.verify_inclusion(index, size, leaf, proof, root)
    fn, sn = index, size - 1
    lefts = []
    for p in proof:
        if fn & 1 or fn == sn:
            lefts.append(p)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        fn >>= 1
        sn >>= 1
    return merkle.append_leaf(lefts[::-1], index, leaf)[1]


def consistency_proof_by(size1: int, size2: int, mth: Callable[[int, int], Hash]) -> list[Hash]:
    """RFC 6962 section 2.1.2 PROOF(size1, D[0:size2]), subtree hashes from mth(lo, hi)."""
    if not 0 < size1 <= size2:
        raise ProofError(f"no consistency proof from size {size1} to size {size2}")

    def sub(m: int, lo: int, hi: int, whole: bool) -> list[Hash]:
        if m == hi - lo:
            return [] if whole else [mth(lo, hi)]
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if m <= k:
            return sub(m, lo, lo + k, whole) + [mth(lo + k, hi)]
        return sub(m - k, lo + k, hi, False) + [mth(lo, lo + k)]

    return sub(size1, 0, size2, True)


def frontier_prefix(size: int, upto: int) -> tuple[int, int]:
    """(m, t): the largest m <= upto whose tree is the first t frontier subtrees of `size`."""
    m = t = 0
    for level in merkle.frontier_levels(size):
        if m + (1 << level) > upto:
            break
        m += 1 << level
        t += 1
    return m, t


def _short(h: bytes) -> str:
    return h.hex()[:12] + "…"


def explain_inclusion(index: int, size: int, leaf: Hash, proof: Sequence[Hash]) -> list[str]:
    """The hash steps of an RFC 9162 section 2.1.3.2 inclusion check, one line each."""
    lines = [
        f"leaf {index} of {size}: SHA-256(0x00 ‖ entry) = {_short(leaf)}  "
        "(below, · is the hash of the step before)"
    ]
    fn, sn, r = index, size - 1, leaf
    for step, p in enumerate(proof, 1):
        if sn == 0:
            lines.append(f"step {step}: proof too long — fails")
            return lines
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            lines.append(
                f"step {step}: sibling on the left  {_short(p)} → "
                f"SHA-256(0x01 ‖ {_short(p)} ‖ ·) = {_short(r)}"
            )
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
            lines.append(
                f"step {step}: sibling on the right {_short(p)} → "
                f"SHA-256(0x01 ‖ · ‖ {_short(p)}) = {_short(r)}"
            )
        fn >>= 1
        sn >>= 1
    lines.append(f"root = {_b64(r)}")
    return lines


def explain_consistency(
    size1: int, size2: int, root1: Hash, root2: Hash, proof: Sequence[Hash]
) -> list[str]:
    """The hash steps of an RFC 9162 section 2.1.4.2 consistency check, one line each."""
    lines = [f"consistency {size1} → {size2}: {len(proof)} proof hashes"]
    if not 0 < size1 < size2 or not proof:
        lines.append("nothing to step through (equal sizes, size 0 or an empty proof)")
        return lines
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
        lines.append(f"size {size1} is a power of two: its root {_short(root1)} starts the path")
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    lines.append(f"start: old = new = {_short(fr)}")
    for step, c in enumerate(path[1:], 1):
        if sn == 0:
            lines.append(f"step {step}: proof too long — fails")
            return lines
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            lines.append(
                f"step {step}: {_short(c)} on the left of both → old {_short(fr)}, new {_short(sr)}"
            )
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
            lines.append(f"step {step}: {_short(c)} on the right of new → new {_short(sr)}")
        fn >>= 1
        sn >>= 1
    lines.append(
        f"old root {_b64(fr)} {'=' if fr == root1 else '≠'} signed {_b64(root1)} (size {size1})"
    )
    lines.append(
        f"new root {_b64(sr)} {'=' if sr == root2 else '≠'} signed {_b64(root2)} (size {size2})"
    )
    return lines


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


# --- entries -------------------------------------------------------------------------------

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


class _Stream:
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
                if y in cps:
                    self._checkpoint(y, cps[y])
                    if self.proven is not None:
                        return
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
        for u, height in _blocks(x, y):
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
        leaves = _leaf_hashes(blk)
        if list(prevs) != [_b2a(h, newline=False) for h in (self.prev, *leaves[:-1])]:
            return False
        levels = _levels(leaves)
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
            for level, get in enumerate(_postorder(height)):
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

    def _checkpoint(self, y: int, note: str) -> None:
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
            return
        self._root_anomaly(y, cp, note=note)

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
        named, actual = _b64(prev) or "nothing", _b64(self.prev)
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
                        f"entry {p} was altered: its bytes hash to {_b64(leaf)}, but its stored "
                        f"leaf hash and the rest of the log name {_b64(have)}",
                        p,
                        "altered-entry",
                    )
                )
            if nxt != leaf:
                self._fail(
                    AuditError(
                        f"entry {p} does not match its stored leaf hash: its bytes hash to "
                        f"{_b64(leaf)}, the store says {_b64(have)}, and entry {p + 1} confirms "
                        f"neither: entry {p} or its neighbours were altered",
                        p,
                        "altered-entry",
                    )
                )
        self._fail(
            AuditError(
                f"the stored hash of entries {lo}..{p} (level {level}, stored index {index}) is "
                f"{_b64(have)}, but the entries hash to {_b64(want)}",
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
                            f"entry {y - 1} was altered: its bytes hash to {_b64(self.prev)}, "
                            f"but the checkpoint of size {y} and entry {y}'s prev both commit "
                            f"to {_b64(named)}",
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


# --- evidence ------------------------------------------------------------------------------

EVIDENCE_FORMAT = "medledger-evidence/v1"
MAX_EVIDENCE_BYTES = 64 << 20
"""Larger evidence files are refused unread: one holds at most 10,000 entries (a few MiB)."""
_VIAS = ("checkpoint", "consistency", "frontier")


@dataclass(frozen=True)
class RootClaim:
    """The root that checkpoint `checkpoint` (0 or 1) commits its first `size` leaves to.

    via "checkpoint": size and root are the checkpoint's own. via "consistency": `hashes` is an
    RFC 6962 consistency proof from `size` to the checkpoint's size that verifies with `root`
    and the signed root (RFC 9162 section 2.1.4.2), which binds `root` to the signed one. via
    "frontier": `hashes` are the checkpoint tree's maximal complete subtrees, which fold to the
    signed root; `root` folds from the first of them, which make up exactly `size` leaves.
    """

    checkpoint: int
    size: int
    root: Hash
    via: str
    hashes: tuple[Hash, ...] = ()


@dataclass(frozen=True)
class Evidence:
    """Two validly signed checkpoints of one log that cannot both be true, and why.

    kind "fork": `claims` derive two different roots for the same tree size from the two
    signed roots. kind "rollback": the log presented checkpoint 1, smaller than checkpoint 0,
    as its latest after having signed checkpoint 0; the claims, when present, show where the
    trees agree. Anyone holding the log's verifier key can re-check it (verify_evidence).
    """

    kind: str
    origin: str
    checkpoints: tuple[str, str]
    claims: tuple[RootClaim, ...] = ()
    entries: tuple[bytes, ...] | None = None  # entries 0..n-1 of checkpoint `entries_of`'s tree
    entries_of: int = 1
    server_proof: tuple[int, int, tuple[Hash, ...]] | None = None
    divergence: tuple[int, int] | None = None
    source: str = ""
    observed: str = ""
    summary: str = ""

    def to_json(self) -> bytes:
        obj: dict[str, object] = {
            "format": EVIDENCE_FORMAT,
            "kind": self.kind,
            "origin": self.origin,
            "summary": self.summary,
            "checkpoints": list(self.checkpoints),
            "claims": [
                {
                    "checkpoint": c.checkpoint,
                    "size": c.size,
                    "root": _b64(c.root),
                    "via": c.via,
                    "hashes": [_b64(h) for h in c.hashes],
                }
                for c in self.claims
            ],
            "entries": None
            if self.entries is None
            else {"checkpoint": self.entries_of, "data": [_b64(e) for e in self.entries]},
            "server_proof": None
            if self.server_proof is None
            else {
                "size1": self.server_proof[0],
                "size2": self.server_proof[1],
                "hashes": [_b64(h) for h in self.server_proof[2]],
            },
            "divergence": None
            if self.divergence is None
            else {"start": self.divergence[0], "end": self.divergence[1]},
            "observed": {"source": self.source, "time": self.observed},
        }
        return (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> Evidence:
        """Parses an evidence file; raises MalformedInput saying what is wrong."""
        try:
            obj = read_json(data, MAX_EVIDENCE_BYTES)
            if not isinstance(obj, dict) or obj.get("format") != EVIDENCE_FORMAT:
                raise MalformedInput(f"not a {EVIDENCE_FORMAT} file")
            notes = obj["checkpoints"]
            if not (isinstance(notes, list) and len(notes) == 2):
                raise MalformedInput("evidence needs exactly two checkpoints")
            if not all(isinstance(n, str) for n in notes):
                raise MalformedInput("checkpoints must be signed-note strings")
            claims = tuple(
                RootClaim(
                    _int(c["checkpoint"]),
                    _int(c["size"]),
                    _hash(c["root"]),
                    str(c["via"]),
                    tuple(_hash(h) for h in c["hashes"]),
                )
                for c in obj.get("claims") or []
            )
            ent = obj.get("entries")
            sp = obj.get("server_proof")
            div = obj.get("divergence")
            observed = obj.get("observed") or {}
            return cls(
                kind=str(obj["kind"]),
                origin=str(obj["origin"]),
                checkpoints=(notes[0], notes[1]),
                claims=claims,
                entries=None if ent is None else tuple(_bytes(e) for e in ent["data"]),
                entries_of=1 if ent is None else _int(ent["checkpoint"]),
                server_proof=None
                if sp is None
                else (_int(sp["size1"]), _int(sp["size2"]), tuple(_hash(h) for h in sp["hashes"])),
                divergence=None if div is None else (_int(div["start"]), _int(div["end"])),
                source=str(observed.get("source", "")),
                observed=str(observed.get("time", "")),
                summary=str(obj.get("summary", "")),
            )
        except MalformedInput:
            raise
        except InputRejected as e:
            raise MalformedInput(f"evidence is not strict JSON: {e}") from e
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise MalformedInput(f"evidence field {e} is missing or of the wrong type") from e


def _int(v: object) -> int:
    if type(v) is not int or v < 0:
        raise TypeError("integer")
    return v


def _bytes(v: object) -> bytes:
    if not isinstance(v, str):
        raise TypeError("base64 string")
    try:
        return base64.b64decode(v, validate=True)
    except ValueError as e:  # binascii.Error, or a plain ValueError for non-ASCII text
        raise ValueError("base64") from e


def _hash(v: object) -> Hash:
    b = _bytes(v)
    if len(b) != merkle.HASH_SIZE:
        raise ValueError("hash length")
    return b


@dataclass(frozen=True)
class EvidenceReport:
    """What verify_evidence established, in words."""

    kind: str
    origin: str
    sizes: tuple[int, int]
    lines: tuple[str, ...]
    explain: tuple[str, ...] = ()


def _check_claim(c: RootClaim, cp: Checkpoint) -> str:
    """Checks that `cp` commits its first c.size leaves to c.root; says how, or raises."""
    if c.via == "checkpoint":
        if c.hashes or c.size != cp.size or c.root != cp.root:
            raise EvidenceError(f"claim is not checkpoint {c.checkpoint}'s own size and root")
        return f"checkpoint {c.checkpoint} itself signs size {cp.size} with root {_b64(cp.root)}"
    if c.via == "consistency":
        try:
            merkle.verify_consistency(c.size, cp.size, c.root, cp.root, c.hashes)
        except ProofError as e:
            raise EvidenceError(
                f"the consistency proof {c.size} → {cp.size} for checkpoint {c.checkpoint} "
                f"does not verify: {e}"
            ) from e
        if c.size == cp.size:
            return f"checkpoint {c.checkpoint} itself signs size {cp.size}"
        return (
            f"a consistency proof {c.size} → {cp.size} ({len(c.hashes)} hashes) verifies with "
            f"checkpoint {c.checkpoint}'s signed root, so its tree has root {_b64(c.root)} at "
            f"size {c.size}"
        )
    if c.via == "frontier":
        if len(c.hashes) != bin(cp.size).count("1") or fold_frontier(c.hashes) != cp.root:
            raise EvidenceError(
                f"the frontier given for checkpoint {c.checkpoint} does not fold to its root"
            )
        m, t = frontier_prefix(cp.size, c.size)
        if m != c.size or fold_frontier(c.hashes[:t]) != c.root:
            raise EvidenceError(
                f"size {c.size} root is not the fold of checkpoint {c.checkpoint}'s frontier"
            )
        return (
            f"the {len(c.hashes)} complete subtrees of checkpoint {c.checkpoint}'s tree fold to "
            f"its signed root; the first {t} of them cover {c.size} leaves and fold to "
            f"{_b64(c.root)}"
        )
    raise EvidenceError(f"unknown claim kind {c.via!r} (expected one of {', '.join(_VIAS)})")


def verify_evidence(ev: Evidence, verifiers: Iterable[Verifier]) -> EvidenceReport:
    """Re-checks evidence of log misbehaviour with only the log's verifier keys.

    Raises EvidenceError when it proves nothing, MalformedInput when it cannot be read.
    """
    keys = tuple(verifiers)
    cps = []
    for i, note in enumerate(ev.checkpoints):
        try:
            cps.append(open_checkpoint(note, keys))
        except CheckpointRejected as e:
            raise EvidenceError(f"checkpoint {i} is not validly signed by a given key: {e}") from e
    a, b = cps
    if a.origin != b.origin or a.origin != ev.origin:
        raise EvidenceError(
            f"the checkpoints are of different logs ({a.origin!r}, {b.origin!r}); "
            f"the evidence names {ev.origin!r}"
        )
    lines = [
        f"checkpoint 0: log {a.origin}, size {a.size}, root {_b64(a.root)} — validly signed",
        f"checkpoint 1: log {b.origin}, size {b.size}, root {_b64(b.root)} — validly signed",
    ]
    explain: list[str] = []
    if ev.kind == "fork":
        if len(ev.claims) != 2 or {c.checkpoint for c in ev.claims} != {0, 1}:
            raise EvidenceError("a fork needs one root claim from each checkpoint")
        c0, c1 = sorted(ev.claims, key=lambda c: c.checkpoint)
        if c0.size != c1.size:
            raise EvidenceError(f"the claims are for different sizes ({c0.size}, {c1.size})")
        lines.append(_check_claim(c0, a))
        lines.append(_check_claim(c1, b))
        if c0.root == c1.root:
            raise EvidenceError(
                f"both checkpoints give the same root at size {c0.size}: no contradiction"
            )
        for c, cp in ((c0, a), (c1, b)):
            if c.via == "consistency" and c.size < cp.size:
                explain += explain_consistency(c.size, cp.size, c.root, cp.root, c.hashes)
        lines.append(
            f"PROVEN: the log signed two trees whose first {c0.size} leaves differ "
            f"({_b64(c0.root)} ≠ {_b64(c1.root)}); no consistency proof can join them — the "
            "log forked (or its key signed for two logs)"
        )
    elif ev.kind == "rollback":
        if b.size >= a.size:
            raise EvidenceError(
                f"checkpoint 1 (size {b.size}) is not smaller than checkpoint 0 (size {a.size})"
            )
        lines.append(
            f"PROVEN: the log signed a tree of {a.size} entries and one of {b.size}; per the "
            f"auditor (observed {ev.observed or 'at an unrecorded time'} from "
            f"{ev.source or 'an unrecorded source'}) it presented the smaller one as its latest "
            "after the larger: it was restored from an older copy or shows different views "
            "to different readers"
        )
    else:
        raise EvidenceError(f"unknown evidence kind {ev.kind!r}")
    if ev.entries is not None:
        if ev.entries_of not in (0, 1):
            raise EvidenceError("entries must belong to checkpoint 0 or 1")
        cp = cps[ev.entries_of]
        if len(ev.entries) != cp.size:
            raise EvidenceError(
                f"{len(ev.entries)} entries given for checkpoint {ev.entries_of} of size {cp.size}"
            )
        leaves = _leaf_hashes(ev.entries)
        if fold_frontier(_extend([], 0, leaves)) != cp.root:
            raise EvidenceError(f"the entries do not hash to checkpoint {ev.entries_of}'s root")
        lines.append(f"the {cp.size} entries included hash to checkpoint {ev.entries_of}'s root")
        for c in ev.claims:
            if c.checkpoint == ev.entries_of and c.size <= cp.size:
                if fold_frontier(_extend([], 0, leaves[: c.size])) != c.root:
                    raise EvidenceError(f"the first {c.size} entries do not hash to the claim")
                lines.append(f"and their first {c.size} hash to {_b64(c.root)}, as claimed")
    return EvidenceReport(ev.kind, a.origin, (a.size, b.size), tuple(lines), tuple(explain))


# --- the audit -----------------------------------------------------------------------------


@dataclass
class AuditResult:
    """What an audit found. status: "ok" (exit 0), "failed" (4) or "misbehaviour" (5)."""

    status: str
    origin: str
    size: int
    root: Hash
    checkpoint: str
    start: int = 0
    entries_checked: int = 0
    checkpoints_checked: int = 0
    hashes_checked: int = 0
    elapsed: float = 0.0
    error: AuditError | None = None
    evidence: Evidence | None = None
    state: AuditState | None = None  # to save after an "ok"
    previous: AuditState | None = None
    consistency: tuple[int, int, Hash, Hash, tuple[Hash, ...]] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _now() -> str:
    return format_time(datetime.now(UTC))


class _Hasher:
    """Subtree hashes MTH(D[lo:hi]) of a source's entries, read afresh (RFC 6962 2.1)."""

    def __init__(self, source: LogSource) -> None:
        self.source = source
        self.page = max(1, int(getattr(source, "page_size", 1000)))

    def entries(self, lo: int, hi: int) -> list[bytes]:
        out: list[bytes] = []
        while lo + len(out) < hi:
            got = self.source.entries(lo + len(out), min(lo + len(out) + self.page, hi))
            if not got:
                raise AuditError(
                    f"the source stopped handing out entries at {lo + len(out)}",
                    lo + len(out),
                    "unstable-source",
                )
            out.extend(got[: hi - lo - len(out)])
        return out

    def mth(self, lo: int, hi: int) -> Hash:
        f: list[Hash] = []
        pos = lo
        while pos < hi:
            got = self.entries(pos, min(pos + self.page, hi))
            f = _extend(f, pos - lo, _leaf_hashes(got))  # the subtree as a tree of its own
            pos += len(got)
        return fold_frontier(f)


def audit(
    source: LogSource,
    verifiers: Iterable[Verifier],
    *,
    state: AuditState | None = None,
    from_index: int | None = None,
    check_stored: bool = True,
    progress: Callable[[int, int], None] | None = None,
    evidence_entries_max: int = 10_000,
    keyset: KeySet | None = None,
) -> AuditResult:
    """Audits a whole log, or what it appended since `state`; see the module docstring.

    With `keyset` (derived from the log's own key entries) every checkpoint must also keep
    the key lifetime rule (check_key_lifetimes).

    Raises SourceUnavailable when the source cannot be read, StateError when `state` is of
    another log, and AuditUsageError for an impossible `from_index`; everything the log's
    data shows comes back in the AuditResult.
    """
    keys = tuple(verifiers)
    if not keys:
        raise AuditUsageError("an audit needs at least one verifier key")
    t0 = time.perf_counter()
    note = source.checkpoint()
    try:
        latest = open_checkpoint(note, keys)
    except CheckpointRejected as e:
        err = AuditError(f"the latest checkpoint is not valid: {e}", None, "latest-checkpoint")
        return AuditResult("failed", "", 0, b"", note, error=err, previous=state)
    result = AuditResult("ok", latest.origin, latest.size, latest.root, note, previous=state)

    def done(res: AuditResult, stream: _Stream | None = None) -> AuditResult:
        if stream is not None:
            res.start = stream.start
            res.entries_checked += stream.entries_checked
            res.checkpoints_checked += stream.checkpoints_checked
            res.hashes_checked += stream.hashes_checked
        res.elapsed = time.perf_counter() - t0
        return res

    if state is not None and state.origin != latest.origin:
        raise StateError(
            f"the audit state is for log {state.origin!r} but the source serves {latest.origin!r}",
            "use a separate --state file for each log",
        )
    if state is not None and latest.size < state.size:
        return done(*_rollback(source, keys, latest, note, state, check_stored, result))
    if state is not None and latest.size == state.size and latest.root != state.root:
        claims = (
            RootClaim(0, state.size, state.root, "checkpoint"),
            RootClaim(1, latest.size, latest.root, "checkpoint"),
        )
        ev = Evidence(
            "fork",
            latest.origin,
            (state.checkpoint, note),
            claims,
            server_proof=None,
            source=source.description,
            observed=_now(),
            summary=f"two signed checkpoints of size {state.size} with different roots",
        )
        return done(_finish_evidence(ev, keys, result))

    stream = _Stream(source, keys, latest, check_stored=check_stored, progress=progress)
    if from_index:
        if from_index > latest.size:
            raise AuditUsageError(
                f"--from {from_index} is beyond the log's latest checkpoint (size {latest.size})"
            )
        if state is not None and from_index > state.size:
            raise AuditUsageError(
                f"--from {from_index} is beyond the state's size {state.size}: the entries "
                "between would go unchecked; omit --from"
            )
        err = _start_from(stream, source, latest, from_index)
        if err is not None:
            result.status, result.error = "failed", err
            return done(result)
    elif state is not None:
        stream.start_at(state.size, state.frontier, state.last_leaf)
    if state is not None and stream.pos < state.size:
        stream.stops.add(state.size)
    try:
        stream.run()
    except AuditError as e:
        if state is None or state.size == 0:
            result.status, result.error = "failed", e
            return done(result, stream)
        # The new entries do not continue the verified tree: a fork, or bad data. Only the
        # whole log, read afresh, can tell which.
        result.notes.append(f"incremental check failed ({e}); re-auditing the whole log")
        done(result, stream)
        return done(
            *_full_against_state(
                source,
                keys,
                latest,
                note,
                state,
                check_stored,
                progress,
                result,
                evidence_entries_max,
            )
        )
    if stream.proven is not None:
        return done(
            _internal_fork(source, keys, latest, stream, result, evidence_entries_max), stream
        )
    if state is not None and state.size in stream.roots_at:
        x = stream.roots_at[state.size]
        if x != state.root:
            done(result, stream)
            return done(
                _fork_from_state(source, keys, latest, note, state, x, result, evidence_entries_max)
            )
    if state is not None and 0 < state.size < latest.size:
        try:
            proof = tuple(source.consistency_proof(state.size, latest.size))
            merkle.verify_consistency(state.size, latest.size, state.root, latest.root, proof)
            result.consistency = (state.size, latest.size, state.root, latest.root, proof)
        except ProofError as e:
            result.status = "failed"
            result.error = AuditError(
                f"the log extends the verified checkpoint of size {state.size} (its entries "
                f"show it), but the source's consistency proof {state.size} → {latest.size} "
                f"is wrong: {e}",
                None,
                "proof",
            )
            return done(result, stream)
    if keyset is not None:
        err = check_key_lifetimes(source, keyset, state.size if state else 0, note, latest)
        if err is not None:
            result.status, result.error = "failed", err
            return done(result, stream)
    result.state = AuditState(
        latest.origin,
        latest.size,
        latest.root,
        note,
        tuple(stream.frontier),
        stream.prev,
        source=source.description,
        saved=_now(),
    )
    return done(result, stream)


def check_key_lifetimes(
    source: LogSource, keyset: KeySet, first: int, note: str, latest: Checkpoint
) -> AuditError | None:
    """The first checkpoint of size >= `first` that breaks the key lifetime rule of
    ledger/keyset.py (every key active at its size signed it, no retired key did): among the
    stored checkpoints when the source keeps them, and the latest one."""
    notes = list(source.checkpoints(first, latest.size) or ())
    if not notes or notes[-1][0] != latest.size:
        notes.append((latest.size, note))
    for size, n in notes:
        try:
            keyset.open_checkpoint(n)
        except KeyRuleError as e:
            return AuditError(
                f"the checkpoint of size {size} breaks the key rotation rule: {e}",
                max(size - 1, 0),
                "key-rule",
                checkpoint=size,
            )
    return None


def _start_from(
    stream: _Stream, source: LogSource, latest: Checkpoint, n: int
) -> AuditError | None:
    """Starts `stream` at entry n, the tree before it bound by entry n-1's inclusion proof."""
    got = source.entries(n - 1, n)
    if not got:
        return AuditError(f"the source has no entry {n - 1}", n - 1, "missing-entry")
    data = got[0]
    try:
        e = parse_entry(data)
    except EntryError as err:
        return AuditError(f"malformed entry: {err}", n - 1, "malformed-entry")
    if e.index != n - 1:
        return AuditError(f"the entry at {n - 1} says index {e.index}", n - 1, "missing-entry")
    leaf = leaf_hash(data)
    try:
        proof = source.inclusion_proof(n - 1, latest.size)
        frontier = frontier_from_inclusion(n - 1, latest.size, leaf, proof, latest.root)
    except ProofError as err:
        return AuditError(
            f"entry {n - 1} is not in the signed tree by the source's inclusion proof ({err}); "
            "audit from 0 to find out why",
            n - 1,
            "root",
        )
    stream.start_at(n, frontier, leaf)
    return None


def _server_proof(source: LogSource, a: int, b: int) -> tuple[int, int, tuple[Hash, ...]] | None:
    try:
        return (a, b, tuple(source.consistency_proof(a, b)))
    except (ProofError, SourceUnavailable):
        return None


def _proof_claim(source: LogSource, m: int, n: int, root_m: Hash) -> RootClaim:
    """Claim for checkpoint 1 (size n): its first m leaves hash to root_m."""
    if m == n:
        return RootClaim(1, m, root_m, "checkpoint")
    proof = consistency_proof_by(m, n, _Hasher(source).mth)
    return RootClaim(1, m, root_m, "consistency", tuple(proof))


def _finish_evidence(ev: Evidence, keys: tuple[Verifier, ...], result: AuditResult) -> AuditResult:
    """Checks the evidence as a third party would before reporting it."""
    try:
        verify_evidence(ev, keys)
    except EvidenceError as e:
        result.status = "failed"
        result.error = AuditError(
            f"the source's answers contradict each other, but not provably ({e})",
            None,
            "unstable-source",
        )
        return result
    result.status, result.evidence = "misbehaviour", ev
    return result


def _entries_for(source: LogSource, n: int, cap: int) -> tuple[bytes, ...] | None:
    return tuple(_Hasher(source).entries(0, n)) if 0 < n <= cap else None


def _divergence(source: LogSource, state: AuditState, upto: int) -> tuple[int, int] | None:
    """The first of the state's frontier subtrees the source's entries hash differently."""
    lo = 0
    hasher = _Hasher(source)
    for level, h in zip(merkle.frontier_levels(state.size), state.frontier, strict=True):
        hi = lo + (1 << level)
        if hi > upto:
            return None
        if hasher.mth(lo, hi) != h:
            return lo, hi
        lo = hi
    return None


def _fork_from_state(
    source: LogSource,
    keys: tuple[Verifier, ...],
    latest: Checkpoint,
    note: str,
    state: AuditState,
    x: Hash,
    result: AuditResult,
    cap: int,
) -> AuditResult:
    """The source's tree has root x at the state's size, not the state's root: a fork."""
    a, b = state.size, latest.size
    try:
        claim = _proof_claim(source, a, b, x)
        entries = _entries_for(source, b, cap)
        div = _divergence(source, state, a)
    except AuditError as e:
        result.status, result.error = "failed", e
        return result
    ev = Evidence(
        "fork",
        latest.origin,
        (state.checkpoint, note),
        (RootClaim(0, a, state.root, "checkpoint"), claim),
        entries=entries,
        server_proof=_server_proof(source, a, b),
        divergence=div,
        source=source.description,
        observed=_now(),
        summary=(
            f"the log's tree of size {b} does not extend its earlier checkpoint of size {a}: "
            f"its first {a} entries hash to {_b64(x)}, not {_b64(state.root)}"
        ),
    )
    return _finish_evidence(ev, keys, result)


def _full_against_state(
    source: LogSource,
    keys: tuple[Verifier, ...],
    latest: Checkpoint,
    note: str,
    state: AuditState,
    check_stored: bool,
    progress: Callable[[int, int], None] | None,
    result: AuditResult,
    cap: int,
) -> tuple[AuditResult, _Stream]:
    full = _Stream(
        source, keys, latest, check_stored=check_stored, progress=progress, stops=[state.size]
    )
    try:
        full.run()
    except AuditError as e:
        result.status, result.error = "failed", e
        return result, full
    if full.proven is not None:
        return _internal_fork(source, keys, latest, full, result, cap), full
    x = full.roots_at[state.size]
    if x != state.root:
        return _fork_from_state(source, keys, latest, note, state, x, result, cap), full
    result.notes.append(
        "the whole log verifies and extends the state; the state's last leaf was stale"
    )
    result.state = AuditState(
        latest.origin,
        latest.size,
        latest.root,
        note,
        tuple(full.frontier),
        full.prev,
        source=source.description,
        saved=_now(),
    )
    return result, full


def _internal_fork(
    source: LogSource,
    keys: tuple[Verifier, ...],
    latest: Checkpoint,
    stream: _Stream,
    result: AuditResult,
    cap: int,
) -> AuditResult:
    """A stored signed checkpoint contradicts entries that a later signed checkpoint covers."""
    assert stream.proven is not None
    suspect, size, later_note, later = stream.proven
    if not later_note:
        later_note = result.checkpoint
    m = suspect.size
    try:
        claim = _proof_claim(source, m, size, suspect.root)
        entries = _entries_for(source, size, cap)
    except AuditError as e:
        result.status, result.error = "failed", e
        return result
    ev = Evidence(
        "fork",
        latest.origin,
        (suspect.note, later_note),
        (RootClaim(0, m, suspect.cp.root, "checkpoint"), claim),
        entries=entries,
        server_proof=_server_proof(source, m, size),
        source=source.description,
        observed=_now(),
        summary=(
            f"the log signed a checkpoint of size {m} whose root is not that of the first {m} "
            f"entries of its later checkpoint of size {size}"
        ),
    )
    return _finish_evidence(ev, keys, result)


def _rollback(
    source: LogSource,
    keys: tuple[Verifier, ...],
    latest: Checkpoint,
    note: str,
    state: AuditState,
    check_stored: bool,
    result: AuditResult,
) -> tuple[AuditResult, _Stream | None]:
    """The source's latest checkpoint is smaller than one the auditor verified before."""
    a, b = state.size, latest.size
    m, t = frontier_prefix(a, b)
    summary = (
        f"the log presents a checkpoint of size {b} as its latest after signing one of size {a}"
    )
    claims: tuple[RootClaim, ...] = ()
    kind = "rollback"
    stream = None
    if m > 0:
        stream = _Stream(source, keys, latest, check_stored=check_stored, progress=None, stops=[m])
        try:
            stream.run()
        except AuditError as e:
            result.notes.append(f"the smaller tree's own entries do not verify either: {e}")
        else:
            x = latest.root if m == b else stream.roots_at[m]
            y = fold_frontier(state.frontier[:t])
            if x != y:
                try:
                    claim1 = _proof_claim(source, m, b, x)
                except AuditError as e:
                    result.notes.append(f"could not rebuild a proof from the source: {e}")
                else:
                    kind = "fork"
                    claims = (RootClaim(0, m, y, "frontier", state.frontier), claim1)
                    summary += f", and the two trees differ within their first {m} entries"
    ev = Evidence(
        kind,
        latest.origin,
        (state.checkpoint, note),
        claims,
        source=source.description,
        observed=_now(),
        summary=summary,
    )
    return _finish_evidence(ev, keys, result), stream
