"""/v1/trace: the recall answer -- which of my ledger entries used this pack or lot?

A hospital asks with the GTIN of a recalled product, its special-import approval number or its
Chinese 20-digit drug trace code (each one named must match), and optionally its lot (AI 10)
or serial (AI 21), exactly as labelled; it gets back its own entries (administrations,
dispensings, adverse events, in a Bundle of any kind) that used it, in ledger order, each with
the Bundle to read. The answer names ledger entries only, no patient data. An admin sees every
sender's entries.

A regulator asks the same questions of every institution and is answered in counts: per
institution, how many of its entries used the pack or lot (TraceCounts), never the entries
themselves, which lead to Bundles about patients. A count names no patient, so it is no
disclosure in anyone's accounting and appends no access entry (docs/adapters-trace.md).
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
RECALL = require_role("hospital", "regulator", "admin", scope="Bundle.s")


class TraceEntry(BaseModel):
    index: int = Field(description="the ledger entry's index")
    bundle: str = Field(description="where the Bundle is read: /fhir/Bundle/{id}")


class _Asked(BaseModel):
    """The query, as compared."""

    gtin: str | None = Field(description="the GTIN asked for, in its 14-digit form")
    approval: str | None = Field(description="the import approval number, in its compared form")
    cn_code: str | None = Field(description="the Chinese drug trace code asked for (20 digits)")
    lot: str | None
    serial: str | None


class TraceAnswer(_Asked):
    """A hospital's (or the admin's) recall answer: the matching entries themselves."""

    entries: list[TraceEntry]


class InstitutionCount(BaseModel):
    institution: str = Field(description="the submitting institution's registry id")
    entries: int = Field(description="how many of its ledger entries used the pack or lot")


class TraceCounts(_Asked):
    """The regulator's recall answer: counts per institution, no entry named."""

    institutions: list[InstitutionCount] = Field(
        description="institutions with at least one matching entry, by id"
    )


@router.get(
    "/trace",
    summary="Which ledger entries used this pack or lot (the recall answer)",
    response_model=TraceAnswer | TraceCounts,
    responses=error_responses(400, 401, 403),
)
async def trace_pack(
    client: Annotated[Client, Depends(RECALL)],
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
) -> TraceAnswer | TraceCounts:
    try:
        query = recall_query(gtin, lot, serial, approval=approval, cn_code=cn_code)
    except RecallQueryError as e:
        raise Invalid(str(e), e.parameter, code="value") from None
    await run_in_threadpool(indexes.fresh, trace.TRACE)
    asked = {"gtin": query.gtin, "approval": query.approval, "cn_code": query.cn_code,
             "lot": query.lot, "serial": query.serial}  # fmt: skip
    if client.role == "regulator":
        counts = await run_in_threadpool(trace.recall_counts, services.engine, query)
        return TraceCounts(
            **asked,
            institutions=[InstitutionCount(institution=o, entries=n) for o, n in counts],
        )
    sender = client.org if client.role == "hospital" else None
    hits = await run_in_threadpool(trace.recall, services.engine, query, sender)
    return TraceAnswer(
        **asked,
        entries=[TraceEntry(index=h.index, bundle=f"/fhir/Bundle/{h.bundle_id}") for h in hits],
    )
