"""`GET /fhir/Organization` and `GET /fhir/Organization/{id}`: the institution registry.

Read by any authenticated client; the registry holds no personal data.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool

from exchange.errors import NotFound
from exchange.http.deps import ServicesDep, public_url
from exchange.http.errors import FhirJSONResponse, error_responses
from exchange.http.guards import require_role
from exchange.http.searchset import searchset
from exchange.identity.clients import Client
from exchange.registry import institutions

router = APIRouter(prefix="/fhir", tags=["organization"], default_response_class=FhirJSONResponse)

_READERS = ("hospital", "insurer", "auditor", "regulator", "admin")
Searcher = Annotated[Client, Depends(require_role(*_READERS, scope="Organization.s"))]
Reader = Annotated[Client, Depends(require_role(*_READERS, scope="Organization.r"))]


def _today() -> Any:
    return datetime.now(UTC).date()


@router.get(
    "/Organization",
    summary="Search the institution registry (searchset Bundle)",
    responses=error_responses(401, 403),
)
async def search_organizations(
    request: Request, _client: Searcher, services: ServicesDep
) -> dict[str, Any]:
    registry = await run_in_threadpool(institutions.current_registry, services.engine)
    today = _today()
    base = public_url(request)
    entries = [
        {
            "fullUrl": f"{base}/fhir/Organization/{org}",
            "resource": institutions.organization_resource(rec, today),
        }
        for org, rec in sorted(registry.items())
    ]
    return searchset(request, entries)


@router.get(
    "/Organization/{org}",
    summary="Read one institution's registry record",
    responses=error_responses(400, 401, 403, 404),
)
async def read_organization(
    _client: Reader,
    services: ServicesDep,
    org: Annotated[str, Path(pattern=r"^[A-Za-z0-9\-.]{1,64}$")],
) -> dict[str, Any]:
    record = await run_in_threadpool(institutions.lookup, services.engine, org)
    if record is None:
        raise NotFound(f"no institution {org!r} in the registry")
    return institutions.organization_resource(record, _today())
