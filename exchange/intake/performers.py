"""Who performed each Procedure of a Bundle, and on what day: what the registry's practitioner
licences are checked against (exchange.registry.practitioners).

A performer is named by `Procedure.performer.actor`: a reference `Practitioner/{id}` (relative
or absolute), the `fullUrl` of a Practitioner entry of the same Bundle (then that
Practitioner's `id` and identifiers name it), or an `identifier` of system
:data:`PRACTITIONER_SYSTEM` (the practitioner's id) or :data:`LICENCE_SYSTEM` (a licence
number). A Procedure's day is the calendar date of `performedDateTime`, else of
`performedPeriod.start`, as written; one without either, not done or entered in error has no
performer to check. Actors that are not practitioners (an Organization, a Device) are not
checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PRACTITIONER_SYSTEM = "urn:medledger:practitioner"
LICENCE_SYSTEM = "urn:medledger:practitioner-licence"
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_PRACTITIONER_REF = re.compile(r"(?:.*/)?Practitioner/([A-Za-z0-9\-.]{1,64})")
_SKIPPED = frozenset({"not-done", "entered-in-error", "preparation"})


@dataclass(frozen=True)
class Performance:
    """One performer of one Procedure: the keys that name the practitioner (`("id", id)`,
    `("licence", number)`), the Procedure's day, and the FHIRPath of the performer's actor."""

    keys: frozenset[tuple[str, str]]
    day: str  # YYYY-MM-DD
    expression: str
    display: str  # how the practitioner is named in a warning


def _identifier_keys(identifiers: Any) -> set[tuple[str, str]]:
    keys: set[tuple[str, str]] = set()
    for ident in identifiers if isinstance(identifiers, list) else [identifiers]:
        if not isinstance(ident, Mapping) or not isinstance(ident.get("value"), str):
            continue
        if ident.get("system") == PRACTITIONER_SYSTEM:
            keys.add(("id", ident["value"]))
        elif ident.get("system") == LICENCE_SYSTEM:
            keys.add(("licence", ident["value"]))
    return keys


def _day(procedure: Mapping[str, Any]) -> str | None:
    when = procedure.get("performedDateTime")
    if not isinstance(when, str):
        period = procedure.get("performedPeriod")
        when = period.get("start") if isinstance(period, Mapping) else None
    if not isinstance(when, str) or not _DAY.match(when):
        return None
    return when[:10]


def performances(doc: Mapping[str, Any]) -> tuple[Performance, ...]:
    """Every practitioner performer of every Procedure entry, in document order."""
    entries = [e for e in doc.get("entry") or [] if isinstance(e, Mapping)]
    in_bundle: dict[str, Mapping[str, Any]] = {}
    for e in entries:
        res = e.get("resource")
        if isinstance(res, Mapping) and res.get("resourceType") == "Practitioner":
            if isinstance(e.get("fullUrl"), str):
                in_bundle[e["fullUrl"]] = res
    out: list[Performance] = []
    for n, e in enumerate(entries):
        proc = e.get("resource")
        if not isinstance(proc, Mapping) or proc.get("resourceType") != "Procedure":
            continue
        day = _day(proc)
        if day is None or proc.get("status") in _SKIPPED:
            continue
        for m, performer in enumerate(proc.get("performer") or []):
            actor = performer.get("actor") if isinstance(performer, Mapping) else None
            if not isinstance(actor, Mapping):
                continue
            keys = _identifier_keys(actor.get("identifier"))
            ref = actor.get("reference")
            display = ref if isinstance(ref, str) else ""
            if isinstance(ref, str):
                found = _PRACTITIONER_REF.fullmatch(ref)
                if found:
                    keys.add(("id", found.group(1)))
                elif ref in in_bundle:
                    target = in_bundle[ref]
                    if isinstance(target.get("id"), str):
                        keys.add(("id", target["id"]))
                    keys |= _identifier_keys(target.get("identifier"))
            if not keys:
                continue
            if not display:
                display = ", ".join(f"{k} {v}" for k, v in sorted(keys))
            out.append(
                Performance(
                    frozenset(keys),
                    day,
                    f"Bundle.entry[{n}].resource.performer[{m}].actor",
                    display,
                )
            )
    return tuple(out)
