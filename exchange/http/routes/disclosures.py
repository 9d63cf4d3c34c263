"""/v1/patients/{value}/disclosures: a hospital's accounting of disclosures for its patient.

HIPAA 45 CFR 164.528 and GDPR article 15(1)(c) give a patient the list of recipients their data
went to; PIPL article 45 the same. The patient is named as the hospital submitted them (the
identifier value in the path, `/` in it escaped as %2F, its system as a query parameter; any
spelling of it: exchange.identifiers); the exchange turns that into the keyed pseudonyms its
ledger entries carry and answers every `access` entry about the patient (as its subject, or as
another patient the disclosed Bundles name), as a FHIR searchset Bundle of the stored
AuditEvents (byte for byte the documents the ledger commits to, with their ledger index as the
entry's fullUrl).
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from exchange.http.deps import ServicesDep
from exchange.http.errors import FHIR_JSON, FHIR_JSON_UTF8, error_responses
from exchange.http.guards import require_role
from exchange.http.searchset import self_url
from exchange.identity.clients import Client
from exchange.privacy.access import disclosures_of
from exchange.vault import lookup_tag

router = APIRouter(prefix="/v1/patients", tags=["disclosures"])

MAX_ENTRIES = 1000


def searchset(documents: list[tuple[int, bytes]], self_link: str) -> bytes:
    """A searchset Bundle around stored AuditEvents, without re-serialising them."""
    entries = b",".join(
        b'{"fullUrl":"urn:medledger:entry:' + str(index).encode() + b'","resource":' + data
        + b',"search":{"mode":"match"}}'
        for index, data in documents
    )  # fmt: skip
    head = b'{"resourceType":"Bundle","type":"searchset","total":' + str(len(documents)).encode()
    link = json.dumps([{"relation": "self", "url": self_link}], separators=(",", ":"))
    return head + b',"link":' + link.encode() + b',"entry":[' + entries + b"]}"


# `:path`: an identifier value may hold a `/` (sent as %2F, which the server decodes before
# routing), as in "2024/0042"; the rest of the route is fixed, so the match is unambiguous.
@router.get(
    "/{value:path}/disclosures",
    summary="Accounting of disclosures: every access entry about one of the hospital's patients",
    response_class=Response,
    responses={
        200: {"content": {FHIR_JSON: {"schema": {"type": "object"}}}},
        **error_responses(400, 401, 403, 422),
    },
)
async def patient_disclosures(
    request: Request,
    client: Annotated[Client, Depends(require_role("hospital", scope="AuditEvent.s"))],
    services: ServicesDep,
    value: Annotated[
        str, Path(min_length=1, max_length=256, description="the patient identifier's value")
    ],
    system: Annotated[
        str,
        Query(min_length=1, max_length=256, description="the patient identifier's system"),
    ],
) -> Response:
    assert client.org is not None  # a hospital client always has its org
    # The pseudonym is keyed by the submitting hospital: another hospital's patient of the same
    # identifier is another pseudonym, so a hospital only ever sees its own patients' accounting.
    # Entries carry the patient's vault pseudonyms (its key's, and its alias keys'); entries
    # made before the vault carry the lookup tag (pseudonym()), which was the subject then:
    # all are the patient's.
    patient = (system, value)
    subjects = [lookup_tag(services.pseudonym_key, client.org, patient)]
    subjects += await run_in_threadpool(services.vault.subjects_of, client.org, patient)
    rows = await run_in_threadpool(disclosures_of, services.engine, subjects, MAX_ENTRIES)
    body = searchset([(row.index, row.data) for row in rows], self_url(request))
    return Response(body, media_type=FHIR_JSON_UTF8)
