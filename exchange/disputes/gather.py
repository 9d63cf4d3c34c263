"""Gathering one patient's case from the store, and exporting it as a recorded disclosure."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select

from exchange.bundles.read import BundleRow, bundle_patients, bundle_versions
from exchange.cases import Case, CaseBuildError, Document, Recorded, build_package
from exchange.consent.rules import LEGAL, Decision, Request, evaluate
from exchange.errors import Gone, Invalid, NotFound
from exchange.identity.clients import Client
from exchange.indexes.derived import Indexes
from exchange.indexes.patients import bundles_about, patient_index
from exchange.privacy.access import disclosures_of, record_access_per_patient_blocking
from exchange.settlement.index import (
    BundleBytes,
    consents_of,
    settlement_index,
    settlement_keys_index,
)
from exchange.store.tables import attestations_table
from exchange.vault import Vault
from exchange.vault.sealing import lookup_tag
from ledger.checkpoint import parse_checkpoint
from ledger.entry import parse_entry
from ledger.log import Log
from ledger.note import split as split_note

MAX_DISCLOSURES = 100_000
"""Access entries a package carries at most: an accounting longer than this is refused
(narrow the period) rather than cut short."""


@dataclass(frozen=True)
class Period:
    """Treatment dates from `start` to `end`, both included; None is open."""

    start: date | None = None
    end: date | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.end < self.start:
            raise Invalid(f"the period ends ({self.end}) before it starts ({self.start})", "to")

    def holds(self, day: date) -> bool:
        return (self.start is None or self.start <= day) and (self.end is None or day <= self.end)


@dataclass(frozen=True)
class CaseRequest:
    """Whose case: the patient as the hospital `org` submitted them, over `period`."""

    org: str
    patient: tuple[str, str]
    period: Period = Period()


@dataclass(frozen=True)
class ExportedCase:
    """A built package, what it holds, and the access entry recording its export."""

    package: bytes
    documents: int
    disclosures: int
    checkpoint_size: int
    access_entries: list[int]


def gather_case(vault_: Vault, indexes: Indexes, log: Log, req: CaseRequest) -> Case:
    """The case of `req` against the log's current checkpoint: every stored version of the
    org's Bundles naming the patient whose treatment date is in the period, the org's
    registry attestations, and the patient's access entries recorded in the period.

    Raises NotFound when the org holds nothing about the patient (in the period): never
    submitted, or erased (a package built before stays verifiable); Gone when an erasure is
    being carried out."""
    live = vault_.subjects_of(req.org, req.patient)
    indexes.fresh(patient_index(vault_.lookup_key))
    ids = bundles_about(vault_.engine, vault_.lookup_key, req.org, req.patient)
    if not live and not ids:
        # After an erasure nothing leads from the identifier to the patient any more, so an
        # erased patient and one never seen answer alike.
        raise NotFound(
            f"{req.org} holds no record of patient {_who(req)}: never submitted, or erased at "
            "the patient's request (a package built before stays verifiable)",
            "patient",
        )
    if not live:
        raise Gone(f"patient {_who(req)} was erased at their request: no case can be built")
    # The current pseudonym first (the one a new access entry names), then the alias keys',
    # then the lookup tag entries carried before the vault.
    subjects = [*live, lookup_tag(vault_.lookup_key, req.org, req.patient)]
    note = log.checkpoint()
    documents = [
        doc
        for bundle_id in ids
        for row in bundle_versions(vault_, bundle_id)
        if req.period.holds((doc := _document(log, row)).treatment_date)
    ]
    if not documents:
        raise NotFound(f"{req.org} stored no record of patient {_who(req)} in the period", "from")
    rows = disclosures_of(vault_.engine, subjects, MAX_DISCLOSURES + 1)
    if len(rows) > MAX_DISCLOSURES:
        raise Invalid(
            f"the patient's accounting holds over {MAX_DISCLOSURES:,} access entries: "
            "narrow the period",
            "from",
        )
    disclosures = [
        Recorded(r.index, r.salt, r.data) for r in rows if req.period.holds(r.recorded.date())
    ]
    return Case(
        checkpoint=note,
        latest=note,
        subjects=tuple(dict.fromkeys(subjects)),
        documents=sorted(documents, key=lambda d: d.index),
        attestations=_attestations(vault_, req.org),
        disclosures=disclosures,
        period_from=req.period.start,
        period_to=req.period.end,
    )


def export_case(
    vault_: Vault, indexes: Indexes, log: Log, req: CaseRequest, client: Client, purpose: str
) -> ExportedCase:
    """Builds the package of `req` and records its export (action export of Bundles, for
    `purpose`) as access entries about the patient and every other patient its Bundles
    name, before returning it."""
    case = gather_case(vault_, indexes, log, req)
    try:
        package = build_package(case, log)
    except CaseBuildError as e:  # the store and the log disagree: not the caller's input
        raise Gone(f"the case cannot be built from what the log holds: {e}") from e
    # One access entry per patient the package's Bundles name (a mother's Bundle naming her
    # baby discloses the baby's data too), the requested patient's first.
    patients = bundle_patients(vault_, [d.index for d in case.documents])
    patients = {case.subjects[0]: [], **patients}
    indexes_ = record_access_per_patient_blocking(
        log,
        client,
        patients,
        action="export",
        resource_type="Bundle",
        purpose=purpose,
        outcome="0",
        detail="case package",
    )
    size = parse_checkpoint(split_note(case.checkpoint)[0]).size
    return ExportedCase(package, len(case.documents), len(case.disclosures), size, indexes_)


def mediator_decision(
    vault_: Vault, indexes: Indexes, req: CaseRequest, mediator: str, now: datetime
) -> Decision:
    """Whether the patient's current consent (the latest version of each consent Bundle the
    org submitted, evaluated now) permits disclosing their case to organisation `mediator`
    for legal purposes (v3-ActReason HLEGAL)."""
    key = vault_.lookup_key
    indexes.fresh(settlement_index(vault_.engine, key), settlement_keys_index(key))
    rows = consents_of(vault_.engine, req.org, lookup_tag(key, req.org, req.patient))
    reader = BundleBytes(vault_)
    consents = [json.loads(reader.resource(row)) for row in rows]
    ask = Request(org=mediator, purpose="HLEGAL", resource_type="Bundle", now=now)
    return evaluate(consents, ask, LEGAL)


def _who(req: CaseRequest) -> str:
    return f"{req.patient[0]}|{req.patient[1]}"


def _document(log: Log, row: BundleRow) -> Document:
    return Document(
        row.id, row.version, row.kind, _treatment_date(log, row), row.index, row.salt, row.data
    )


def _treatment_date(log: Log, row: BundleRow) -> date:
    """The Bundle's own `timestamp` (the day the record was made, in the hospital's time
    zone as written), else the day its entry was recorded (UTC)."""
    try:
        stamp = json.loads(row.data).get("timestamp")
        if isinstance(stamp, str) and len(stamp) >= 10:
            return date.fromisoformat(stamp[:10])
    except (ValueError, AttributeError):
        pass
    entry = parse_entry(log.entries(row.index, row.index + 1)[0])
    return datetime.fromisoformat(entry.time.replace("Z", "+00:00")).date()


def _attestations(vault_: Vault, org: str) -> Sequence[Recorded]:
    t = attestations_table
    with vault_.engine.connect() as conn:
        found = conn.execute(
            select(t.c.idx, t.c.salt, t.c.data).where(t.c.org == org).order_by(t.c.idx)
        ).all()
    return [Recorded(int(idx), bytes(salt), bytes(data)) for idx, salt, data in found]
