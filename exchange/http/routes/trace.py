"""/v1/trace: the recall answer -- which of my ledger entries used this pack or lot?

A hospital asks with the GTIN of a recalled product, its special-import approval number or its
Chinese 20-digit drug trace code (each one named must match), and optionally its lot (AI 10)
or serial (AI 21), exactly as labelled; it gets back its own entries (administrations,
dispensings, adverse events, in a Bundle of any kind) that used it, in ledger order, each with
the Bundle to read. The answer names ledger entries only, no patient data. An admin sees every
sender's entries.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from adapters.trace_index import RecallQueryError, recall_query
from exchange.errors import Invalid
from exchange.http.deps import IndexesDep, ServicesDep
from exchange.http.errors import error_responses
from exchange.http.guards import require_role
from exchange.identity.clients import Client
from exchange.indexes import trace

router = APIRouter(prefix="/v1", tags=["trace"])


class TraceEntry(BaseModel):
    index: int = Field(description="the ledger entry's index")
    bundle: str = Field(description="where the Bundle is read: /fhir/Bundle/{id}")


class TraceAnswer(BaseModel):
    gtin: str | None = Field(description="the GTIN asked for, in its 14-digit form")
    approval: str | None = Field(description="the import approval number, in its compared form")
    cn_code: str | None = Field(description="the Chinese drug trace code asked for (20 digits)")
    lot: str | None
    serial: str | None
    entries: list[TraceEntry]


@router.get(
    "/trace",
    summary="Which ledger entries used this pack or lot (the recall answer)",
    response_model=TraceAnswer,
    responses=error_responses(400, 401, 403),
)
async def trace_pack(
    client: Annotated[Client, Depends(require_role("hospital", "admin", scope="Bundle.s"))],
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
) -> TraceAnswer:
    try:
        query = recall_query(gtin, lot, serial, approval=approval, cn_code=cn_code)
    except RecallQueryError as e:
        raise Invalid(str(e), e.parameter, code="value") from None
    await run_in_threadpool(indexes.fresh, trace.TRACE)
    sender = client.org if client.role == "hospital" else None
    hits = await run_in_threadpool(trace.recall, services.engine, query, sender)
    return TraceAnswer(
        gtin=query.gtin,
        approval=query.approval,
        cn_code=query.cn_code,
        lot=query.lot,
        serial=query.serial,
        entries=[TraceEntry(index=h.index, bundle=f"/fhir/Bundle/{h.bundle_id}") for h in hits],
    )
