"""`GET /fhir/VerificationResult?target=Organization/{org}|Practitioner/{id}`: how the registry
verified an institution's licence and accreditations, or a practitioner's licences.

One FHIR R4 VerificationResult (section 8.25) per licence and per accreditation of the
institution's current registry record:

- `status`: `validated` while valid today; `req-revalid` once expired or lapsed (it needs
  revalidation; an accreditation lapses as exchange.registry.institutions.lapse_of says, and
  :data:`LAPSE_EXTENSION` gives the day and why); `in-process` before it is valid; `val-fail`
  for everything of a blacklisted institution and for a revoked practitioner licence;
- a practitioner: one per current licence (exchange.registry.practitioners), its category and
  number in :data:`LICENCE_EXTENSION`;
- `validator` and `attestation.who`: the admin who signed the attestation (identifier system
  :data:`ADMIN_SYSTEM`), with the admin's Ed25519 public key as `identityCertificate` and the
  attestation's signature as `attestation.sourceSignature`;
- `attestation.date` / `lastPerformed`: when the attestation was appended to the ledger;
- the extension :data:`LEDGER_ENTRY_EXTENSION`: the attestation's ledger index, whose entry
  commits to the attestation bytes (checked here before answering).

Any authenticated client may read it, as it may read the registry: no personal data.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from exchange.errors import Conflict, NotFound
from exchange.http.deps import ServicesDep
from exchange.http.errors import FHIR_JSON, FhirJSONResponse, error_responses
from exchange.http.guards import require_role
from exchange.http.routes.quality import subject_org
from exchange.http.searchset import minted_full_url, searchset
from exchange.identity.clients import Client
from exchange.registry import institutions, practitioners
from exchange.store.tables import attestations_table, institutions_table
from ledger.entry import commitment, parse_entry
from ledger.log import Log

router = APIRouter(prefix="/fhir", tags=["verification"])

Reader = Annotated[
    Client,
    Depends(
        require_role(
            "hospital", "insurer", "auditor", "regulator", "admin", scope="VerificationResult.s"
        )
    ),
]

ADMIN_SYSTEM = "urn:medledger:institution-admin"
LEDGER_ENTRY_EXTENSION = "urn:medledger:extension:ledger-entry"
LEDGER_INDEX_SYSTEM = "urn:medledger:ledger-index"
ACCREDITATION_EXTENSION = "urn:medledger:extension:accreditation"
# ISO/ASTM E1762-95 signature type "Verification Signature" (FHIR R4 signature-type).
VERIFICATION_SIGNATURE = {"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.5"}
_TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"
LAPSE_EXTENSION = "urn:medledger:extension:accreditation-lapse"
LICENCE_EXTENSION = "urn:medledger:extension:practitioner-licence"
_PRACTITIONER = re.compile(r"Practitioner/([A-Za-z0-9\-.]{1,64})")


@dataclass(frozen=True)
class AttestedRecord:
    """An institution's current record with the signed attestation that set it."""

    index: int
    time: str  # the ledger entry's time (RFC 3339 UTC)
    attestation: institutions.Attestation


def attested_record(log: Log, org: str) -> AttestedRecord | None:
    """The current record of `org` and its attestation, checked against its ledger entry."""
    with log.engine.connect() as conn:
        row = conn.execute(
            select(institutions_table.c.idx).where(institutions_table.c.org == org)
        ).first()
        if row is None:
            return None
        index = int(row[0])
        stored = conn.execute(
            select(attestations_table).where(attestations_table.c.idx == index)
        ).first()
    if stored is None:
        raise institutions.RegistryError(f"entry {index}: no stored attestation")
    entry = parse_entry(log.entries(index, index + 1)[0])
    if commitment(bytes(stored.salt), bytes(stored.data)) != entry.commit:
        raise institutions.RegistryError(
            f"entry {index}: attestation does not match its commitment"
        )
    return AttestedRecord(index, entry.time, institutions.verify_attestation(bytes(stored.data)))


def status_of(valid_from: date, valid_to: date, blacklisted: bool, today: date) -> str:
    """VerificationResult.status (R4 value set verificationresult-status) on `today`."""
    if blacklisted:
        return "val-fail"
    if today > valid_to:
        return "req-revalid"
    if today < valid_from:
        return "in-process"
    return "validated"


def _coding(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": _TERMINOLOGY + system, "code": code}]}


def _common(
    index: int, time: str, admin_id: str, key: bytes, signature: bytes, target: str, now: datetime
) -> dict[str, Any]:
    """What every VerificationResult of one attestation says: its target, signer and entry."""
    admin = {"identifier": {"system": ADMIN_SYSTEM, "value": admin_id}, "display": admin_id}
    key_b64 = base64.b64encode(key).decode("ascii")
    return {
        "resourceType": "VerificationResult",
        "extension": [
            {
                "url": LEDGER_ENTRY_EXTENSION,
                "valueIdentifier": {"system": LEDGER_INDEX_SYSTEM, "value": str(index)},
            }
        ],
        "target": [{"reference": target}],
        "need": _coding("need", "periodic"),
        "statusDate": now.isoformat(),
        "validationType": _coding("validation-type", "primary"),
        "lastPerformed": time,
        "attestation": {
            "who": admin,
            "date": time[:10],
            "sourceIdentityCertificate": key_b64,
            "sourceSignature": {
                "type": [VERIFICATION_SIGNATURE],
                "when": time,
                "who": admin,
                "data": base64.b64encode(signature).decode("ascii"),
            },
        },
        "validator": [{"organization": admin, "identityCertificate": key_b64}],
    }


def verification_results(attested: AttestedRecord, now: datetime) -> list[dict[str, Any]]:
    """The VerificationResults of one attested record: the licence, then each accreditation."""
    att, record = attested.attestation, attested.attestation.record
    common = _common(
        attested.index,
        attested.time,
        att.admin,
        att.key,
        att.signature,
        f"Organization/{record.org}",
        now,
    )
    today = now.date()
    results = [
        {
            **common,
            "id": f"{attested.index}-licence",
            "targetLocation": ["Organization.identifier[0]"],
            "status": status_of(
                record.licence_valid_from, record.licence_valid_to, record.blacklisted, today
            ),
            "nextScheduled": record.licence_valid_to.isoformat(),
        }
    ]
    for n, acc in enumerate(record.accreditations):
        lapse = institutions.lapse_of(acc)
        status = status_of(acc.valid_from, acc.valid_to, record.blacklisted, today)
        if status == "validated" and today >= lapse.on:
            status = "req-revalid"
        lapse_ext = {
            "url": LAPSE_EXTENSION,
            "extension": [
                {"url": "date", "valueDate": lapse.on.isoformat()},
                {"url": "reason", "valueCode": lapse.reason},
            ],
        }
        results.append(
            {
                **common,
                "extension": [*common["extension"], lapse_ext],
                "id": f"{attested.index}-accreditation-{n}",
                "targetLocation": [f"Organization.extension('{ACCREDITATION_EXTENSION}')[{n}]"],
                "status": status,
                "nextScheduled": min(acc.valid_to, lapse.on).isoformat(),
                "primarySource": [
                    {
                        "who": {"display": f"{acc.body} ({acc.scope})"},
                        "type": [_coding("primary-source-type", "auth-source")],
                    }
                ],
            }
        )
    return results


def licence_results(attested: list[practitioners.Attested], now: datetime) -> list[dict[str, Any]]:
    """One VerificationResult per current licence of a practitioner."""
    today = now.date()
    out: list[dict[str, Any]] = []
    for n, a in enumerate(attested):
        lic = a.attestation.licence
        common = _common(
            a.index,
            a.time,
            a.attestation.admin,
            a.attestation.key,
            a.attestation.signature,
            f"Practitioner/{lic.practitioner}",
            now,
        )
        licence_ext = {
            "url": LICENCE_EXTENSION,
            "extension": [
                {"url": "category", "valueCode": lic.category},
                {"url": "number", "valueString": lic.licence_number},
                {"url": "institution", "valueReference": {"reference": f"Organization/{lic.org}"}},
            ],
        }
        out.append(
            {
                **common,
                "extension": [*common["extension"], licence_ext],
                "id": f"{a.index}-practitioner-licence",
                "targetLocation": [f"Practitioner.qualification[{n}]"],
                "status": status_of(lic.valid_from, lic.valid_to, lic.revoked, today),
                "nextScheduled": lic.valid_to.isoformat(),
                "primarySource": [
                    {
                        "who": {"reference": f"Organization/{lic.org}"},
                        "type": [_coding("primary-source-type", "lic-board")],
                    }
                ],
            }
        )
    return out


@router.get(
    "/VerificationResult",
    summary="How the registry verified an institution's or a practitioner's licences",
    response_class=FhirJSONResponse,
    responses={
        200: {
            "content": {FHIR_JSON: {"schema": {"type": "object"}}},
            "description": "FHIR R4 searchset Bundle of VerificationResults",
        },
        **error_responses(400, 401, 403, 404),
    },
)
async def search_verification_results(
    request: Request,
    _client: Reader,
    services: ServicesDep,
    target: Annotated[
        str,
        Query(
            max_length=80,
            description="Organization/<id> (the institution) or Practitioner/<id>",
        ),
    ],
) -> FhirJSONResponse:
    practitioner = _PRACTITIONER.fullmatch(target)
    now = datetime.now(UTC)
    if practitioner is not None:
        who = practitioner.group(1)
        try:
            licences = await run_in_threadpool(practitioners.attested_licences, services.log, who)
        except institutions.RegistryError as e:
            raise Conflict(f"the licences of {who} do not match the ledger: {e}") from None
        if not licences:
            raise NotFound(f"no practitioner {who!r} in the registry", "target")
        return _answer(request, licence_results(licences, now))
    org = subject_org(target, "target")
    try:
        attested = await run_in_threadpool(attested_record, services.log, org)
    except institutions.RegistryError as e:
        raise Conflict(f"the registry record of {org} does not match the ledger: {e}") from None
    if attested is None:
        raise NotFound(f"no institution {org!r} in the registry", "target")
    return _answer(request, verification_results(attested, now))


def _answer(request: Request, results: list[dict[str, Any]]) -> FhirJSONResponse:
    entries = [
        {"fullUrl": minted_full_url("VerificationResult", str(r["id"])), "resource": r}
        for r in results
    ]
    return FhirJSONResponse(searchset(request, entries))
