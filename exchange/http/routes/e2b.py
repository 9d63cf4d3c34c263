"""/fhir/Bundle/{id}/$e2b: one stored adverse-event Bundle as an E2B(R3) ICSR batch.

For the hospital that submitted the Bundle, to send to the product's foreign marketing-
authorisation holder, and for the regulator, which receives a Bundle's report only as it
receives the Bundle in its export (exchange.settlement.regulator): when the patient's newest
consent from the submitting hospital names it for research, now, with a research purpose of
use. A Bundle the caller may not have is answered as absent (404), like any other Bundle read.

Each request that reaches a Bundle appends exactly one access entry: the rendering (action
`transform`, outcome 0) naming the Bundle's patient, or the refusal (`denied`, outcome 4)
naming no one. The ICSR is built from the stored bytes and the clock
(adapters.e2b.icsr_for_bundle); what the Bundle lacks for one (an AdverseEvent, a holder) is
the 422 naming it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Response
from fastapi.concurrency import run_in_threadpool

from adapters.base import AdaptError
from adapters.e2b import icsr_for_bundle
from exchange.bootstrap import Services
from exchange.bundles.read import BundleRow, bundle_by_id, bundle_patients
from exchange.consent.rules import REGULATOR_PURPOSES
from exchange.errors import Forbidden, MedledgerError, NotFound, Unprocessable
from exchange.http.deps import IndexesDep, ServicesDep
from exchange.http.errors import error_responses, status_of
from exchange.http.guards import require_role
from exchange.http.routes.bundles import read_visible
from exchange.http.routes.settlement import fresh_indexes
from exchange.identity.clients import Client
from exchange.indexes.derived import Indexes
from exchange.privacy.access import record_access
from exchange.settlement import regulator
from exchange.vault import Erased

router = APIRouter(prefix="/fhir", tags=["continuity"])

FHIR_ID = r"^[A-Za-z0-9\-.]{1,64}$"
XML = "application/xml"
# A hospital sending an adverse event report does so for public health (v3-ActReason).
HOSPITAL_PURPOSE = "PUBHLTH"


@router.get(
    "/Bundle/{bundle_id}/$e2b",
    summary="One stored adverse-event Bundle as an E2B(R3) ICSR batch (XML)",
    response_class=Response,
    responses={
        200: {"content": {XML: {"schema": {"type": "string"}}}},
        **error_responses(400, 401, 403, 404, 422),
    },
)
async def bundle_e2b(
    bundle_id: Annotated[str, Path(pattern=FHIR_ID)],
    client: Annotated[Client, Depends(require_role("hospital", "regulator", scope="Bundle.r"))],
    services: ServicesDep,
    indexes: IndexesDep,
    purpose_of_use: Annotated[
        str | None,
        Header(
            alias="X-Purpose-Of-Use",
            max_length=32,
            pattern=r"^[A-Z]{2,16}$",
            description="v3-ActReason: a regulator's research purpose (HRESCH or CLINTRCH); "
            "a hospital's is recorded (default PUBHLTH)",
        ),
    ] = None,
) -> Response:
    purpose = client.purpose or purpose_of_use
    if client.role == "hospital":
        purpose = purpose or HOSPITAL_PURPOSE
    # Whole seconds, as the batch's creationTime says: its batch number is derived from it.
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        row = await run_in_threadpool(_readable, services, indexes, client, bundle_id, purpose, now)
        icsr = await run_in_threadpool(lambda: icsr_for_bundle(row.data, now=now))
    except AdaptError as e:
        refusal: MedledgerError = Unprocessable(f"the Bundle cannot be reported as an ICSR: {e}")
        await _denied(services, client, purpose, bundle_id, refusal)
        raise refusal from None
    except MedledgerError as refusal:
        await _denied(services, client, purpose, bundle_id, refusal)
        raise
    subjects = await run_in_threadpool(bundle_patients, services.vault, [row.index])
    first = next(iter(subjects), None)
    others = [s for subject, named in subjects.items() for s in (subject, *named) if s != first]
    await record_access(
        services.log,
        client,
        action="transform",
        resource_type="Bundle",
        patient_subject=first,
        purpose=purpose,
        outcome="0",
        detail=f"E2B(R3) ICSR of Bundle {row.id} version {row.version}, batch "
        f"{icsr.batch_number} to {icsr.receiver}",
        other_subjects=list(dict.fromkeys(others)),
    )
    return Response(icsr.xml, 200, media_type=f"{XML}; charset=utf-8")


def _readable(
    services: Services,
    indexes: Indexes,
    client: Client,
    bundle_id: str,
    purpose: str | None,
    now: datetime,
) -> BundleRow:
    """The Bundle if this client may have its report; NotFound (or Forbidden: no research
    purpose) otherwise."""
    if client.role == "hospital":
        return read_visible(services, client, bundle_id, None, bundle_id)
    if purpose not in REGULATOR_PURPOSES:
        raise Forbidden(
            "a regulator must state a research purpose of use: send X-Purpose-Of-Use "
            f"{' or '.join(sorted(REGULATOR_PURPOSES))}",
        )
    try:
        row = bundle_by_id(services.vault, bundle_id)
    except Erased:
        row = None
    if row is not None:
        fresh_indexes(services, indexes)
        doc = _json(row.data)
        if regulator.research_permits(
            services.vault, row.sender, doc, client.org or "", purpose, now
        ):
            return row
    raise NotFound(f"no Bundle {bundle_id} visible to this client")


def _json(data: bytes) -> dict[str, Any]:
    loaded = json.loads(data)
    return loaded if isinstance(loaded, dict) else {}


async def _denied(
    services: Services,
    client: Client,
    purpose: str | None,
    bundle_id: str,
    refusal: MedledgerError,
) -> None:
    await record_access(
        services.log,
        client,
        action="denied",
        resource_type="Bundle",
        patient_subject=None,
        purpose=purpose,
        outcome="4",
        detail=f"E2B(R3) ICSR of Bundle {bundle_id} refused ({status_of(refusal)})",
    )
