"""Evidence of log misbehaviour: two signed checkpoints that cannot both be true, and why.

An Evidence file holds the two signed notes and, for a fork, one RootClaim from each that
derives a root for the same tree size from its signed root; the two roots differ, so no
consistency proof can join the checkpoints. verify_evidence re-checks all of it with nothing
but the log's verifier keys, as a third party would; the JSON form (medledger-evidence/v1) is
read within the bounds of ledger/untrusted.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from .. import merkle
from ..checkpoint import Checkpoint
from ..encoding import b64
from ..merkle import Hash, ProofError, extend_frontier, fold_frontier, frontier_prefix, leaf_hashes
from ..note import Verifier
from ..untrusted import InputRejected, read_base64, read_json, read_uint
from ..verify import MalformedInput
from .checkpoints import CheckpointRejected, open_checkpoint
from .errors import EvidenceError
from .explain import explain_consistency

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
                    "root": b64(c.root),
                    "via": c.via,
                    "hashes": [b64(h) for h in c.hashes],
                }
                for c in self.claims
            ],
            "entries": None
            if self.entries is None
            else {"checkpoint": self.entries_of, "data": [b64(e) for e in self.entries]},
            "server_proof": None
            if self.server_proof is None
            else {
                "size1": self.server_proof[0],
                "size2": self.server_proof[1],
                "hashes": [b64(h) for h in self.server_proof[2]],
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
        except InputRejected as e:
            raise MalformedInput(f"evidence is not strict JSON: {e}") from e
        if not isinstance(obj, dict) or obj.get("format") != EVIDENCE_FORMAT:
            raise MalformedInput(f"not a {EVIDENCE_FORMAT} file")
        try:
            notes = obj["checkpoints"]
            if not (isinstance(notes, list) and len(notes) == 2):
                raise MalformedInput("evidence needs exactly two checkpoints")
            if not all(isinstance(n, str) for n in notes):
                raise MalformedInput("checkpoints must be signed-note strings")
            claims = tuple(
                RootClaim(
                    read_uint(c["checkpoint"], "a claim's checkpoint"),
                    read_uint(c["size"], "a claim's size"),
                    _hash(c["root"], "a claim's root"),
                    str(c["via"]),
                    tuple(_hash(h, "a claim's hash") for h in c["hashes"]),
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
                entries=None
                if ent is None
                else tuple(read_base64(e, "an entry") for e in ent["data"]),
                entries_of=1
                if ent is None
                else read_uint(ent["checkpoint"], "the entries' checkpoint"),
                server_proof=None
                if sp is None
                else (
                    read_uint(sp["size1"], "server_proof size1"),
                    read_uint(sp["size2"], "server_proof size2"),
                    tuple(_hash(h, "a server_proof hash") for h in sp["hashes"]),
                ),
                divergence=None
                if div is None
                else (
                    read_uint(div["start"], "divergence start"),
                    read_uint(div["end"], "divergence end"),
                ),
                source=str(observed.get("source", "")),
                observed=str(observed.get("time", "")),
                summary=str(obj.get("summary", "")),
            )
        except InputRejected as e:
            raise MalformedInput(f"evidence: {e}") from e
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise MalformedInput(f"evidence field {e} is missing or of the wrong type") from e


def _hash(v: object, what: str) -> Hash:
    return read_base64(v, what, size=merkle.HASH_SIZE)


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
        return f"checkpoint {c.checkpoint} itself signs size {cp.size} with root {b64(cp.root)}"
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
            f"checkpoint {c.checkpoint}'s signed root, so its tree has root {b64(c.root)} at "
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
            f"{b64(c.root)}"
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
        f"checkpoint 0: log {a.origin}, size {a.size}, root {b64(a.root)} — validly signed",
        f"checkpoint 1: log {b.origin}, size {b.size}, root {b64(b.root)} — validly signed",
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
            f"({b64(c0.root)} ≠ {b64(c1.root)}); no consistency proof can join them — the "
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
        leaves = leaf_hashes(ev.entries)
        if fold_frontier(extend_frontier([], 0, leaves)) != cp.root:
            raise EvidenceError(f"the entries do not hash to checkpoint {ev.entries_of}'s root")
        lines.append(f"the {cp.size} entries included hash to checkpoint {ev.entries_of}'s root")
        for c in ev.claims:
            if c.checkpoint == ev.entries_of and c.size <= cp.size:
                if fold_frontier(extend_frontier([], 0, leaves[: c.size])) != c.root:
                    raise EvidenceError(f"the first {c.size} entries do not hash to the claim")
                lines.append(f"and their first {c.size} hash to {b64(c.root)}, as claimed")
    return EvidenceReport(ev.kind, a.origin, (a.size, b.size), tuple(lines), tuple(explain))
