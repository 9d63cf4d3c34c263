"""/epcis/events: the EPCIS 2.0 REST query interface over the ledger's dispensing events.

A traceability partner's SimpleEventQuery as URL query parameters (adapters.epcis_query: the
standard's names, `|` between alternatives, `perPage` and the HMAC-sealed `nextPageToken`,
the next page in a `Link` header). A hospital queries its own dispensing events, a regulator
everyone's (exchange.indexes.dispensing: they name packs, times and places, no patient, so a
query appends no access entry). A Bundle that names no GLN of its own is placed at the GLN the
institution registry records for its sender. A refused query is the REST binding's RFC 7807 problem
(`application/problem+json`, its `type` the EPCIS exception), not an OperationOutcome: EPCIS
clients read that.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from adapters.epcis_query import EpcisQueryError, PageTokens, answer
from exchange.http.deps import IndexesDep, ServicesDep, public_url
from exchange.http.errors import error_responses
from exchange.http.guards import require_role
from exchange.identity.clients import Client
from exchange.indexes import dispensing, trace
from exchange.registry import institutions
from exchange.store.secrets import EPCIS_PAGE_KEY, secret

router = APIRouter(prefix="/epcis", tags=["epcis"])

JSON_LD = "application/ld+json"
PROBLEM = "application/problem+json"
VERSIONS = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0"}
# A token outlives no partner's paging loop by much: a stale one is refused, not followed.
_TOKENS_LIVE = timedelta(minutes=10)

Param = Annotated[str | None, Query(max_length=2048)]


# A refused query as the EPCIS 2.0 REST binding answers it (RFC 7807); a malformed request
# the framework refuses before the query is read is an OperationOutcome, as everywhere.
PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "epcisException:<the EPCIS exception>"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what is wrong, naming the parameter"},
    },
}
_REFUSED = error_responses(400)[400]


@router.get(
    "/events",
    summary="EPCIS 2.0 events query (REST binding): dispensing events, paged",
    response_class=JSONResponse,
    responses={
        200: {
            "description": "an EPCISQueryDocument; a Link header with rel=next when more follow",
            "content": {JSON_LD: {"schema": {"type": "object"}}},
        },
        400: {
            "description": "QueryParameterException (RFC 7807), or a malformed request",
            "content": {**_REFUSED["content"], PROBLEM: {"schema": PROBLEM_SCHEMA}},
        },
        **error_responses(401, 403),
    },
)
async def epcis_events(
    request: Request,
    client: Annotated[Client, Depends(require_role("hospital", "regulator", scope="Bundle.s"))],
    services: ServicesDep,
    indexes: IndexesDep,
    # The standard's parameter names, as they are spelt.
    eventType: Param = None,
    GE_eventTime: Param = None,
    LT_eventTime: Param = None,
    GE_recordTime: Param = None,
    LT_recordTime: Param = None,
    EQ_action: Param = None,
    EQ_bizStep: Param = None,
    EQ_disposition: Param = None,
    EQ_readPoint: Param = None,
    EQ_bizLocation: Param = None,
    EQ_eventID: Param = None,
    MATCH_epc: Param = None,
    MATCH_anyEPC: Param = None,
    MATCH_epcClass: Param = None,
    MATCH_anyEPCClass: Param = None,
    perPage: Param = None,
    nextPageToken: Param = None,
) -> JSONResponse:
    # The adapter reads the parameters as sent, in order and with repeats (a repeated name is
    # refused there); the declarations above only name them for the schema and the guard
    # against unknown parameters.
    params = request.query_params.multi_items()
    sender = client.org if client.role == "hospital" else None
    key = await run_in_threadpool(secret, services.engine, EPCIS_PAGE_KEY)
    await run_in_threadpool(indexes.fresh, trace.TRACE)
    registry = await run_in_threadpool(institutions.current_registry, services.engine)
    sites = {org: r.gln for org, r in registry.items() if r.gln is not None}

    def run() -> Any:
        return answer(
            params,
            dispensing.events(services.vault, services.log, sender, sites),
            tokens=PageTokens(key, lifetime=_TOKENS_LIVE),
            scope=f"{client.role}:{client.org or client.client_id}",
            now=datetime.now(UTC),
            base_url=public_url(request) + request.url.path,
        )

    try:
        found = await run_in_threadpool(run)
    except EpcisQueryError as e:
        return JSONResponse(e.problem(), e.status, headers=VERSIONS, media_type=PROBLEM)
    return JSONResponse(
        found.document, 200, headers={**VERSIONS, **found.headers}, media_type=JSON_LD
    )
