"""`GET /fhir/MeasureReport`: an institution's quality indicators over a period.

FHIR R4 search on MeasureReport (section 3.1.1 "Search"; the `reporter` reference parameter
and the `period` date parameter of MeasureReport, with the prefixes of section 3.1.1.5.6):

- `reporter=Organization/{org}` (or `{org}`): the institution, required. The reports name it
  as their `reporter`: R4 allows no Organization as a MeasureReport's `subject`. `subject=` is
  taken as another name for `reporter`, as an earlier release asked for it;
- `period=2026` (also `2026-03`, `2026-03-15`, or `eq` before them): that whole year, month or
  day; or a range, `period=ge2026-01-01&period=le2026-06-30` (`gt`/`lt` exclude the named
  day, month or year). A report needs both ends: an open range is refused (400).

The answer is a searchset Bundle with one summary MeasureReport per indicator
(:data:`exchange.quality.INDICATORS`), each with its numerator and denominator populations and
`measureScore` (when the denominator is not zero), computed from the stored Bundles of the
institution at the time of the request (:mod:`exchange.quality_facts`).

Roles: insurers, auditors and admins may read any institution's indicators; a hospital only
its own organisation's. The reports are aggregates (counts and ratios, no patient, episode or
resource named), so no access entry is appended: nothing about a patient is disclosed.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine, select

from exchange.bootstrap import Services
from exchange.errors import Forbidden, Invalid, NotFound
from exchange.http.deps import IndexesDep, ServicesDep
from exchange.http.errors import FHIR_JSON, FhirJSONResponse, error_responses
from exchange.http.guards import require_role
from exchange.http.searchset import minted_full_url, searchset
from exchange.identity.clients import Client
from exchange.quality import facts as quality_facts
from exchange.quality import indicators as quality
from exchange.registry import institutions
from exchange.store.tables import bundles_table

router = APIRouter(prefix="/fhir", tags=["quality"])

Reader = Annotated[
    Client,
    Depends(
        require_role(
            "hospital", "insurer", "auditor", "regulator", "admin", scope="MeasureReport.s"
        )
    ),
]

SUBJECT = re.compile(r"(?:Organization/)?([A-Za-z0-9\-.]{1,64})")
_DATE = re.compile(r"(eq|ge|gt|le|lt)?(\d{4}(?:-\d{2}(?:-\d{2})?)?)")


def subject_org(value: str, param: str = "subject") -> str:
    """The organisation id of `subject=Organization/{id}` (or a bare id)."""
    match = SUBJECT.fullmatch(value)
    if match is None:
        raise Invalid(
            f"{param} {value!r} is not Organization/<id> (id: 1-64 of A-Z a-z 0-9 - .)",
            param,
            code="value",
        )
    return match.group(1)


def reporter_param(reporter: str | None, subject: str | None) -> tuple[str, str]:
    """The parameter that named the institution and its id: `reporter`, or `subject` as
    another name for it (both given, they must name the same one)."""
    if reporter is None and subject is None:
        raise Invalid(
            "reporter=Organization/<id> is required: the institution whose indicators to report",
            "reporter",
            code="required",
        )
    if reporter is not None and subject is not None:
        if subject_org(reporter, "reporter") != subject_org(subject):
            raise Invalid(
                "reporter and subject (another name for it) name different institutions: "
                "send reporter only",
                "subject",
                code="value",
            )
    param, value = ("reporter", reporter) if reporter is not None else ("subject", subject)
    assert value is not None
    return param, subject_org(value, param)


def _bounds(value: str) -> tuple[date, date]:
    try:
        return quality.parse_period(value)
    except quality.PeriodError:
        raise Invalid(
            f"period {value!r} is not a calendar date (YYYY, YYYY-MM or YYYY-MM-DD)",
            "period",
            code="value",
        ) from None


def _next_after(value: str) -> date:
    """The first day after the year, month or day `value` names."""
    end = _bounds(value)[1]
    return end + timedelta(days=1)


def _last_before(value: str) -> date:
    return _bounds(value)[0] - timedelta(days=1)


def period_of(values: list[str]) -> tuple[date, date]:
    """The reporting period of the `period` parameters (FHIR date search prefixes)."""
    start: date | None = None
    end: date | None = None
    for value in values:
        match = _DATE.fullmatch(value)
        if match is None:
            raise Invalid(
                f"period {value!r} is not [eq|ge|gt|le|lt]YYYY[-MM[-DD]]",
                "period",
                code="value",
            )
        prefix, when = match.group(1) or "eq", match.group(2)
        low, high = _bounds(when)
        new: tuple[date | None, date | None]
        if prefix == "eq":
            new = (low, high)
        elif prefix in ("ge", "gt"):
            new = (low if prefix == "ge" else _next_after(when), None)
        else:
            new = (None, high if prefix == "le" else _last_before(when))
        if (new[0] is not None and start is not None) or (new[1] is not None and end is not None):
            raise Invalid(f"period {value!r} repeats a bound already given", "period", code="value")
        start = new[0] if new[0] is not None else start
        end = new[1] if new[1] is not None else end
    if start is None or end is None:
        raise Invalid(
            "period needs both ends: period=2026, or period=ge2026-01-01&period=le2026-06-30",
            "period",
            code="required",
        )
    if end < start:
        raise Invalid(f"period ends ({end}) before it starts ({start})", "period", code="value")
    return start, end


def known_org(engine: Engine, org: str) -> bool:
    """Whether the registry or the ledger's Bundles know the organisation."""
    if institutions.lookup(engine, org) is not None:
        return True
    with engine.connect() as conn:
        found = conn.execute(
            select(bundles_table.c.idx).where(bundles_table.c.sender == org).limit(1)
        )
        return found.first() is not None


def quality_reports(
    services: Services, org: str, start: date, end: date, now: datetime
) -> list[dict[str, object]]:
    """The MeasureReports of `org` (blocking: reads the derived index, kept fresh before)."""
    rows = quality_facts.sender_rows(services.vault, org)
    facts = quality_facts.assemble(rows, now)
    stent = quality_facts.stent_groups(rows, start, end, now)
    return quality.indicator_reports(org, start, end, facts, now=now, groups=stent)


@router.get(
    "/MeasureReport",
    summary="Quality indicators of an institution over a period (searchset of MeasureReports)",
    response_class=FhirJSONResponse,
    responses={
        200: {
            "content": {FHIR_JSON: {"schema": {"type": "object"}}},
            "description": "FHIR R4 searchset Bundle of summary MeasureReports",
        },
        **error_responses(400, 401, 403, 404),
    },
)
async def search_measure_reports(
    request: Request,
    client: Reader,
    services: ServicesDep,
    indexes: IndexesDep,
    period: Annotated[
        list[str],
        Query(
            description="2026, 2026-03, 2026-03-15, or ge<date> and le<date> (repeated)",
        ),
    ],
    reporter: Annotated[
        str | None,
        Query(max_length=80, description="Organization/<id>: the institution (required)"),
    ] = None,
    subject: Annotated[
        str | None, Query(max_length=80, description="another name for reporter")
    ] = None,
) -> FhirJSONResponse:
    param, org = reporter_param(reporter, subject)
    if len(period) > 2:
        raise Invalid("period: at most two values (a lower and an upper bound)", code="value")
    start, end = period_of(period)
    if client.role == "hospital" and client.org != org:
        raise Forbidden(
            f"a hospital reads its own organisation's indicators ({client.org}), not {org}'s",
            param,
        )
    if not await run_in_threadpool(known_org, services.engine, org):
        raise NotFound(f"no institution {org!r} in the registry or the ledger")
    await run_in_threadpool(indexes.fresh, quality_facts.QUALITY)
    now = datetime.now(UTC)
    reports = await run_in_threadpool(quality_reports, services, org, start, end, now)
    entries = [
        {"fullUrl": minted_full_url("MeasureReport", org, str(r["measure"]), str(start), str(end)),
         "resource": r}
        for r in reports
    ]  # fmt: skip
    return FhirJSONResponse(searchset(request, entries))


def capability_resources() -> list[dict[str, Any]]:
    """CapabilityStatement.rest.resource entries of the registry and quality reads: the
    institution registry, its verification results, and the indicators."""
    anyone = "Every role but the mediator (no personal data)."
    return [
        {
            "type": "Organization",
            "documentation": "The institution registry: licence as identifier, accreditations "
            f"as extensions; active is false when the institution may not submit. {anyone}",
            "interaction": [{"code": "read"}, {"code": "search-type"}],
        },
        {
            "type": "VerificationResult",
            "documentation": "search-type: one per licence and accreditation of an institution, "
            "validated by the admin who signed the registry attestation; the ledger index of "
            f"that attestation is the extension urn:medledger:extension:ledger-entry. {anyone}",
            "interaction": [{"code": "search-type"}],
            "searchParam": [
                {"name": "target", "type": "reference", "documentation": "Organization/<id>"}
            ],
        },
        {
            "type": "MeasureReport",
            "documentation": "search-type: one summary MeasureReport per quality indicator of "
            "an institution over a period, computed from its stored Bundles. Insurers, "
            "auditors, regulators and admins: any institution; hospitals: their own. "
            "Aggregates only: no access entry is appended.",
            "interaction": [{"code": "search-type"}],
            "searchParam": [
                {
                    "name": "reporter",
                    "type": "reference",
                    "documentation": "Organization/<id> (required)",
                },
                {
                    "name": "subject",
                    "type": "reference",
                    "documentation": "another name for reporter (Organization/<id>); the "
                    "reports name no subject",
                },
                {
                    "name": "period",
                    "type": "date",
                    "documentation": "2026, 2026-03 or 2026-03-15 ([eq]), or a ge/gt and a "
                    "le/lt bound (required; both ends)",
                },
            ],
        },
    ]
