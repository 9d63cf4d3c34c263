"""Follow-up indicators after coronary stent placement, from FHIR R4 Bundles.

Three proportions over one institution's coronary stent placements (docs/adapters-trace.md,
"Indicators after stent placement", says how each is derived and why):

``lvef-50-3m``
    Left ventricular ejection fraction >= 50 % three months after placement (LOINC 10230-1,
    valueQuantity in ``%``).
``bp-140-90-3m``
    Blood pressure below 140/90 mmHg three months after placement: systolic (LOINC 8480-6)
    < 140 and diastolic (8462-4) < 90 mm[Hg] in one reading -- the components of one panel
    (85354-9 or 55284-4), or a systolic and a diastolic Observation of the same instant.
``smoking-cessation-3m``
    Of the patients who smoked when the stent was placed, those not smoking three months
    after (LOINC 72166-2 tobacco smoking status, SNOMED CT answers: :data:`SMOKING`).

The index event is a completed Procedure coded as coronary stent placement (:func:`is_stent`:
SNOMED CT 36969009; ICD-9-CM volume 3 36.06 / 36.07 and the Chinese national clinical
version's extensions of them; ICD-10-PCS dilation of coronary arteries with an intraluminal
device). Days are calendar days, each date read in the offset it was written in, day 0 the day
of placement. The follow-up measurement is the one closest to day 90 within days 60 to 120
(:data:`WINDOW`), the later one on a tie. A placement within 120 days after a patient's
index placement (a staged procedure) belongs to that episode rather than opening another.

Populations (FHIR R4 ``measure-population``): ``initial-population``, the placements whose
window has closed by ``as_of``; ``denominator``, the same (for smoking, those who smoked at
placement); ``denominator-exclusion``, those with no follow-up measurement, with the reason
(``died`` by day 120, else ``no-follow-up``); ``numerator``, measured and met. The score is
numerator / (denominator - exclusions), the R4 proportion; as in the institution's other
indicators, an episode whose data does not say is left out of the score, never counted as a
miss, and here it is also counted, as an exclusion.

The data model is the one of the institution's quality facts: :func:`bundle_facts` reads one
Bundle into rows (``fact`` and the keys ``key``, ``ref``, ``patient``, ``episode``, ``code``,
``at``, ``until``, ``value``, ``unit``; text or None), so the service can keep them in its
sealed fact index; :func:`stent_episodes` assembles a sender's rows (each with the ``idx`` of
its ledger entry: a resource sent again replaces what it said) into :class:`StentEpisode`;
:func:`evaluate` counts one indicator and :meth:`IndicatorResult.group` writes its
MeasureReport.group. :func:`indicator_results` does all of it over Bundles in ledger order.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from adapters.base import CANONICAL_BASE

__all__ = [
    "INDICATORS",
    "WINDOW",
    "IndicatorResult",
    "Outcome",
    "StentEpisode",
    "bundle_facts",
    "evaluate",
    "in_period",
    "indicator_results",
    "is_stent",
    "stent_episodes",
]

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
# ICD-9-CM-3 as the Chinese national clinical version 2.0 extends it: no registered FHIR URI
# yet, so ours, as for the other national code systems (adapters.terminology).
ICD9CM3_CN = f"{CANONICAL_BASE}/CodeSystem/icd9cm3-cn-2.0"
ICD10PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
MEASURE_POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"
INDICATOR_SYSTEM = "urn:medledger:quality-indicator"

LVEF = f"{LOINC}|10230-1"
SYSTOLIC = f"{LOINC}|8480-6"
DIASTOLIC = f"{LOINC}|8462-4"
BP_PANELS = frozenset({f"{LOINC}|85354-9", f"{LOINC}|55284-4"})
SMOKING_STATUS = f"{LOINC}|72166-2"

# LOINC answer list LL2201-3 for 72166-2 (SNOMED CT), by what it says of smoking now.
SMOKING = {
    "449868002": "current",  # Smokes tobacco daily (current every day smoker)
    "428041000124106": "current",  # Occasional tobacco smoker (current some day smoker)
    "428071000124103": "current",  # Heavy tobacco smoker
    "428061000124105": "current",  # Light tobacco smoker
    "77176002": "current",  # Smoker, current status unknown: a smoker, frequency unknown
    "8517006": "former",  # Ex-smoker
    "266919005": "never",  # Never smoked tobacco
    # 266927001 (Tobacco smoking consumption unknown) says nothing: not a status.
}

STENT_SNOMED = frozenset({"36969009"})  # Placement of stent in coronary artery
# ICD-9-CM vol. 3: 36.06 non-drug-eluting, 36.07 drug-eluting coronary artery stent(s); the
# national clinical version appends two digits and an x-numbered extension (36.0700x001).
_STENT_ICD9 = re.compile(r"36\.?0[67](?:[0-9]{2})?(?:x[0-9]{3})?")
# ICD-10-PCS 027: dilation of heart and great vessels; body part 0-3 (one to four or more
# coronary arteries); approach 0 open, 3 percutaneous, 4 percutaneous endoscopic; device 4-7
# drug-eluting and D-G other intraluminal devices (stents; T radioactive and Z none are not);
# qualifier 6 bifurcation or Z.
_STENT_PCS = re.compile(r"027[0-3][034][4-7D-G][6Z]")

WINDOW = (60, 90, 120)  # follow-up from day 60 to day 120, the measurement nearest day 90
SMOKING_BEFORE = 365  # smoking status at placement: from a year before ...
SMOKING_AFTER = 7  # ... to a week after (assessed during the stay)

_REF = re.compile(r"(?:^|/)([A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_FINAL = frozenset({"final", "amended", "corrected"})
_MMHG = frozenset({"mm[Hg]", "mmHg", "mm Hg"})
_PERCENT = frozenset({"%"})

Row = dict[str, object]


def is_stent(system: object, code: object) -> bool:
    """Whether a coding says coronary stent placement (see the module docstring)."""
    if not isinstance(code, str):
        return False
    if system == SNOMED:
        return code in STENT_SNOMED
    if system in (ICD9CM, ICD9CM3_CN):
        return bool(_STENT_ICD9.fullmatch(code))
    if system == ICD10PCS:
        return bool(_STENT_PCS.fullmatch(code))
    return False


# -- reading one Bundle --------------------------------------------------------------------------


def bundle_facts(doc: Any, bundle_id: str) -> list[Row]:
    """The fact rows of one Bundle; lenient: what a resource does not say gives no row.

    Facts: ``stent`` (a placement: patient, code, at), ``lvef`` (value, unit), ``bp`` (code
    8480-6 or 8462-4, value, unit; ``ref`` the panel it is a component of), ``smoking``
    (value: the SNOMED CT code), ``death`` (at, or value ``true`` without a date), and
    ``void`` for a Procedure, Observation or Patient that says none of these any more
    (entered in error, not done): it replaces what an earlier copy said.
    """
    entries = doc.get("entry") if isinstance(doc, Mapping) else None
    found: list[tuple[str | None, Mapping[str, Any]]] = []
    for entry in entries if isinstance(entries, list) else []:
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if isinstance(resource, Mapping) and isinstance(resource.get("resourceType"), str):
            full_url = entry.get("fullUrl")
            found.append((full_url if isinstance(full_url, str) else None, resource))
    by_url = {url: key for url, r in found if url and (key := _key(r, url, bundle_id)) is not None}
    rows: list[Row] = []
    for url, resource in found:
        key = _key(resource, url, bundle_id)
        if key is None or resource["resourceType"] not in ("Procedure", "Observation", "Patient"):
            continue
        mine = _resource_facts(resource, key, by_url)
        rows.extend(mine or [_row("void", key)])
    return rows


def _key(resource: Mapping[str, Any], full_url: str | None, bundle_id: str) -> str | None:
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        return f"{resource['resourceType']}/{rid}"
    return f"{bundle_id}#{full_url}" if full_url else None


def _ref(reference: Any, by_url: Mapping[str, str]) -> str | None:
    text = reference.get("reference") if isinstance(reference, Mapping) else None
    if not isinstance(text, str) or text.startswith("#"):
        return None
    if text in by_url:
        return by_url[text]
    m = _REF.search(text)
    return m.group(1) if m else None


def _row(fact: str, key: str, **values: object) -> Row:
    row: Row = dict.fromkeys(("ref", "patient", "episode", "code", "at", "until", "value", "unit"))
    row.update(fact=fact, key=key, **values)
    return row


def _codings(concept: Any) -> list[tuple[object, object]]:
    codings = concept.get("coding") if isinstance(concept, Mapping) else None
    items = codings if isinstance(codings, list) else []
    return [(c.get("system"), c.get("code")) for c in items if isinstance(c, Mapping)]


def _resource_facts(r: Mapping[str, Any], key: str, by_url: Mapping[str, str]) -> list[Row]:
    kind = r["resourceType"]
    if kind == "Patient":
        if isinstance(r.get("deceasedDateTime"), str):
            return [_row("death", key, patient=key, at=r["deceasedDateTime"])]
        if r.get("deceasedBoolean") is True:
            return [_row("death", key, patient=key, value="true")]
        return []
    patient = _ref(r.get("subject"), by_url)
    if patient is None:
        return []
    if kind == "Procedure":
        if r.get("status") != "completed":
            return []
        at = r.get("performedDateTime")
        if not isinstance(at, str) and isinstance(r.get("performedPeriod"), Mapping):
            at = r["performedPeriod"].get("start")
        stent = next(((s, c) for s, c in _codings(r.get("code")) if is_stent(s, c)), None)
        if stent is None or not isinstance(at, str):
            return []
        return [_row("stent", key, patient=patient, code=f"{stent[0]}|{stent[1]}", at=at)]
    if r.get("status") not in _FINAL:
        return []
    at = _effective(r)
    if at is None:
        return []
    codes = {f"{s or ''}|{c}" for s, c in _codings(r.get("code"))}
    rows: list[Row] = []
    if LVEF in codes:
        value, unit = _quantity(r.get("valueQuantity"))
        if value is not None and (unit is None or unit in _PERCENT):
            rows.append(_row("lvef", key, patient=patient, at=at, value=value, unit=unit))
    for code in (SYSTOLIC, DIASTOLIC):
        if code in codes:
            rows += _pressure(r.get("valueQuantity"), code, key, None, patient, at)
    for component in r.get("component") or []:
        if not isinstance(component, Mapping):
            continue
        for s, c in _codings(component.get("code")):
            code = f"{s or ''}|{c}"
            if code in (SYSTOLIC, DIASTOLIC):
                rows += _pressure(component.get("valueQuantity"), code, key, key, patient, at)
    if SMOKING_STATUS in codes:
        answer = next(
            (str(c) for s, c in _codings(r.get("valueCodeableConcept")) if s == SNOMED), None
        )
        if answer is not None:
            rows.append(_row("smoking", key, patient=patient, at=at, value=answer))
    return rows


def _pressure(
    quantity: Any, code: str, key: str, ref: str | None, patient: str, at: str
) -> list[Row]:
    value, unit = _quantity(quantity)
    if value is None or (unit is not None and unit not in _MMHG):
        return []
    return [_row("bp", key, ref=ref, patient=patient, code=code, at=at, value=value, unit=unit)]


def _quantity(q: Any) -> tuple[str | None, str | None]:
    if not isinstance(q, Mapping):
        return None, None
    value = q.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None, None
    unit = q.get("code") if isinstance(q.get("code"), str) else q.get("unit")
    # Kept as the decimal's text: a row holds what was written, not a float of it.
    return str(value), unit if isinstance(unit, str) else None


def _effective(r: Mapping[str, Any]) -> str | None:
    for name in ("effectiveDateTime", "effectiveInstant", "issued"):
        if isinstance(r.get(name), str):
            return str(r[name])
    period = r.get("effectivePeriod")
    if isinstance(period, Mapping) and isinstance(period.get("start"), str):
        return str(period["start"])
    return None


# -- from rows to episodes -----------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """One follow-up measurement: when (day after placement) and what."""

    day: int
    at: datetime
    key: str
    values: tuple[Decimal, ...]


@dataclass(frozen=True)
class StentEpisode:
    """One index placement and what the records say three months on (None: nothing)."""

    episode: str  # the index Procedure's key, Procedure/{id}
    patient: str
    day: date  # the day of placement, where it was written
    closed: bool  # the follow-up window has ended by as_of
    died: bool  # the patient died by day 120 (or died, date unknown)
    lvef: Reading | None = None
    bp: Reading | None = None  # values (systolic, diastolic)
    smoking_at_placement: str | None = None  # current / former / never
    smoking_at_followup: str | None = None


def stent_episodes(rows: Iterable[Row], as_of: datetime) -> list[StentEpisode]:
    """A sender's episodes, by day of placement then key, from its fact rows.

    Each row carries ``idx``, the ledger index of its Bundle: of a resource sent more than
    once only the rows of its newest Bundle count.
    """
    by_fact: dict[str, list[Row]] = defaultdict(list)
    for row in _latest(rows):
        by_fact[str(row["fact"])].append(row)
    deaths = {str(r["patient"]): r for r in by_fact["death"]}
    per_patient: dict[str, dict[str, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for fact in ("lvef", "bp", "smoking"):
        for r in by_fact[fact]:
            per_patient[str(r["patient"])][fact].append(r)
    out: list[StentEpisode] = []
    for patient, placements in _index_placements(by_fact["stent"]).items():
        facts = per_patient.get(patient, {})
        for key, placed, day in placements:
            out.append(_episode(key, patient, placed, day, facts, deaths.get(patient), as_of))
    out.sort(key=lambda e: (e.day, e.episode))
    return out


def _latest(rows: Iterable[Row]) -> list[Row]:
    rows = list(rows)
    newest: dict[object, int] = {}
    for row in rows:
        newest[row["key"]] = max(newest.get(row["key"], -1), int(str(row["idx"])))
    return [r for r in rows if int(str(r["idx"])) == newest[r["key"]]]


def _index_placements(stents: list[Row]) -> dict[str, list[tuple[str, datetime, date]]]:
    """Per patient, the placements that open an episode (not within 120 days of one that did)."""
    found: dict[str, list[tuple[datetime, date, str]]] = defaultdict(list)
    for r in stents:
        at, day = parse_time(r["at"]), _day(r["at"])
        if at is not None and day is not None:
            found[str(r["patient"])].append((at, day, str(r["key"])))
    out: dict[str, list[tuple[str, datetime, date]]] = {}
    for patient, items in found.items():
        opened: list[tuple[str, datetime, date]] = []
        for at, day, key in sorted(items):
            if opened and (day - opened[-1][2]).days <= WINDOW[2]:
                continue
            opened.append((key, at, day))
        out[patient] = opened
    return out


def _episode(
    key: str,
    patient: str,
    placed: datetime,
    day: date,
    facts: Mapping[str, list[Row]],
    death: Row | None,
    as_of: datetime,
) -> StentEpisode:
    last = day + timedelta(days=WINDOW[2])
    died = death is not None and (
        death["value"] == "true" or ((d := _day(death["at"])) is not None and d <= last)
    )
    lvef = _closest(_readings(facts.get("lvef", []), day))
    bp = _closest(_pressure_readings(facts.get("bp", []), day))
    smoking = [
        (reading, SMOKING[str(r["value"])])
        for r in facts.get("smoking", [])
        if str(r["value"]) in SMOKING and (reading := _reading(r, day, ())) is not None
    ]
    at_placement = [
        (reading, status)
        for reading, status in smoking
        if -SMOKING_BEFORE <= reading.day <= SMOKING_AFTER
    ]
    at_placement.sort(key=lambda x: (x[0].at, x[0].key))
    followup = _closest([reading for reading, _ in smoking])
    status = dict((reading.key, s) for reading, s in smoking)
    return StentEpisode(
        episode=key,
        patient=patient,
        day=day,
        closed=as_of.date() > last,
        died=died,
        lvef=lvef,
        bp=bp,
        smoking_at_placement=at_placement[-1][1] if at_placement else None,
        smoking_at_followup=status[followup.key] if followup else None,
    )


def _reading(row: Row, day: date, values: tuple[Decimal, ...]) -> Reading | None:
    at, when = parse_time(row["at"]), _day(row["at"])
    if at is None or when is None:
        return None
    return Reading((when - day).days, at, str(row["key"]), values)


def _readings(rows: list[Row], day: date) -> list[Reading]:
    out = []
    for r in rows:
        value = _decimal(r["value"])
        reading = _reading(r, day, (value,)) if value is not None else None
        if reading is not None:
            out.append(reading)
    return out


def _pressure_readings(rows: list[Row], day: date) -> list[Reading]:
    """Pairs of systolic and diastolic: a panel's components, or two Observations of one time."""
    pairs: dict[tuple[str, ...], dict[str, Row]] = defaultdict(dict)
    for r in rows:
        at = parse_time(r["at"])
        if at is None:
            continue
        instant = at.astimezone(UTC).isoformat()
        group = ("panel", str(r["ref"])) if r["ref"] is not None else ("instant", instant)
        pairs[group].setdefault(str(r["code"]), r)
    out = []
    for pair in pairs.values():
        if SYSTOLIC not in pair or DIASTOLIC not in pair:
            continue
        values = (_decimal(pair[SYSTOLIC]["value"]), _decimal(pair[DIASTOLIC]["value"]))
        if values[0] is None or values[1] is None:
            continue
        first = min(pair.values(), key=lambda r: str(r["key"]))
        reading = _reading(first, day, (values[0], values[1]))
        if reading is not None:
            out.append(reading)
    return out


def _closest(readings: Iterable[Reading]) -> Reading | None:
    """The reading within days 60-120 nearest day 90; on a tie the later one."""
    low, aim, high = WINDOW
    inside = [r for r in readings if low <= r.day <= high]
    if not inside:
        return None
    return min(inside, key=lambda r: (abs(r.day - aim), -r.day, -r.at.timestamp(), r.key))


def parse_time(text: object) -> datetime | None:
    """A FHIR date, dateTime or instant as an aware datetime (no zone, or a partial date:
    UTC, at the start of what it names); None when it is not one."""
    if not isinstance(text, str):
        return None
    for pattern, width in (("%Y", 4), ("%Y-%m", 7)):
        if len(text) == width:
            try:
                return datetime.strptime(text, pattern).replace(tzinfo=UTC)
            except ValueError:
                return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _day(text: object) -> date | None:
    """The calendar day a dateTime names where it was written (its own offset); a year or a
    month is too vague for counting days and gives None."""
    if not isinstance(text, str) or len(text) < 10:
        return None
    parsed = parse_time(text)
    return None if parsed is None else parsed.date()


def _decimal(value: object) -> Decimal | None:
    try:
        return None if value is None else Decimal(str(value))
    except InvalidOperation:
        return None


# -- the indicators ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """Where one episode stands in one indicator: excluded (why) or measured (met or not)."""

    excluded: str | None = None
    met: bool = False


Rule = Callable[[StentEpisode], Outcome | None]  # None: not in the denominator


def _unmeasured(e: StentEpisode) -> Outcome:
    return Outcome(excluded="died" if e.died else "no-follow-up")


def _lvef(e: StentEpisode) -> Outcome | None:
    if e.lvef is None:
        return _unmeasured(e)
    return Outcome(met=e.lvef.values[0] >= 50)


def _bp(e: StentEpisode) -> Outcome | None:
    if e.bp is None:
        return _unmeasured(e)
    systolic, diastolic = e.bp.values
    return Outcome(met=systolic < 140 and diastolic < 90)


def _smoking(e: StentEpisode) -> Outcome | None:
    if e.smoking_at_placement != "current":
        return None
    if e.smoking_at_followup is None:
        return _unmeasured(e)
    return Outcome(met=e.smoking_at_followup in ("former", "never"))


@dataclass(frozen=True)
class Indicator:
    code: str
    title: str
    rule: Rule


INDICATORS = {
    i.code: i
    for i in (
        Indicator("lvef-50-3m", "LVEF >= 50% three months after coronary stent placement", _lvef),
        Indicator("bp-140-90-3m", "BP < 140/90 mmHg three months after stent placement", _bp),
        Indicator(
            "smoking-cessation-3m",
            "Smokers at stent placement not smoking three months after",
            _smoking,
        ),
    )
}


@dataclass(frozen=True)
class IndicatorResult:
    """One indicator's populations, each the episodes (Procedure keys) it counts."""

    code: str
    title: str
    initial_population: tuple[str, ...]
    denominator: tuple[str, ...]
    exclusions: dict[str, str]  # episode -> "died" | "no-follow-up"
    numerator: tuple[str, ...]

    def counts(self) -> dict[str, int]:
        """The population counts, by R4 measure-population code."""
        return {
            "initial-population": len(self.initial_population),
            "denominator": len(self.denominator),
            "denominator-exclusion": len(self.exclusions),
            "numerator": len(self.numerator),
        }

    def group(self) -> dict[str, object]:
        """This indicator as an R4 MeasureReport.group (summary: counts, no episode list)."""
        counts = self.counts()
        group: dict[str, object] = {
            "id": self.code,
            "code": {
                "coding": [{"system": INDICATOR_SYSTEM, "code": self.code}],
                "text": self.title,
            },
            "population": [
                {"code": {"coding": [{"system": MEASURE_POPULATION, "code": code}]}, "count": n}
                for code, n in counts.items()
            ],
        }
        scored = counts["denominator"] - counts["denominator-exclusion"]
        if scored:
            group["measureScore"] = {"value": round(counts["numerator"] / scored, 4)}
        return group


def evaluate(code: str, episodes: Iterable[StentEpisode]) -> IndicatorResult:
    """Count one indicator over episodes (already chosen for the reporting period)."""
    indicator = INDICATORS[code]
    initial: list[str] = []
    denominator: list[str] = []
    exclusions: dict[str, str] = {}
    numerator: list[str] = []
    for e in episodes:
        if not e.closed:
            continue
        initial.append(e.episode)
        outcome = indicator.rule(e)
        if outcome is None:
            continue
        denominator.append(e.episode)
        if outcome.excluded is not None:
            exclusions[e.episode] = outcome.excluded
        elif outcome.met:
            numerator.append(e.episode)
    return IndicatorResult(
        code, indicator.title, tuple(initial), tuple(denominator), exclusions, tuple(numerator)
    )


def in_period(episodes: Iterable[StentEpisode], start: date, end: date) -> list[StentEpisode]:
    """The episodes whose placement day falls in the reporting period (inclusive)."""
    return [e for e in episodes if start <= e.day <= end]


def indicator_results(
    bundles: Sequence[Mapping[str, Any]], *, start: date, end: date, as_of: datetime
) -> list[IndicatorResult]:
    """All three indicators over one sender's Bundles, given in ledger order."""
    rows: list[Row] = []
    for idx, doc in enumerate(bundles):
        bundle_id = str(doc.get("id") or f"bundle-{idx}")
        rows += [{**row, "idx": idx} for row in bundle_facts(doc, bundle_id)]
    chosen = in_period(stent_episodes(rows, as_of), start, end)
    return [evaluate(code, chosen) for code in INDICATORS]
