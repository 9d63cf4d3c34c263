"""The audit driver: runs the linear check against the latest checkpoint and what the auditor
saw before, and decides what the findings mean.

audit() resumes from an earlier state when given one (O(new entries)), or starts at --from with
the tree before it bound by an inclusion proof, and proves with a consistency proof that the
log only grew. When the source contradicts itself it re-reads what it must (a whole log after
an incremental check fails, subtree hashes for a proof) and tells a damaged store (AuditError,
status "failed") from a log that signed two incompatible trees, a fork or a rollback (Evidence,
status "misbehaviour"), whose evidence it checks as a third party would before reporting it.
With a witness policy the latest checkpoint must also carry the quorum's cosignatures: a log
whose data verifies but whose checkpoint is not witnessed enough is status "unwitnessed"
(exit ledger.policy.EXIT_NOT_WITNESSED), and no state is kept for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .. import merkle
from ..checkpoint import Checkpoint
from ..encoding import b64
from ..entry import EntryError, format_time, parse_entry
from ..keyset import KeySet
from ..merkle import (
    Hash,
    ProofError,
    consistency_proof_by,
    extend_frontier,
    fold_frontier,
    frontier_from_inclusion,
    frontier_prefix,
    leaf_hash,
    leaf_hashes,
)
from ..note import Verifier
from ..policy import Policy, QuorumNotMet
from ..verify import VerificationError, verify_witnessed
from .checkpoints import CheckpointRejected, check_key_lifetimes, open_checkpoint
from .errors import AuditError, AuditUsageError, EvidenceError
from .evidence import Evidence, RootClaim, verify_evidence
from .source import LogSource, SourceUnavailable
from .state import AuditState, StateError
from .stream import Stream


@dataclass
class AuditResult:
    """What an audit found. status: "ok" (exit 0), "failed" (4), "misbehaviour" (5) or, under
    a witness policy, "unwitnessed" (6: the data verifies, the quorum's cosignatures do not
    all; `unwitnessed` says who signed and who is missing). `witnesses` are the policy's
    witnesses whose cosignatures of the latest checkpoint counted."""

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
    witnesses: tuple[str, ...] = ()
    unwitnessed: QuorumNotMet | None = None

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
            f = extend_frontier(f, pos - lo, leaf_hashes(got))  # the subtree as a tree of its own
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
    policy: Policy | None = None,
    now: float | None = None,
) -> AuditResult:
    """Audits a whole log, or what it appended since `state`; see the module docstring.

    With `keyset` (derived from the log's own key entries) every checkpoint must also keep
    the key lifetime rule (check_key_lifetimes). With `policy` the latest checkpoint must
    meet its quorum (ledger.verify.verify_witnessed, cosignature dates judged against `now`):
    a trusted witness's line that does not verify fails the audit like a bad log signature;
    too few cosignatures leave an otherwise "ok" audit "unwitnessed". The entries are
    audited either way: a failure or misbehaviour they show is reported first.

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
        bad = AuditError(f"the latest checkpoint is not valid: {e}", None, "latest-checkpoint")
        return AuditResult("failed", "", 0, b"", note, error=bad, previous=state)
    result = AuditResult("ok", latest.origin, latest.size, latest.root, note, previous=state)
    if policy is not None:
        try:
            witnessed = verify_witnessed(note, policy, keys, origin=latest.origin, now=now)
            result.witnesses = tuple(witnessed.cosigned)
        except QuorumNotMet as e:
            result.witnesses, result.unwitnessed = e.cosigned, e
        except VerificationError as e:
            bad = AuditError(
                f"the latest checkpoint is not valid under the policy: {e}",
                None,
                "latest-checkpoint",
            )
            result.status, result.error = "failed", bad
            return result

    def done(res: AuditResult, stream: Stream | None = None) -> AuditResult:
        if stream is not None:
            res.start = stream.start
            res.entries_checked += stream.entries_checked
            res.checkpoints_checked += stream.checkpoints_checked
            res.hashes_checked += stream.hashes_checked
        res.elapsed = time.perf_counter() - t0
        if res.status == "ok" and res.unwitnessed is not None:
            res.status, res.state = "unwitnessed", None
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

    stream = Stream(source, keys, latest, check_stored=check_stored, progress=progress)
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
        try:
            err = _start_from(stream, source, latest, from_index)
        except AuditError as e:  # a source that authenticates what it reads (tiles)
            err = e
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
        return done(_internal_fork(source, keys, stream, result, evidence_entries_max), stream)
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
    result.state = _state_after(source, latest, note, stream)
    return done(result, stream)


def _state_after(source: LogSource, latest: Checkpoint, note: str, stream: Stream) -> AuditState:
    """What to remember of a log whose entries up to `latest` the stream verified."""
    return AuditState(
        latest.origin,
        latest.size,
        latest.root,
        note,
        tuple(stream.frontier),
        stream.prev,
        source=source.description,
        saved=_now(),
    )


def _start_from(stream: Stream, source: LogSource, latest: Checkpoint, n: int) -> AuditError | None:
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


def _fork(
    source: LogSource,
    keys: tuple[Verifier, ...],
    result: AuditResult,
    cap: int,
    notes: tuple[str, str],
    m: int,
    roots: tuple[Hash, Hash],
    n: int,
    summary: str,
    state: AuditState | None = None,
) -> AuditResult:
    """Evidence of a fork: checkpoint 0 (notes[0]) signs size m with root roots[0], while the
    first m entries of checkpoint 1 (notes[1], size n) hash to roots[1] by the source's own
    entries and subtree hashes. With the auditor's `state` (checkpoint 0), the evidence also
    names the first of its subtrees the entries hash differently."""
    try:
        claim = _proof_claim(source, m, n, roots[1])
        entries = _entries_for(source, n, cap)
        div = None if state is None else _divergence(source, state, m)
    except AuditError as e:
        result.status, result.error = "failed", e
        return result
    ev = Evidence(
        "fork",
        result.origin,
        notes,
        (RootClaim(0, m, roots[0], "checkpoint"), claim),
        entries=entries,
        server_proof=_server_proof(source, m, n),
        divergence=div,
        source=source.description,
        observed=_now(),
        summary=summary,
    )
    return _finish_evidence(ev, keys, result)


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
    summary = (
        f"the log's tree of size {b} does not extend its earlier checkpoint of size {a}: "
        f"its first {a} entries hash to {b64(x)}, not {b64(state.root)}"
    )
    notes = (state.checkpoint, note)
    return _fork(source, keys, result, cap, notes, a, (state.root, x), b, summary, state)


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
) -> tuple[AuditResult, Stream]:
    full = Stream(
        source, keys, latest, check_stored=check_stored, progress=progress, stops=[state.size]
    )
    try:
        full.run()
    except AuditError as e:
        result.status, result.error = "failed", e
        return result, full
    if full.proven is not None:
        return _internal_fork(source, keys, full, result, cap), full
    x = full.roots_at[state.size]
    if x != state.root:
        return _fork_from_state(source, keys, latest, note, state, x, result, cap), full
    result.notes.append(
        "the whole log verifies and extends the state; the state's last leaf was stale"
    )
    result.state = _state_after(source, latest, note, full)
    return result, full


def _internal_fork(
    source: LogSource,
    keys: tuple[Verifier, ...],
    stream: Stream,
    result: AuditResult,
    cap: int,
) -> AuditResult:
    """A stored signed checkpoint contradicts entries that a later signed checkpoint covers."""
    assert stream.proven is not None
    suspect, size, later_note, _ = stream.proven
    m = suspect.size
    summary = (
        f"the log signed a checkpoint of size {m} whose root is not that of the first {m} "
        f"entries of its later checkpoint of size {size}"
    )
    notes = (suspect.note, later_note or result.checkpoint)
    roots = (suspect.cp.root, suspect.root)
    return _fork(source, keys, result, cap, notes, m, roots, size, summary)


def _rollback(
    source: LogSource,
    keys: tuple[Verifier, ...],
    latest: Checkpoint,
    note: str,
    state: AuditState,
    check_stored: bool,
    result: AuditResult,
) -> tuple[AuditResult, Stream | None]:
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
        stream = Stream(source, keys, latest, check_stored=check_stored, progress=None, stops=[m])
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
