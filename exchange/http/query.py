"""Unknown query parameters are refused (400), not silently ignored, unless the client asks.

A misspelt parameter (`?gtn=` for `?gtin=`, `?_count=` where there is none) would otherwise
widen a query to everything the client may see, and the client would not know. So this
service handles parameters strictly by default, as FHIR allows (`Prefer: handling=strict`),
except for the general parameters `_format` and `_pretty` that FHIR clients add to any
request. A client that sends `Prefer: handling=lenient` (R4 search.html#errors) has unknown
parameters ignored; a search's `self` link then leaves them out, so the client sees which
were used (:func:`used_params`).
"""

from __future__ import annotations

import re

from fastapi import Request
from fastapi.dependencies.models import Dependant

from exchange.errors import Invalid

GENERAL = frozenset({"_format", "_pretty"})
_LENIENT = re.compile(r"(?:^|[,;])\s*handling\s*=\s*\"?lenient\"?\s*(?:$|[,;])", re.IGNORECASE)


def declared(request: Request) -> frozenset[str]:
    """The query parameters the matched operation declares (with its dependencies')."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return frozenset()
    return frozenset(query_names(dependant))


def query_names(dependant: Dependant) -> set[str]:
    """The query parameters `dependant` and its dependencies declare."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= query_names(sub)
    return names


def lenient(request: Request) -> bool:
    """Did the client ask for unknown parameters to be ignored (`Prefer: handling=lenient`)?"""
    return any(_LENIENT.search(v) for v in request.headers.getlist("prefer"))


def used_params(request: Request) -> list[tuple[str, str]]:
    """The query parameters of `request` the operation takes, in order: all of them, unless
    `Prefer: handling=lenient` let unknown ones through."""
    known = declared(request) | GENERAL
    return [(k, v) for k, v in request.query_params.multi_items() if k in known]


async def refuse_unknown_query(request: Request) -> None:
    """App-wide dependency: 400 naming the unknown parameters and the ones the operation takes
    (none with `Prefer: handling=lenient`)."""
    if not request.query_params or lenient(request):
        return  # most requests: nothing to look up
    unknown = sorted(set(request.query_params) - declared(request) - GENERAL)
    if unknown:
        known = ", ".join(sorted(declared(request))) or "none"
        raise Invalid(
            f"unknown query parameter {', '.join(unknown)}: this operation takes {known}",
            unknown[0],
            code="not-supported",
        )
