"""Continuity of care: a patient's IPS and HL7 v2.5.1 messages, built from what was submitted.

For the hospital that treated the patient, to hand to the patient's home-country systems:
`GET /fhir/Patient/$summary?identifier=system|value` (the IPS `$summary` operation at type
level, FHIR IPS IG 1.1 "Patient/$summary") builds one IPS document from the hospital's Bundles
of that patient that have something for it (adapters.ips.contributes), whatever their kind
(exchange.sharing.links.summary_sources, the Bundles a SMART Health Link's summary is of too);
`GET /fhir/Bundle/{id}/$hl7v2?message=ORU_R01` renders one stored Bundle as an HL7 v2.5.1
message (ER7). The adapters are pure; this layer chooses the Bundles, the clock and the ids,
and records each export as an access entry on the ledger (:mod:`exchange.privacy.access`),
like every other disclosure of a patient's data.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from fastapi.concurrency import run_in_threadpool

from adapters.base import AdaptError
from adapters.hl7v2 import build_message
from adapters.ips import build_ips
from adapters.ips_json import dumps
from exchange.bootstrap import Services
from exchange.bundles.read import bundle_patients
from exchange.errors import Invalid, NotFound, Unprocessable
from exchange.http.deps import IndexesDep, ServicesDep
from exchange.http.errors import FHIR_JSON, FHIR_JSON_UTF8, error_responses
from exchange.http.guards import require_role
from exchange.http.routes.bundles import read_visible
from exchange.identity.clients import Client
from exchange.indexes.derived import Indexes
from exchange.privacy.access import record_access_per_patient
from exchange.sharing import links

router = APIRouter(prefix="/fhir", tags=["continuity"])

FHIR_ID = r"^[A-Za-z0-9\-.]{1,64}$"
ER7 = "x-application/hl7-v2+er7"
Message = Literal["ADT_A08", "ORU_R01", "MDM_T02", "RDS_O13"]
# A hospital handing a patient's record on does so for their treatment unless it says otherwise.
DEFAULT_PURPOSE = "TREAT"
PurposeHeader = Annotated[
    str | None,
    Header(
        alias="X-Purpose-Of-Use",
        max_length=32,
        pattern=r"^[A-Z]{2,16}$",
        description="v3-ActReason code recorded on the access entry (default TREAT)",
    ),
]


def purpose(client: Client, header: str | None) -> str:
    """The purpose of use recorded for this export: the token's, the header's, or TREAT."""
    return client.purpose or header or DEFAULT_PURPOSE


def parse_token(value: str, name: str) -> tuple[str, str]:
    """A FHIR token search value `system|value`, both parts required."""
    system, bar, code = value.partition("|")
    if not bar or not system or not code:
        raise Invalid(
            f"{name} must be system|value (e.g. urn:oid:2.16.156.1|MRN-1): the patient is "
            "matched by the identifier the hospital submitted",
            name,
            code="value",
        )
    return system, code


def patient_bundles(
    services: Services, indexes: Indexes, sender: str, patient: tuple[str, str]
) -> tuple[list[bytes], dict[bytes, list[bytes]]]:
    """The Bundles a summary of the patient is built from (exchange.sharing.links
    .summary_sources, as a link's summary is), and the patients those Bundles name, as their
    access entries name them (exchange.privacy.access)."""
    rows = links.summary_sources(services.vault, indexes, services.pseudonym_key, sender, patient)
    return [row.data for row in rows], bundle_patients(services.vault, [r.index for r in rows])


def _unprocessable(e: AdaptError) -> Unprocessable:
    return Unprocessable(f"the stored Bundles cannot be adapted: {e}")


@router.get(
    "/Patient/$summary",
    summary="The patient's International Patient Summary (IPS document Bundle)",
    response_class=Response,
    responses={
        200: {"content": {FHIR_JSON: {"schema": {"type": "object"}}}},
        **error_responses(400, 401, 403, 404, 422),
    },
)
async def patient_summary(
    client: Annotated[Client, Depends(require_role("hospital", scope="Patient.r"))],
    services: ServicesDep,
    indexes: IndexesDep,
    identifier: Annotated[
        str, Query(max_length=512, description="the patient's identifier: system|value")
    ],
    language: Annotated[
        str | None, Query(max_length=16, description="the translation to add, e.g. en, ko")
    ] = None,
    purpose_of_use: PurposeHeader = None,
) -> Response:
    assert client.org is not None  # a hospital client always has its org
    patient = parse_token(identifier, "identifier")
    bundles, subjects = await run_in_threadpool(
        patient_bundles, services, indexes, client.org, patient
    )
    if not bundles:
        raise NotFound("this hospital submitted no clinical Bundle about that patient")
    docs = [json.loads(b) for b in bundles]
    try:
        ips = await run_in_threadpool(
            lambda: build_ips(
                docs, now=datetime.now(UTC), document_id=str(uuid.uuid4()), language=language
            )
        )
    except AdaptError as e:
        raise _unprocessable(e) from None
    body = dumps(ips)
    await record_access_per_patient(
        services.log,
        client,
        subjects,
        action="transform",
        resource_type="Bundle",
        purpose=purpose(client, purpose_of_use),
        outcome="0",
        detail="IPS $summary",
    )
    return Response(body, 200, media_type=FHIR_JSON_UTF8)


@router.get(
    "/Bundle/{bundle_id}/$hl7v2",
    summary="One stored Bundle as an HL7 v2.5.1 message (ER7, UTF-8)",
    response_class=Response,
    responses={
        200: {"content": {ER7: {"schema": {"type": "string"}}}},
        **error_responses(400, 401, 403, 404, 422),
    },
)
async def bundle_hl7v2(
    bundle_id: Annotated[str, Path(pattern=FHIR_ID)],
    client: Annotated[Client, Depends(require_role("hospital", "admin", scope="Bundle.r"))],
    services: ServicesDep,
    message: Annotated[Message, Query(description="the message to build")] = "ORU_R01",
    purpose_of_use: PurposeHeader = None,
) -> Response:
    row = await run_in_threadpool(read_visible, services, client, bundle_id, None, bundle_id)
    control_id = uuid.uuid4().hex[:20]
    try:
        text = await run_in_threadpool(
            lambda: build_message(
                [json.loads(row.data)], message, now=datetime.now(UTC), control_id=control_id
            )
        )
    except AdaptError as e:
        raise _unprocessable(e) from None
    subjects = await run_in_threadpool(bundle_patients, services.vault, [row.index])
    await record_access_per_patient(
        services.log,
        client,
        subjects,
        action="transform",
        resource_type="Bundle",
        purpose=purpose(client, purpose_of_use),
        outcome="0",
        detail=f"HL7 v2.5.1 {message}",
    )
    return Response((text + "\r").encode(), 200, media_type=f"{ER7}; charset=utf-8")
