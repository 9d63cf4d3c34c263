"""/v1/trace/rwd-export: a regulator's NDJSON of one product's RWD Bundles, under consent.

Consent is evaluated when the request is answered, which is when the data leaves
(exchange/regulator.py). An export that discloses patients appends one access entry
(`export`) per patient disclosed, naming that patient's pseudonym, so each is in the
patient's accounting of disclosures; one that discloses nothing, or is refused, appends one
entry naming no patient (`denied`, or `export` when the product was used by no one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.concurrency import run_in_threadpool

from adapters.trace_index import RecallQuery, RecallQueryError, recall_query
from exchange.bootstrap import Services
from exchange.consent.rules import REGULATOR_PURPOSES
from exchange.errors import Forbidden, Invalid, MedledgerError
from exchange.http.deps import IndexesDep, ServicesDep
from exchange.http.errors import error_responses, status_of
from exchange.http.guards import require_role
from exchange.http.routes.settlement import fresh_indexes
from exchange.identity.clients import Client
from exchange.indexes import trace
from exchange.privacy.access import record_access
from exchange.settlement import regulator

router = APIRouter(prefix="/v1", tags=["trace"])
NDJSON = "application/fhir+ndjson"


@router.get(
    "/trace/rwd-export",
    summary="A regulator's export of one product's RWD Bundles, each under its patient's consent",
    response_class=Response,
    responses={
        200: {
            "description": "one stored RWD Bundle per line, whitespace between tokens removed",
            "content": {NDJSON: {"schema": {"type": "string"}}},
        },
        **error_responses(400, 401, 403),
    },
)
async def rwd_export(
    client: Annotated[Client, Depends(require_role("regulator", scope="Bundle.s"))],
    services: ServicesDep,
    indexes: IndexesDep,
    gtin: Annotated[str | None, Query(max_length=32, description="GTIN-8, -12, -13 or -14")] = None,
    lot: Annotated[str | None, Query(max_length=20, description="AI 10, as labelled")] = None,
    serial: Annotated[str | None, Query(max_length=20, description="AI 21, as labelled")] = None,
    approval: Annotated[
        str | None, Query(max_length=64, description="special-import approval number")
    ] = None,
    cn_code: Annotated[
        str | None, Query(max_length=32, description="Chinese 20-digit drug trace code")
    ] = None,
    purpose_of_use: Annotated[
        str | None,
        Header(
            alias="X-Purpose-Of-Use",
            max_length=32,
            pattern=r"^[A-Z]{2,16}$",
            description="v3-ActReason research purpose: HRESCH or CLINTRCH",
        ),
    ] = None,
) -> Response:
    """The Bundles that used the pack, lot or product whose patients' newest consent names
    this regulator for research; the others are withheld (counted on the access entry)."""
    purpose = purpose_of_use or client.purpose
    try:
        query = recall_query(gtin, lot, serial, approval=approval, cn_code=cn_code)
        if purpose not in REGULATOR_PURPOSES:
            raise Forbidden(
                "a regulator must state a research purpose of use: send X-Purpose-Of-Use "
                f"{' or '.join(sorted(REGULATOR_PURPOSES))}",
            )
    except RecallQueryError as e:
        await _record(services, client, purpose, "denied", "4", f"bad query ({e})")
        raise Invalid(str(e), e.parameter, code="value") from None
    except MedledgerError as refusal:
        await _record(services, client, purpose, "denied", "4", f"refused ({status_of(refusal)})")
        raise
    await run_in_threadpool(indexes.fresh, trace.TRACE)
    await run_in_threadpool(fresh_indexes, services, indexes)
    export = await run_in_threadpool(
        regulator.export_product,
        services.vault,
        query,
        client.org or "",
        purpose,
        datetime.now(UTC),
    )
    detail = (
        f"RWD export of {_product(query)}: {export.disclosed} Bundles, {export.withheld} withheld"
    )
    if export.patients:
        # One entry per patient disclosed, appended together, all before the data leaves.
        await asyncio.gather(
            *(
                _record(
                    services,
                    client,
                    purpose,
                    "export",
                    "0",
                    f"{detail}; {export.bundles[subject]} of them this patient's",
                    subject,
                    others,
                )  # fmt: skip
                for subject, others in export.patients.items()
            )
        )
    else:
        nothing_used = export.withheld == 0
        await _record(
            services, client, purpose, "export" if nothing_used else "denied",
            "0" if nothing_used else "4", detail,
        )  # fmt: skip
    return Response(export.ndjson, media_type=NDJSON)


def _product(query: RecallQuery) -> str:
    keys = [("GTIN", query.gtin), ("approval", query.approval), ("code", query.cn_code)]
    return ", ".join(f"{name} {value}" for name, value in keys if value is not None)


async def _record(
    services: Services,
    client: Client,
    purpose: str | None,
    action: str,
    outcome: str,
    why: str,
    subject: bytes | None = None,
    others: Sequence[bytes] = (),
) -> None:
    await record_access(
        services.log,
        client,
        action=action,
        resource_type="Bundle",
        patient_subject=subject,
        purpose=purpose,
        outcome=outcome,
        detail=why,
        other_subjects=others,
    )
