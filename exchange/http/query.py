"""Unknown query parameters are refused (400), not silently ignored.

A misspelt parameter (`?gtn=` for `?gtin=`, `?_count=` where there is none) would otherwise
widen a query to everything the client may see, and the client would not know. FHIR's
lenient handling ignores unknown search parameters; this service is strict throughout, as
FHIR allows with `Prefer: handling=strict`, except for the general parameters `_format` and
`_pretty` that FHIR clients add to any request.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.dependencies.models import Dependant

from exchange.errors import Invalid

GENERAL = frozenset({"_format", "_pretty"})


def declared(request: Request) -> frozenset[str]:
    """The query parameters the matched operation declares (with its dependencies')."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return frozenset()
    return frozenset(_query_names(dependant))


def _query_names(dependant: Dependant) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def refuse_unknown_query(request: Request) -> None:
    """App-wide dependency: 400 naming the unknown parameters and the ones the operation takes."""
    if not request.query_params:
        return  # most requests: nothing to look up
    unknown = sorted(set(request.query_params) - declared(request) - GENERAL)
    if unknown:
        known = ", ".join(sorted(declared(request))) or "none"
        raise Invalid(
            f"unknown query parameter {', '.join(unknown)}: this operation takes {known}",
            unknown[0],
            code="not-supported",
        )
