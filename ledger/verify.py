"""Offline verification: checkpoints, receipts, submissions and consistency between checkpoints.

Trust comes only from the verifier keys given. Rules taken from the anchors' failures:
always bind (index, size, root) together; refuse index >= size and size-0 consistency
proofs; never trust metadata carried inside a proof; unknown signers are ignored.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import merkle
from .checkpoint import Checkpoint, CheckpointError, parse_checkpoint
from .entry import Entry, EntryError, commitment, parse_entry
from .keyset import KeyRuleError, KeySet
from .note import NoteError, Verifier, open_note
from .receipt import ReceiptError, parse_receipt


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


def verify_receipt(
    text: str,
    verifiers: Iterable[Verifier],
    origin: str | None = None,
    keyset: KeySet | None = None,
) -> VerifiedReceipt:
    """Checks a tlog-proof receipt: signature, entry format, inclusion at (index, size, root)."""
    try:
        r = parse_receipt(text)
    except ReceiptError as e:
        raise MalformedInput(f"receipt: {e}") from e
    if r.extra is None:
        raise MalformedInput("receipt carries no entry (extra line)")
    cp = verify_checkpoint(r.checkpoint, verifiers, origin, keyset)
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
    return VerifiedReceipt(entry, r.extra, cp, r.checkpoint)


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
