"""`POST /v1/cases`: a mediator's case package for one patient, under the patient's consent.

A mediation committee or an arbitrator (role `mediator`) asks for the case of a patient as a
hospital submitted them. The patient's current consent must name the mediator's organisation
for legal purposes (v3-ActReason HLEGAL), evaluated when the package is built, which is when
the data leaves. The export is an access entry about each patient the package names; a
refusal is an access entry (`denied`) about the patient. docs/disputes.md.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from exchange.disputes import CaseRequest, Period, export_case, mediator_decision
from exchange.errors import Forbidden, Invalid
from exchange.http.deps import IndexesDep, ServicesDep
from exchange.http.errors import error_responses
from exchange.http.guards import require_role
from exchange.identity.clients import Client
from exchange.privacy.access import record_access

router = APIRouter(prefix="/v1", tags=["cases"])
ZIP = "application/zip"
PURPOSE = "HLEGAL"


class CaseAsk(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    patient: str = Field(
        max_length=512, description="the patient identifier the hospital submitted: system|value"
    )
    org: str = Field(max_length=64, description="the hospital that submitted the patient")
    start: date | None = Field(None, alias="from", description="first treatment date")
    end: date | None = Field(None, alias="to", description="last treatment date")


@router.post(
    "/cases",
    summary="A patient's case package (ZIP) for a mediator the patient's consent names",
    response_class=Response,
    responses={
        200: {
            "description": "the case package; verify it with `medledger case verify`",
            "content": {ZIP: {"schema": {"type": "string", "format": "binary"}}},
        },
        **error_responses(400, 401, 403, 404, 422),
    },
)
async def case_package(
    client: Annotated[Client, Depends(require_role("mediator", scope="Bundle.r"))],
    services: ServicesDep,
    indexes: IndexesDep,
    ask: CaseAsk,
) -> Response:
    system, bar, value = ask.patient.partition("|")
    if not bar or not system or not value:
        raise Invalid("patient must be system|value, both parts required", "patient")
    req = CaseRequest(ask.org, (system, value), Period(ask.start, ask.end))
    decision = await run_in_threadpool(
        mediator_decision, services.vault, indexes, req, client.org or "", datetime.now(UTC)
    )
    if not decision.permit:
        subjects = await run_in_threadpool(services.vault.subjects_of, req.org, req.patient)
        await record_access(
            services.log,
            client,
            action="denied",
            resource_type="Bundle",
            patient_subject=subjects[0] if subjects else None,
            purpose=PURPOSE,
            outcome="4",
            detail=f"case package refused: {decision.reason}",
        )
        raise Forbidden(
            f"the patient's consent does not permit this case to {client.org} for legal "
            f"purposes ({decision.reason})"
        )
    done = await run_in_threadpool(
        export_case, services.vault, indexes, services.log, req, client, PURPOSE
    )
    return Response(
        done.package,
        media_type=ZIP,
        headers={"Content-Disposition": 'attachment; filename="case.zip"'},
    )
