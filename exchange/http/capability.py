"""What an app's FHIR routes serve, read from the routes themselves.

The CapabilityStatement (exchange/http/routes/metadata.py) declares exactly what
:func:`served` finds, so a route added under the FHIR base is declared as soon as it is
served, and nothing is declared that is not. A route's path and method say what it is
(FHIR R4 http.html, operations.html):

    [base]/Type                        search-type (GET), create (POST)
    [base]/Type/{id}                   read (GET), update (PUT), patch (PATCH), delete (DELETE)
    [base]/Type/{id}/_history          history-instance (GET)
    [base]/Type/{id}/_history/{vid}    vread (GET)
    [base]/$op, [base]/Type/$op, [base]/Type/{id}/$op    the operation `op`

`[base]/metadata` is the statement itself, `[base]/.well-known/` holds discovery documents
(RFC 8615; SMART's). A path under a `[base]/$name` segment with more
segments after it is a URL an operation hands out (Bulk Data's status and file URLs): clients
follow it from the operation's answer, so it is not a capability of its own. Any other shape
under the base is an :class:`UnclassifiedRoute`.

The search parameters of a search-type route are the query parameters it declares (the same
ones exchange.http.query lets through), less the general ones, each by its name without a
modifier (`patient:identifier` is a form of `patient`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from fastapi.routing import iter_route_contexts
from starlette.routing import BaseRoute

from exchange.http.query import GENERAL, query_names

BASE = "/fhir"
# R4 TypeRestfulInteraction codes in the order the specification lists them.
INTERACTION_ORDER = ("read", "vread", "update", "patch", "delete", "history-instance",
                     "history-type", "create", "search-type")  # fmt: skip
_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")
_PARAM = re.compile(r"\{[^}]+\}")
_INSTANCE = {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_TYPE_LEVEL = {"GET": "search-type", "POST": "create"}


class UnclassifiedRoute(ValueError):
    """A route under the FHIR base whose path is none of the shapes FHIR's REST API has."""

    def __init__(self, method: str, path: str) -> None:
        super().__init__(
            f"{method} {path} is served under {BASE} but is no FHIR interaction or operation"
        )
        self.method = method
        self.path = path


@dataclass
class Operation:
    """One `$name` as served, with the summary of its route (what the statement says of it
    unless its route module documents more)."""

    name: str
    summary: str


@dataclass
class ServedType:
    """What the routes serve of one resource type."""

    interactions: set[str] = field(default_factory=set)
    search_params: set[str] = field(default_factory=set)
    operations: dict[str, Operation] = field(default_factory=dict)

    def ordered_interactions(self) -> list[str]:
        return [code for code in INTERACTION_ORDER if code in self.interactions]


@dataclass
class Served:
    """What the routes under the FHIR base serve: per resource type, and system-level."""

    types: dict[str, ServedType] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)

    def of(self, resource_type: str) -> ServedType:
        return self.types.setdefault(resource_type, ServedType())


def served(routes: Sequence[BaseRoute]) -> Served:
    """Every interaction, search parameter and operation the FHIR routes among `routes` serve."""
    found = Served()
    for ctx in iter_route_contexts(routes):
        path = ctx.path
        if path is None or not path.startswith(BASE + "/"):
            continue
        dependant = getattr(ctx, "dependant", None)
        params = query_names(dependant) if dependant is not None else set()
        summary = str(getattr(ctx, "summary", None) or ctx.name or "")
        for method in sorted(ctx.methods or ()):
            if method != "HEAD":  # served with GET
                _classify(found, method, path, params, summary)
    return found


def _classify(found: Served, method: str, path: str, params: Iterable[str], summary: str) -> None:
    parts = path[len(BASE) + 1 :].split("/")
    head = parts[0]
    if (parts == ["metadata"] and method == "GET") or head == ".well-known":
        return
    if head.startswith("$"):
        if len(parts) == 1:
            found.operations.setdefault(head[1:], Operation(head[1:], summary))
        return  # a URL the operation hands out
    if _TYPE.fullmatch(head) is None:
        raise UnclassifiedRoute(method, path)
    rest = parts[1:]
    of_type = found.of(head)
    is_id = bool(rest) and _PARAM.fullmatch(rest[0]) is not None
    if not rest and method in _TYPE_LEVEL:
        of_type.interactions.add(_TYPE_LEVEL[method])
        if method == "GET":
            of_type.search_params |= {name.split(":")[0] for name in params if name not in GENERAL}
    elif len(rest) == 1 and rest[0].startswith("$"):
        of_type.operations.setdefault(rest[0][1:], Operation(rest[0][1:], summary))
    elif len(rest) == 1 and is_id and method in _INSTANCE:
        of_type.interactions.add(_INSTANCE[method])
    elif len(rest) == 2 and is_id and rest[1].startswith("$"):
        of_type.operations.setdefault(rest[1][1:], Operation(rest[1][1:], summary))
    elif len(rest) == 2 and is_id and rest[1] == "_history" and method == "GET":
        of_type.interactions.add("history-instance")
    elif (
        len(rest) == 3
        and is_id
        and rest[1] == "_history"
        and _PARAM.fullmatch(rest[2])
        and method == "GET"
    ):
        of_type.interactions.add("vread")
    else:
        raise UnclassifiedRoute(method, path)
