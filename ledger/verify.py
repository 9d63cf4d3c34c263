"""Offline verification: checkpoints, receipts, submissions and consistency between checkpoints.

Trust comes only from the verifier keys given, and from a witness policy (C2SP tlog-policy)
when one is: then a checkpoint also needs the cosignatures of the policy's quorum
(verify_witnessed), and a receipt is only as good as its checkpoint. Rules taken from the
anchors' failures: always bind (index, size, root) together; refuse index >= size and size-0
consistency proofs; never trust metadata carried inside a proof; unknown signers are ignored.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import merkle
from .checkpoint import Checkpoint, CheckpointError, parse_checkpoint
from .entry import Entry, EntryError, commitment, parse_entry
from .keyset import KeyRuleError, KeySet
from .note import NoteError, Verifier, open_note
from .policy import CheckpointRefused, Evaluation, Policy, QuorumNotMet
from .receipt import ReceiptError, parse_receipt

MAX_COSIGNATURE_SKEW = 600
"""Seconds a cosignature may be dated ahead of the verifier's clock and still count: a
witness's clock and the verifier's differ. The spec lets verifiers refuse cosignatures from
the future; one dated further ahead is a witness with a wrong clock (or a forged date), and
its cosignature counts for nothing here."""


class VerificationError(Exception):
    """Verification failed. `index` names the first bad entry when there is one."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message if index is None else f"entry {index}: {message}")
        self.index = index
        self.reason = message


class MalformedInput(VerificationError):
    """The input could not be parsed at all (as opposed to parsed and found false)."""


@dataclass(frozen=True)
class VerifiedReceipt:
    entry: Entry
    entry_bytes: bytes
    checkpoint: Checkpoint
    note: str
    witnesses: tuple[str, ...] = ()
    """The policy's witnesses whose cosignatures counted (verify_receipt with a policy)."""


def verify_checkpoint(
    note: str,
    verifiers: Iterable[Verifier],
    origin: str | None = None,
    keyset: KeySet | None = None,
) -> Checkpoint:
    """Opens a signed checkpoint; the origin must be the expected one (or the key's name).

    With the log's `keyset` (GET /v1/log/keys) its keys are trusted too and the key lifetime
    rule applies: every key active at the checkpoint's size signed, none retired before it
    did (ledger/keyset.py).
    """
    verifiers = list(verifiers)
    if keyset is not None:
        verifiers += keyset.verifiers()
    try:
        opened = open_note(note, verifiers)
        cp = parse_checkpoint(opened.text)
        if keyset is not None:
            keyset.check_signatures(cp.size, opened.verified)
    except (NoteError, CheckpointError, KeyRuleError) as e:
        raise VerificationError(f"checkpoint: {e}") from e
    want = origin if origin is not None else verifiers[0].name if len(verifiers) == 1 else None
    if want is not None and cp.origin != want:
        raise VerificationError(f"checkpoint is for log {cp.origin!r}, expected {want!r}")
    return cp


def verify_witnessed(
    note: str,
    policy: Policy,
    verifiers: Iterable[Verifier] = (),
    *,
    origin: str | None = None,
    keyset: KeySet | None = None,
    now: float | None = None,
) -> Evaluation:
    """Opens a signed checkpoint under a witness policy: signed by the log (a key of
    `verifiers` or `keyset`, or a log line of the policy; the origin as in verify_checkpoint,
    a single verifier naming it), and cosigned by witnesses of the policy that make up its
    quorum. A cosignature dated more than MAX_COSIGNATURE_SKEW seconds after `now` (default:
    the clock) does not count. Returns the evaluation with the cosignatures that counted, in
    the policy's order.

    Raises VerificationError when the log's signature fails, or a line by a trusted witness
    does not verify (the note is rejected, as c2sp.org/signed-note says); QuorumNotMet, naming
    who cosigned and who did not, when everything verifies but the quorum is not met.
    """
    given = list(verifiers)
    logs, origin = _with_policy_logs(given, policy, origin)
    cp = verify_checkpoint(note, logs, origin, keyset)
    try:
        ev = policy.evaluate(note, [*given, *(keyset.verifiers() if keyset else ())])
    except CheckpointRefused as e:
        raise VerificationError(f"checkpoint: {e}") from e
    limit = int(time.time() if now is None else now) + MAX_COSIGNATURE_SKEW
    counted = {name: c for name, c in ev.cosigned.items() if c.timestamp <= limit}
    if not policy.satisfied(counted):
        missing = tuple(w.name for w in policy.witnesses if w.name not in counted)
        future = tuple(name for name in ev.cosigned if name not in counted)
        raise QuorumNotMet(cp, tuple(counted), policy.quorum, missing, future)
    return Evaluation(cp, ev.log, counted, True)


def _with_policy_logs(
    verifiers: list[Verifier], policy: Policy, origin: str | None
) -> tuple[list[Verifier], str | None]:
    """The log keys to open a checkpoint with under `policy` (the given ones and the
    policy's log lines), and the origin to require: a single given key still names it."""
    if origin is None and len(verifiers) == 1:
        origin = verifiers[0].name
    return [*verifiers, *(lg.verifier for lg in policy.logs)], origin


def verify_receipt(
    text: str,
    verifiers: Iterable[Verifier],
    origin: str | None = None,
    keyset: KeySet | None = None,
    *,
    policy: Policy | None = None,
    now: float | None = None,
) -> VerifiedReceipt:
    """Checks a tlog-proof receipt: signature, entry format, inclusion at (index, size, root);
    with a `policy`, then also its checkpoint's quorum (verify_witnessed: QuorumNotMet when
    everything else verifies but the witnesses are too few)."""
    verifiers = list(verifiers)
    try:
        r = parse_receipt(text)
    except ReceiptError as e:
        raise MalformedInput(f"receipt: {e}") from e
    if r.extra is None:
        raise MalformedInput("receipt carries no entry (extra line)")
    logs, want = (
        (verifiers, origin) if policy is None else _with_policy_logs(verifiers, policy, origin)
    )
    cp = verify_checkpoint(r.checkpoint, logs, want, keyset)
    try:
        entry = parse_entry(r.extra)
    except EntryError as e:
        raise VerificationError(f"receipt entry: {e}", r.index) from e
    if entry.index != r.index:
        raise VerificationError(f"receipt says index {r.index}, its entry says {entry.index}")
    try:
        merkle.verify_inclusion(r.index, cp.size, merkle.leaf_hash(r.extra), r.proof, cp.root)
    except merkle.ProofError as e:
        raise VerificationError(f"inclusion: {e}", r.index) from e
    witnesses: tuple[str, ...] = ()
    if policy is not None:
        ev = verify_witnessed(
            r.checkpoint, policy, verifiers, origin=origin, keyset=keyset, now=now
        )
        witnesses = tuple(ev.cosigned)
    return VerifiedReceipt(entry, r.extra, cp, r.checkpoint, witnesses)


def verify_submission(entry: Entry, data: bytes, salt: bytes) -> None:
    """Checks that the entry commits to exactly `data` under `salt`."""
    try:
        c = commitment(salt, data)
    except EntryError as e:
        raise MalformedInput(str(e)) from e
    if not hmac.compare_digest(c, entry.commit):
        raise VerificationError(
            "the entry does not commit to these bytes with this salt", entry.index
        )


def verify_consistency(old: Checkpoint, new: Checkpoint, proof: Sequence[bytes]) -> None:
    """Checks that `new` extends `old` (RFC 9162 section 2.1.4.2)."""
    if old.origin != new.origin:
        raise VerificationError(f"checkpoints of different logs: {old.origin!r}, {new.origin!r}")
    if old.size == 0:
        return  # every tree extends the empty one; there is nothing to prove
    try:
        merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
    except merkle.ProofError as e:
        raise VerificationError(f"consistency {old.size} -> {new.size}: {e}") from e
