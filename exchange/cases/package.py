"""Building a case package: the evidence of a patient's case as one ZIP a mediator, or a court
abroad, can check offline with only the log's key.

The inputs are plain values: the caller (the service's export) reads them from its store and
chooses the checkpoint; this package only assembles and checks them. Every receipt is made
against that one checkpoint, so one signature and one tree cover the whole case, and a
consistency proof ties it to the newest checkpoint, whose witness cosignatures (when it has
them) show the tree was not forked for this package. The same inputs give the same bytes.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from ledger.checkpoint import CheckpointError, parse_checkpoint
from ledger.entry import SALT_SIZE, Entry, EntryError, commitment, parse_entry
from ledger.errors import LedgerError
from ledger.note import NoteError
from ledger.note import split as split_note
from ledger.receipt import ReceiptError, parse_receipt
from ledger.untrusted import InputRejected, read_json

from . import layout
from .archive import write_zip
from .attestation import AttestationError, verify_attestation
from .errors import CaseBuildError
from .layout import CaseMeta, Committed, DocumentMeta


class ProofSource(Protocol):
    """Where receipts and proofs come from: a ledger.log.Log is one."""

    def receipt_at(self, index: int, note: str) -> str:
        """A receipt of entry `index` against the checkpoint `note` (given verbatim)."""
        ...

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]: ...


@dataclass(frozen=True)
class Document:
    """A stored Bundle: the exact submitted bytes, the salt of its commitment, its id and
    version, its kind, the date of the treatment it records and its ledger entry."""

    bundle_id: str
    version: int
    kind: str
    treatment_date: date
    index: int
    salt: bytes
    data: bytes


@dataclass(frozen=True)
class Recorded:
    """A committed document that is not a Bundle: a registry attestation (`kind=institution`)
    or an access entry's AuditEvent (`kind=access`), by ledger index, with its salt and its
    exact stored bytes."""

    index: int
    salt: bytes
    data: bytes


@dataclass(frozen=True)
class Case:
    """Everything a package holds.

    `checkpoint` is the signed checkpoint every receipt is made against (it must cover every
    entry named here); `latest` the newest one, verbatim with any cosignature lines (it may be
    the same). `subjects` are the patient's pseudonyms as the entries carry them.
    `attestations` are registry attestations; the package keeps, per treatment date and
    institution, the last one recorded on or before that date (registry_as_of). `disclosures`
    are the patient's access entries in the period.
    """

    checkpoint: str
    latest: str
    subjects: Sequence[bytes]
    documents: Sequence[Document]
    attestations: Sequence[Recorded] = ()
    disclosures: Sequence[Recorded] = ()
    period_from: date | None = None
    period_to: date | None = None


def build_package(case: Case, source: ProofSource) -> bytes:
    """The case package ZIP. CaseBuildError when the inputs contradict each other or the
    log; a package is never built from data that would not verify."""
    cp, latest = _checkpoint(case.checkpoint), _checkpoint(case.latest)
    if cp[0] != latest[0] or latest[1] < cp[1]:
        raise CaseBuildError("the newest checkpoint is not a later one of the same log")
    if not case.documents:
        raise CaseBuildError("a case package needs at least one document")
    members: dict[str, bytes] = {
        layout.CHECKPOINT: case.checkpoint.encode(),
        layout.LATEST: case.latest.encode(),
    }
    hashes = [] if cp[1] == latest[1] else source.consistency_proof(cp[1], latest[1])
    members[layout.CONSISTENCY] = layout.render_json(
        {
            "size1": cp[1],
            "size2": latest[1],
            "hashes": [base64.b64encode(h).decode() for h in hashes],
        }
    )
    subjects = {s.hex() for s in case.subjects}

    def add(base: str, index: int, salt: bytes, data: bytes, kind: str | None) -> Entry:
        receipt, entry = _receipt(source, index, case.checkpoint, cp[1])
        if kind is not None and entry.kind != kind:
            raise CaseBuildError(f"entry {index} is of kind {entry.kind!r}, not {kind!r}")
        if len(salt) != SALT_SIZE or commitment(salt, data) != entry.commit:
            raise CaseBuildError(f"entry {index} does not commit to these bytes and salt")
        members[base + ".json"] = data
        members[base + ".salt"] = salt_text(salt)
        members[base + ".tlog-proof"] = receipt.encode()
        return entry

    docs = []
    for d in sorted(case.documents, key=lambda d: d.index):
        if not layout.BUNDLE_ID.fullmatch(d.bundle_id) or not 1 <= d.version < 10**9:
            raise CaseBuildError(f"Bundle id {d.bundle_id!r} version {d.version} is not usable")
        base = layout.bundle_base(d.bundle_id, d.version)
        if base + ".json" in members:
            raise CaseBuildError(f"Bundle {d.bundle_id} version {d.version} is given twice")
        entry = add(base, d.index, d.salt, d.data, d.kind)
        if entry.subject is not None and entry.subject.hex() not in subjects:
            raise CaseBuildError(f"entry {d.index} is about another patient")
        docs.append(
            DocumentMeta(
                d.bundle_id,
                d.version,
                d.kind,
                d.treatment_date.isoformat(),
                d.index,
                entry.sender,
                entry.time,
            )  # fmt: skip
        )
    days = sorted({d.treatment_date for d in docs})

    candidates = []
    for a in case.attestations:
        try:
            att = verify_attestation(a.data)
        except AttestationError as e:
            raise CaseBuildError(f"attestation of entry {a.index}: {e}") from e
        entry = _receipt(source, a.index, case.checkpoint, cp[1])[1]
        if entry.kind != "institution" or entry.sender != att.org:
            raise CaseBuildError(f"entry {a.index} is not the registry entry of {att.org}")
        candidates.append(Committed(a.index, entry.time, entry.sender, att.value))
    kept: set[int] = set()
    snapshots = {}
    for day in days:
        snap = layout.registry_snapshot(day, candidates)
        snapshots[day] = snap
        kept |= {int(r["ledger_index"]) for r in snap["institutions"]}
    attested = []
    for a in case.attestations:
        if a.index in kept and a.index not in attested:
            add(layout.attestation_base(a.index), a.index, a.salt, a.data, "institution")
            attested.append(a.index)

    events = []
    for r in sorted(case.disclosures, key=lambda r: r.index):
        entry = add(layout.access_base(r.index), r.index, r.salt, r.data, "access")
        try:
            value = read_json(r.data, layout.MAX_DOCUMENT_JSON_BYTES)
        except InputRejected as e:
            raise CaseBuildError(f"access entry {r.index}: AuditEvent is not JSON: {e}") from e
        events.append(Committed(r.index, entry.time, entry.sender, value))

    meta = CaseMeta(
        origin=cp[0],
        checkpoint_size=cp[1],
        latest_size=latest[1],
        subjects=tuple(sorted(subjects)),
        period_from=None if case.period_from is None else case.period_from.isoformat(),
        period_to=None if case.period_to is None else case.period_to.isoformat(),
        documents=tuple(docs),
        registry_dates=tuple(days),
        attestations=tuple(sorted(attested)),
        accounting=tuple(e.index for e in events),
    )
    for day, snap in snapshots.items():
        members[layout.registry_member(day)] = layout.render_json(snap)
    accounting_value = layout.accounting(meta, events)
    members[layout.ACCOUNTING] = layout.render_json(accounting_value)
    members[layout.INDEX] = layout.index_html(meta, snapshots, accounting_value)
    members[layout.MANIFEST] = layout.manifest_bytes(meta, members)
    return write_zip(members)


def salt_text(salt: bytes) -> bytes:
    """A salt member: the base64 of the 32 bytes and a newline."""
    return base64.b64encode(salt) + b"\n"


def _checkpoint(note: str) -> tuple[str, int]:
    try:
        cp = parse_checkpoint(split_note(note)[0])
    except (NoteError, CheckpointError) as e:
        raise CaseBuildError(f"not a signed checkpoint: {e}") from e
    return cp.origin, cp.size


def _receipt(source: ProofSource, index: int, note: str, size: int) -> tuple[str, Entry]:
    if not 0 <= index < size:
        raise CaseBuildError(f"entry {index} is not in the checkpoint of size {size}")
    try:
        receipt = source.receipt_at(index, note)
        return receipt, parse_entry(parse_receipt(receipt).extra or b"")
    except (LedgerError, ReceiptError, EntryError, ValueError) as e:
        raise CaseBuildError(f"entry {index}: no receipt: {e}") from e
