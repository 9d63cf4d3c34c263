"""Access entries: every disclosure of patient data, and every refusal, on the ledger.

A request that reads, searches, exports or transforms patient data (or is refused such data)
appends one ledger entry of kind `access` per patient it concerns (BALP: one AuditEvent per
patient, so each lands in that patient's accounting), or one naming no patient when it
concerns none. Its stored document is a FHIR R4 AuditEvent shaped after the IHE Basic Audit
Log Patterns (BALP) profiles, in the same transaction as the entry, so neither exists without
the other.

No PHI leaves into the entry or the AuditEvent: the patient appears only as the keyed pseudonym
`subject` the ledger already uses (exchange.vault.lookup_tag), the client by its client id and
organisation. Whom data concerns is read from the Bundles it comes from
(exchange.bundles.read.bundle_patients): a Bundle is about the patient its own entry names
(its first Patient.identifier), and it names further patients too: the same person's other
identifiers, each a patient key of its own, or another person (a baby beside its mother). So
the rule is:
one entry per patient a disclosed Bundle's entry names, as its subject, whose AuditEvent also
names every further patient those Bundles name, each indexed in `access_event_subjects`. The
accounting of disclosures (GET /v1/patients/{id}/disclosures) is a query by the patient's
pseudonyms over both, so every disclosure is in the accounting of every patient the disclosed
data names.

Actions (the `action` argument):

- `read`: one resource (or Bundle) returned by id.
- `search`: a searchset returned.
- `export`: a Bulk Data export file set produced or downloaded.
- `transform`: data converted for a recipient (derived or cross-border views).
- `denied`: the request was refused patient data (no consent, wrong purpose, wrong party).

Outcomes follow AuditEvent.outcome (R4 ValueSet audit-event-outcome): `0` success, `4` minor
failure (a refusal by policy), `8` serious failure, `12` major failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from fhir.resources.R4B.auditevent import AuditEvent
from sqlalchemy import (
    Connection,
    Engine,
    func,
    insert,
    select,
    union,
)

from exchange.identity.clients import Client
from exchange.store.tables import access_subjects_table, access_table
from ledger.entry import SALT_SIZE, Entry, commitment
from ledger.log import Log, Submission

ACCESS_KIND = "access"
ACTIONS = frozenset({"read", "search", "export", "transform", "denied"})
OUTCOMES = frozenset({"0", "4", "8", "12"})

# The systems of the codes below (BALP 1.1, section "Basic AuditEvent pattern").
_AUDIT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
_RESTFUL = "http://hl7.org/fhir/restful-interaction"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition"
# The pseudonym's identifier system: a project URI, not an identifier of the patient.
PSEUDONYM_SYSTEM = "urn:medledger:pseudonym"
CLIENT_SYSTEM = "urn:medledger:client"
ORG_SYSTEM = "urn:medledger:org"

# AuditEvent.subtype per action: the FHIR RESTful interaction (or the export operation).
_SUBTYPES = {
    "read": (_RESTFUL, "read"),
    "search": (_RESTFUL, "search-type"),
    "export": (_RESTFUL, "operation"),
    "transform": (_RESTFUL, "operation"),
    "denied": (_RESTFUL, "search-type"),
}
# AuditEvent.action (R4 audit-event-action): R read, E execute.
_ACTION_CODES = {"read": "R", "search": "E", "export": "E", "transform": "E", "denied": "E"}


class AccessError(ValueError):
    """An access entry was asked for with an unknown action or outcome (a programming error)."""


@dataclass(frozen=True)
class AccessRow:
    index: int
    client_id: str
    org: str | None
    role: str
    action: str
    resource_type: str
    purpose: str | None
    outcome: str
    recorded: datetime
    salt: bytes
    data: bytes


def _coding(system: str, code: str) -> dict[str, str]:
    return {"system": system, "code": code}


def audit_event(
    client: Client,
    *,
    action: str,
    resource_type: str,
    patient_subject: bytes | None,
    purpose: str | None,
    outcome: str,
    recorded: str,
    detail: str | None = None,
    other_subjects: Sequence[bytes] = (),
    recipient: str | None = None,
) -> dict[str, object]:
    """The BALP-shaped AuditEvent of one access (PrivacyDisclosure when data was disclosed).

    BALP 1.1 "Basic Audit Log Patterns": the RESTful interaction as `subtype`, the client as
    the requesting agent, purpose of use on the agent, the patient (and each other patient the
    data names) as an entity of role 1 (Patient) identified by pseudonym only, the disclosed
    data as an entity of role 4 (Domain resource) by type. A disclosure (outcome 0 of a
    read/search/export/transform) also carries the PrivacyDisclosure profile and DICOM 110106
    "Export" as its type. `recipient` is the name a requester without a client of its own
    gave (whoever opens a SMART Health Link names themselves): the agent's name, as given.
    """
    disclosed = action != "denied" and outcome == "0"
    subtype = _SUBTYPES[action]
    agent: dict[str, object] = {
        "type": {"coding": [_coding(_PARTICIPATION, "IRCP" if disclosed else "CST")]},
        "who": {"identifier": {"system": CLIENT_SYSTEM, "value": client.client_id}},
        "requestor": True,
    }
    if client.org is not None:
        agent["name"] = client.org
    if recipient is not None:
        agent["name"] = recipient
    if purpose is not None:
        agent["purposeOfUse"] = [{"coding": [_coding(_ACT_REASON, purpose)]}]
    entities: list[dict[str, object]] = [
        {
            "type": {"system": _ENTITY_TYPE, "code": "2"},
            "role": {"system": _OBJECT_ROLE, "code": "4"},
            "what": {"type": resource_type},
            "description": detail if detail is not None else f"{resource_type} {action}",
        }
    ]
    patients = [] if patient_subject is None else [patient_subject, *other_subjects]
    entities[:0] = [
        {
            "type": {"system": _ENTITY_TYPE, "code": "1"},
            "role": {"system": _OBJECT_ROLE, "code": "1"},
            "what": {"identifier": {"system": PSEUDONYM_SYSTEM, "value": subject.hex()}},
        }
        for subject in patients
    ]
    profile = [f"{_BALP}/IHE.BasicAudit." + ("PrivacyDisclosure" if disclosed else "Query")]
    return {
        "resourceType": "AuditEvent",
        "id": str(uuid.uuid4()),
        "meta": {"profile": profile},
        "type": _coding(_DCM, "110106") if disclosed else _coding(_AUDIT_TYPE, "rest"),
        "subtype": [_coding(*subtype)],
        "action": _ACTION_CODES[action],
        "recorded": recorded,
        "outcome": outcome,
        "agent": [agent],
        "source": {
            "observer": {"display": "medledger exchange"},
            "type": [_coding("http://terminology.hl7.org/CodeSystem/security-source-type", "4")],
        },
        "entity": entities,
    }


def _check(action: str, outcome: str) -> None:
    if action not in ACTIONS:
        raise AccessError(f"unknown access action {action!r}; one of {sorted(ACTIONS)}")
    if outcome not in OUTCOMES:
        raise AccessError(f"unknown AuditEvent outcome {outcome!r}; one of {sorted(OUTCOMES)}")


def _submission(
    client: Client,
    *,
    action: str,
    resource_type: str,
    patient_subject: bytes | None,
    purpose: str | None,
    outcome: str,
    detail: str | None,
    other_subjects: Sequence[bytes],
    recipient: str | None = None,
) -> Submission:
    """The ledger submission of one access; its AuditEvent is built with the entry's time."""
    _check(action, outcome)
    others = _others(patient_subject, other_subjects)
    salt = os.urandom(SALT_SIZE)
    # The entry's time is known only inside the writer, but the commitment is made before:
    # so the AuditEvent carries its own `recorded` (the time of the request), and the stored
    # bytes are exactly those committed to.
    recorded = datetime.now().astimezone().isoformat(timespec="milliseconds")
    event = audit_event(
        client,
        action=action,
        resource_type=resource_type,
        patient_subject=patient_subject,
        purpose=purpose,
        outcome=outcome,
        recorded=recorded,
        detail=detail,
        other_subjects=others,
        recipient=recipient,
    )
    AuditEvent.model_validate(event)  # shaped as R4 requires, or not recorded at all
    data = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()

    def write(conn: Connection, entry: Entry) -> None:
        conn.execute(
            insert(access_table),
            {
                "idx": entry.index,
                "client_id": client.client_id,
                "org": client.org,
                "role": client.role,
                "action": action,
                "resource_type": resource_type,
                "subject": patient_subject,
                "purpose": purpose,
                "outcome": outcome,
                "recorded": datetime.fromisoformat(recorded),
                "salt": salt,
                "data": data,
            },
        )
        if others:
            conn.execute(
                insert(access_subjects_table),
                [{"idx": entry.index, "subject": subject} for subject in others],
            )

    return Submission(
        kind=ACCESS_KIND,
        sender=client.org or client.client_id,
        commit=commitment(salt, data),
        subject=patient_subject,
        write=write,
    )


def _one(subject: bytes | None, others: Sequence[bytes]) -> dict[bytes, Sequence[bytes]]:
    """The patients of an access about `subject` (none: an entry naming no patient)."""
    return {} if subject is None else {subject: others}


async def record_access(
    log: Log,
    client: Client,
    *,
    action: str,
    resource_type: str,
    patient_subject: bytes | None,
    purpose: str | None,
    outcome: str,
    detail: str | None = None,
    other_subjects: Sequence[bytes] = (),
) -> int:
    """Appends one `access` entry with its AuditEvent; returns the entry's ledger index.
    `other_subjects` are the further patients the disclosed data names."""
    patients = _one(patient_subject, other_subjects)
    found = await record_access_per_patient(
        log, client, patients, action=action, resource_type=resource_type,
        purpose=purpose, outcome=outcome, detail=detail,
    )  # fmt: skip
    return found[0]


async def record_access_per_patient(
    log: Log,
    client: Client,
    patients: Mapping[bytes, Sequence[bytes]],
    *,
    action: str,
    resource_type: str,
    purpose: str | None,
    outcome: str,
    detail: str | None = None,
    recipient: str | None = None,
) -> list[int]:
    """One `access` entry per patient (subject -> the further patients its data names: see
    the module doc), or one naming none when there are none, submitted together so that the
    log commits them as one batch; returns their ledger indexes. `recipient`: see
    :func:`audit_event`."""
    subs = access_submissions(
        client, patients, action=action, resource_type=resource_type, purpose=purpose,
        outcome=outcome, detail=detail, recipient=recipient,
    )  # fmt: skip
    futures = [asyncio.wrap_future(log.submit(sub)) for sub in subs]
    return [appended.entry.index for appended in await asyncio.gather(*futures)]


def record_access_per_patient_blocking(
    log: Log,
    client: Client,
    patients: Mapping[bytes, Sequence[bytes]],
    *,
    action: str,
    resource_type: str,
    purpose: str | None,
    outcome: str,
    detail: str | None = None,
) -> list[int]:
    """:func:`record_access_per_patient`, for callers outside the event loop (the same
    submissions; this waits for the log's batch in the calling thread)."""
    subs = access_submissions(
        client, patients, action=action, resource_type=resource_type, purpose=purpose,
        outcome=outcome, detail=detail,
    )  # fmt: skip
    futures = [log.submit(sub) for sub in subs]
    return [future.result().entry.index for future in futures]


def record_access_blocking(
    log: Log,
    client: Client,
    *,
    action: str,
    resource_type: str,
    patient_subject: bytes | None,
    purpose: str | None,
    outcome: str,
    detail: str | None = None,
    other_subjects: Sequence[bytes] = (),
) -> int:
    """:func:`record_access`, for callers outside the event loop."""
    patients = _one(patient_subject, other_subjects)
    return record_access_per_patient_blocking(
        log, client, patients, action=action, resource_type=resource_type,
        purpose=purpose, outcome=outcome, detail=detail,
    )[0]  # fmt: skip


def _both(
    first: Callable[[Connection, Entry], None], then: Callable[[Connection, Entry], None] | None
) -> Callable[[Connection, Entry], None]:
    def write(conn: Connection, entry: Entry) -> None:
        first(conn, entry)
        if then is not None:
            then(conn, entry)

    return write


def access_submissions(
    client: Client,
    patients: Mapping[bytes, Sequence[bytes]],
    *,
    action: str,
    resource_type: str,
    purpose: str | None,
    outcome: str,
    detail: str | None = None,
    recipient: str | None = None,
    guard: Callable[[Connection, Entry], None] | None = None,
) -> list[Submission]:
    """The submissions of :func:`record_access_per_patient`, also for a caller that appends
    them beside its own. ``guard`` runs first in each entry's transaction; an error raised
    there appends that entry not (exchange.outbox.worker: only beside the delivery entry it
    accounts for)."""
    each: list[tuple[bytes | None, Sequence[bytes]]] = [*patients.items()] or [(None, ())]
    subs = [
        _submission(
            client,
            action=action,
            resource_type=resource_type,
            patient_subject=subject,
            purpose=purpose,
            outcome=outcome,
            detail=detail,
            other_subjects=others,
            recipient=recipient,
        )
        for subject, others in each
    ]
    if guard is None:
        return subs
    return [replace(sub, write=_both(guard, sub.write)) for sub in subs]


def _row(r: object) -> AccessRow:
    m = r._mapping  # type: ignore[attr-defined]
    return AccessRow(
        m["idx"], m["client_id"], m["org"], m["role"], m["action"], m["resource_type"],
        m["purpose"], m["outcome"], m["recorded"], bytes(m["salt"]), bytes(m["data"]),
    )  # fmt: skip


def _others(subject: bytes | None, others: Sequence[bytes]) -> list[bytes]:
    """The further subjects, without repeats or the subject itself (none without a subject)."""
    if subject is None:
        return []
    return [s for s in dict.fromkeys(others) if s != subject]


def disclosures_of(
    engine: Engine, subjects: bytes | Sequence[bytes], limit: int = 1000
) -> list[AccessRow]:
    """The access entries about any of these pseudonyms of one patient, as the entry's subject
    or as a further patient of its data, oldest first (accounting of disclosures)."""
    wanted = [subjects] if isinstance(subjects, bytes) else list(subjects)
    about = union(
        select(access_table.c.idx).where(access_table.c.subject.in_(wanted)),
        select(access_subjects_table.c.idx).where(access_subjects_table.c.subject.in_(wanted)),
    ).subquery()
    q = (
        select(access_table)
        .where(access_table.c.idx.in_(select(about.c.idx)))
        .order_by(access_table.c.idx)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [_row(r) for r in conn.execute(q)]


def access_count(engine: Engine) -> int:
    """How many access entries are stored (one per recorded request)."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(access_table)).scalar_one())


@dataclass(frozen=True)
class Request:
    """One access entry as an operator reads it: what a client asked, and what it got."""

    index: int
    recorded: datetime  # the AuditEvent's own time of the request, with its offset
    action: str
    resource_type: str
    purpose: str | None
    outcome: str
    detail: str  # the reason recorded: the disclosed data's entity description
    patients: int  # how many patients the entry names (by pseudonym only)


def _request(row: AccessRow) -> Request:
    event = json.loads(row.data)
    detail, patients = "", 0
    for entity in event.get("entity", []):
        role = entity.get("role", {}).get("code")
        if role == "1":
            patients += 1
        elif role == "4":
            detail = entity.get("description", "")
    recorded = datetime.fromisoformat(event["recorded"])
    return Request(
        row.index, recorded, row.action, row.resource_type, row.purpose, row.outcome, detail,
        patients,
    )  # fmt: skip


def requests_of(
    engine: Engine, client_id: str, since: datetime | None = None, limit: int = 1000
) -> list[Request]:
    """The access entries of one client's requests, most recent first: those recorded at or
    after `since` (an aware datetime), at most `limit` of them."""
    q = (
        select(access_table)
        .where(access_table.c.client_id == client_id)
        .order_by(access_table.c.idx.desc())
    )
    found: list[Request] = []
    with engine.connect() as conn:
        for r in conn.execute(q):
            req = _request(_row(r))
            if since is not None and req.recorded < since:
                continue  # concurrent requests may append a moment out of time order
            found.append(req)
            if len(found) >= limit:
                break
    return found
