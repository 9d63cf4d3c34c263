"""Quality indicators per institution and period as a FHIR R4B MeasureReport.

Each indicator is a MeasureReport.group (R4B MeasureReport.group.population) with a
`numerator` and a `denominator` population count. The inputs are per-episode facts taken
from what an institution submitted (`EpisodeFacts`); an indicator whose data an episode
does not carry leaves that episode out of its denominator rather than counting it as a miss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime

MEASURE_POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"
INDICATOR_SYSTEM = "urn:medledger:quality-indicator"


@dataclass(frozen=True)
class EpisodeFacts:
    """What one episode of care says about the indicators (None: the data does not say)."""

    episode: str
    day: date
    needed_interpreter: bool | None = None
    language_service_given: bool | None = None
    insured: bool | None = None
    paid_before_discharge: bool | None = None
    complaint_hours_to_response: float | None = None  # None: no complaint Communication/Task
    followups_planned: int | None = None  # RWD follow-up visits planned
    followups_done: int | None = None
    vas_before: float | None = None
    vas_after: float | None = None
    hba1c_after: float | None = None  # percent
    satisfaction: float | None = None  # 0-100


Rule = Callable[[EpisodeFacts], bool | None]  # None: not in denominator


def _language(f: EpisodeFacts) -> bool | None:
    if not f.needed_interpreter or f.language_service_given is None:
        return None
    return f.language_service_given


def _direct_pay(f: EpisodeFacts) -> bool | None:
    if not f.insured or f.paid_before_discharge is None:
        return None
    return f.paid_before_discharge


def _complaint_in_48h(f: EpisodeFacts) -> bool | None:
    if f.complaint_hours_to_response is None:
        return None
    return f.complaint_hours_to_response <= 48


def _followup_complete(f: EpisodeFacts) -> bool | None:
    if not f.followups_planned or f.followups_done is None:
        return None
    return f.followups_done >= f.followups_planned


def _vas_halved(f: EpisodeFacts) -> bool | None:
    if f.vas_before is None or f.vas_after is None or f.vas_before <= 0:
        return None
    return (f.vas_before - f.vas_after) >= 0.5 * f.vas_before


def _hba1c_below_7(f: EpisodeFacts) -> bool | None:
    return None if f.hba1c_after is None else f.hba1c_after < 7.0


def _satisfied(f: EpisodeFacts) -> bool | None:
    return None if f.satisfaction is None else f.satisfaction >= 90


INDICATORS: dict[str, tuple[str, Rule]] = {
    "language-service": ("Language service coverage for patients needing it", _language),
    "direct-payment": ("Insurer direct payment before discharge", _direct_pay),
    "complaint-response": (
        "Complaints answered within 48 h (Communication/Task)",
        _complaint_in_48h,
    ),
    "rwd-followup": ("RWD follow-up completeness", _followup_complete),
    "pain-vas-50": ("Pain VAS reduction >= 50%", _vas_halved),
    "hba1c-7": ("HbA1c < 7% attainment", _hba1c_below_7),
    "satisfaction-90": ("Satisfaction score >= 90", _satisfied),
}


def counts(rule: Rule, facts: Iterable[EpisodeFacts]) -> tuple[int, int]:
    """(numerator, denominator) of one indicator."""
    verdicts = [v for v in (rule(f) for f in facts) if v is not None]
    return sum(verdicts), len(verdicts)


def in_period(facts: Iterable[EpisodeFacts], start: date, end: date) -> list[EpisodeFacts]:
    return [f for f in facts if start <= f.day <= end]


def _population(code: str, count: int) -> dict[str, object]:
    return {"code": {"coding": [{"system": MEASURE_POPULATION, "code": code}]}, "count": count}


def measure_report(
    org: str, start: date, end: date, facts: Iterable[EpisodeFacts], *, now: datetime
) -> dict[str, object]:
    """A summary MeasureReport (R4B section 6.3.x MeasureReport) for `org` over the period."""
    chosen = in_period(facts, start, end)
    groups = []
    for code, (title, rule) in INDICATORS.items():
        num, den = counts(rule, chosen)
        group: dict[str, object] = {
            "id": code,
            "code": {"coding": [{"system": INDICATOR_SYSTEM, "code": code}], "text": title},
            "population": [_population("numerator", num), _population("denominator", den)],
        }
        if den:
            group["measureScore"] = {"value": round(num / den, 4)}
        groups.append(group)
    return {
        "resourceType": "MeasureReport",
        "status": "complete",
        "type": "summary",
        "measure": "urn:medledger:measure:institution-quality",
        # The institution reports; R4 allows no Organization as a MeasureReport's subject.
        "date": now.isoformat(),
        "reporter": {"reference": f"Organization/{org}"},
        "period": {"start": start.isoformat(), "end": end.isoformat()},
        "group": groups,
    }


def indicator_reports(
    org: str,
    start: date,
    end: date,
    facts: Iterable[EpisodeFacts],
    *,
    now: datetime,
    groups: Iterable[dict[str, object]] = (),
) -> list[dict[str, object]]:
    """One summary MeasureReport per indicator (the groups of `measure_report`, then `groups`
    computed elsewhere, each on its own, with `measure` naming the indicator), as a FHIR
    search answers MeasureReport."""
    whole = measure_report(org, start, end, facts, now=now)
    reports = []
    for group in [*whole["group"], *groups]:  # type: ignore[misc]
        code = group["id"]
        reports.append(
            {
                **{k: v for k, v in whole.items() if k != "group"},
                "measure": f"{MEASURE_BASE}{code}",
                "improvementNotation": {
                    "coding": [{"system": IMPROVEMENT_NOTATION, "code": "increase"}]
                },
                "group": [group],
            }
        )
    return reports


MEASURE_BASE = "urn:medledger:measure:"
IMPROVEMENT_NOTATION = "http://terminology.hl7.org/CodeSystem/measure-improvement-notation"


class PeriodError(ValueError):
    """A reporting period that is not a year, a month, a day or a range of days."""


def parse_period(text: str) -> tuple[date, date]:
    """`YYYY`, `YYYY-MM`, `YYYY-MM-DD` (the whole of it) or `START..END` (inclusive days)."""
    if ".." in text:
        first, _, last = text.partition("..")
        start, end = parse_period(first)[0], parse_period(last)[1]
    else:
        start, end = _whole(text)
    if end < start:
        raise PeriodError(f"period {text!r} ends before it starts")
    return start, end


def _whole(text: str) -> tuple[date, date]:
    from calendar import monthrange

    parts = text.split("-")
    try:
        if len(parts) == 1 and len(text) == 4:
            year = int(text)
            return date(year, 1, 1), date(year, 12, 31)
        if len(parts) == 2 and len(text) == 7:
            year, month = int(parts[0]), int(parts[1])
            return date(year, month, 1), date(year, month, monthrange(year, month)[1])
        if len(text) == 10:
            day = date.fromisoformat(text)
            return day, day
    except ValueError:
        pass
    raise PeriodError(f"period {text!r} is not YYYY, YYYY-MM, YYYY-MM-DD or START..END")
