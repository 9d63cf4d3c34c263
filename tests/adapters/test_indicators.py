"""Indicators after coronary stent placement: counts worked out by hand, R4-valid groups.

Each patient below is one case a cardiology department sends; the comment beside it says where
it lands in each indicator, and the expected tables are those comments added up by hand.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B.measurereport import MeasureReport
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.indicators import (
    ICD9CM3_CN,
    ICD10PCS,
    INDICATORS,
    LOINC,
    SNOMED,
    bundle_facts,
    evaluate,
    indicator_results,
    is_stent,
    stent_episodes,
)

START, END = date(2026, 1, 1), date(2026, 3, 31)
AS_OF = datetime(2026, 7, 20, 12, 0, tzinfo=UTC)
CST = "+08:00"


def when(day0: str, days: int, clock: str = "10:00:00") -> str:
    """The dateTime ``days`` calendar days after ``day0``, in China Standard Time."""
    return f"{date.fromisoformat(day0) + timedelta(days=days)}T{clock}{CST}"


def patient(pid: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, **extra}


def stent(
    rid: str, pid: str, at: str, system: str = SNOMED, code: str = "36969009", **extra: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": rid,
        "status": "completed",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "performedDateTime": at,
        **extra,
    }


def quantity(value: float, code: str) -> dict[str, Any]:
    return {"value": value, "system": "http://unitsofmeasure.org", "code": code}


def obs(rid: str, pid: str, at: str, loinc: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": at,
        **extra,
    }


def lvef(rid: str, pid: str, at: str, percent: float) -> dict[str, Any]:
    return obs(rid, pid, at, "10230-1", valueQuantity=quantity(percent, "%"))


def bp_panel(rid: str, pid: str, at: str, systolic: float, diastolic: float) -> dict[str, Any]:
    return obs(
        rid,
        pid,
        at,
        "85354-9",
        component=[
            {
                "code": {"coding": [{"system": LOINC, "code": code}]},
                "valueQuantity": quantity(value, "mm[Hg]"),
            }
            for code, value in (("8480-6", systolic), ("8462-4", diastolic))
        ],
    )


def smoking(rid: str, pid: str, at: str, snomed: str) -> dict[str, Any]:
    answer = {"coding": [{"system": SNOMED, "code": snomed}]}
    return obs(rid, pid, at, "72166-2", valueCodeableConcept=answer)


CURRENT, FORMER, NEVER = "449868002", "8517006", "266919005"


def bundle(bid: str, *resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "id": bid,
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:uuid:{bid}-{n}", "resource": r} for n, r in enumerate(resources)
        ],
    }


P1, P2, P3, P4, P5, P7, P8 = (
    "2026-01-10",
    "2026-02-01",
    "2026-03-15",
    "2026-02-20",
    "2026-03-31",
    "2026-01-05",
    "2025-12-20",
)

BUNDLES = [
    # p1: LVEF 45 % on day 70 and 55 % on day 88 (nearer day 90: met); BP panel 130/85 on
    # day 92 (met); smoker on the day of placement, ex-smoker on day 91 (smoking: met).
    bundle(
        "b1",
        patient("p1"),
        stent("s1", "p1", when(P1, 0)),
        smoking("o1a", "p1", when(P1, 0, "16:00:00"), CURRENT),
        lvef("o1b", "p1", when(P1, 70), 45),
        lvef("o1c", "p1", when(P1, 88), 55),
        bp_panel("o1d", "p1", when(P1, 92), 130, 85),
        smoking("o1e", "p1", when(P1, 91), FORMER),
    ),
    # p2: ICD-9-CM-3 (Chinese clinical version) drug-eluting stent; LVEF 48 % on day 90 (not
    # met); systolic 150 and diastolic 85 as two Observations of one instant on day 95 (not
    # met); never smoked (not in the smoking denominator).
    bundle(
        "b2",
        patient("p2"),
        stent("s2", "p2", when(P2, 0), ICD9CM3_CN, "36.0700x001"),
        smoking("o2a", "p2", when(P2, -2), NEVER),
        lvef("o2b", "p2", when(P2, 90), 48),
        obs("o2c", "p2", when(P2, 95), "8480-6", valueQuantity=quantity(150, "mm[Hg]")),
        obs("o2d", "p2", when(P2, 95), "8462-4", valueQuantity=quantity(85, "mm[Hg]")),
    ),
    # p3: ICD-10-PCS placement, died on day 47 with no follow-up: excluded as died from all
    # three (a smoker a month before placement).
    bundle(
        "b3",
        patient("p3", deceasedDateTime=when(P3, 47)),
        stent("s3", "p3", when(P3, 0), ICD10PCS, "0270346"),
        smoking("o3a", "p3", when(P3, -30), CURRENT),
    ),
    # p4: a staged second stent 18 days later belongs to the episode of the first; LVEF 50 %
    # exactly on day 60 of the index placement (met; day 42 of the staged one would be out of
    # the window); BP 139/90 (diastolic not below 90: not met); still smoking on day 100.
    bundle(
        "b4",
        patient("p4"),
        stent("s4", "p4", when(P4, 0)),
        stent("s4b", "p4", when(P4, 18)),
        smoking("o4a", "p4", when(P4, 1), CURRENT),
        lvef("o4b", "p4", when(P4, 60), 50),
        bp_panel("o4c", "p4", when(P4, 85), 139, 90),
        smoking("o4d", "p4", when(P4, 100), CURRENT),
    ),
    # p5: placed on the last day of the period; its window is still open on AS_OF (day 120
    # is 2026-07-29): not in the initial population.
    bundle("b5", patient("p5"), stent("s5", "p5", when(P5, 0)), lvef("o5", "p5", when(P5, 1), 60)),
    # p6: a balloon angioplasty without stent, and a stent not completed: no episode.
    bundle(
        "b6",
        patient("p6"),
        stent("s6", "p6", when(P1, 0), SNOMED, "11101003"),
        stent("s6b", "p6", when(P1, 3), status="not-done"),
    ),
    # p7: LVEF only on day 130, BP never, no smoking status at placement: no-follow-up
    # exclusion in LVEF and BP, not in the smoking denominator.
    bundle(
        "b7",
        patient("p7"),
        stent("s7", "p7", when(P7, 0)),
        lvef("o7", "p7", when(P7, 130), 60),
        smoking("o7b", "p7", when(P7, 90), NEVER),
    ),
    # p8: placed before the period.
    bundle("b8", patient("p8"), stent("s8", "p8", when(P8, 0)), lvef("o8", "p8", when(P8, 90), 70)),
]

# By hand from the comments: initial population p1 p2 p3 p4 p7.
EXPECTED = {
    "lvef-50-3m": {
        "initial-population": 5,
        "denominator": 5,
        "denominator-exclusion": 2,  # p3 died, p7 no follow-up
        "numerator": 2,  # p1 55 %, p4 50 %
    },
    "bp-140-90-3m": {
        "initial-population": 5,
        "denominator": 5,
        "denominator-exclusion": 2,  # p3 died, p7 no follow-up
        "numerator": 1,  # p1 130/85
    },
    "smoking-cessation-3m": {
        "initial-population": 5,
        "denominator": 3,  # smokers at placement: p1 p3 p4
        "denominator-exclusion": 1,  # p3 died
        "numerator": 1,  # p1
    },
}
SCORES = {"lvef-50-3m": 0.6667, "bp-140-90-3m": 0.3333, "smoking-cessation-3m": 0.5}


def results() -> dict[str, Any]:
    found = indicator_results(BUNDLES, start=START, end=END, as_of=AS_OF)
    return {r.code: r for r in found}


def test_counts_worked_by_hand() -> None:
    found = results()
    assert {code: r.counts() for code, r in found.items()} == EXPECTED
    assert found["lvef-50-3m"].numerator == ("Procedure/s1", "Procedure/s4")
    assert found["lvef-50-3m"].exclusions == {
        "Procedure/s7": "no-follow-up",
        "Procedure/s3": "died",
    }
    assert found["bp-140-90-3m"].numerator == ("Procedure/s1",)
    assert found["smoking-cessation-3m"].denominator == (
        "Procedure/s1",
        "Procedure/s4",
        "Procedure/s3",
    )


def test_groups_are_r4_measure_report_groups() -> None:
    groups = [r.group() for r in results().values()]
    report = {
        "resourceType": "MeasureReport",
        "status": "complete",
        "type": "summary",
        "measure": "urn:medledger:measure:institution-quality",
        "subject": {"reference": "Organization/org-boao-lecheng-intl"},
        "date": AS_OF.isoformat(),
        "reporter": {"reference": "Organization/org-boao-lecheng-intl"},
        "period": {"start": START.isoformat(), "end": END.isoformat()},
        "group": groups,
    }
    parsed = MeasureReport.model_validate(report)
    assert [g.id for g in parsed.group] == list(EXPECTED)
    for g in parsed.group:
        counts = {p.code.coding[0].code: p.count for p in g.population}
        assert counts == EXPECTED[g.id]
        assert g.code.coding[0].system == "urn:medledger:quality-indicator"
        assert float(g.measureScore.value) == SCORES[g.id]


def test_a_group_without_a_scored_episode_has_no_score() -> None:
    # Everyone excluded: the score would divide by zero, so there is none (R4 allows that).
    result = evaluate("lvef-50-3m", [])
    assert result.counts() == dict.fromkeys(EXPECTED["lvef-50-3m"], 0)
    assert "measureScore" not in result.group()


def test_a_resource_sent_again_replaces_what_it_said() -> None:
    # p2's LVEF resent as entered in error: p2 no longer has a follow-up LVEF.
    retracted = lvef("o2b", "p2", when(P2, 90), 48) | {"status": "entered-in-error"}
    found = indicator_results(
        [*BUNDLES, bundle("b2-fix", retracted)], start=START, end=END, as_of=AS_OF
    )
    lv = next(r for r in found if r.code == "lvef-50-3m")
    assert lv.counts()["denominator-exclusion"] == 3
    assert lv.exclusions["Procedure/s2"] == "no-follow-up"
    # ... and p1's LVEF corrected from 55 to 49 in a later Bundle: no longer met.
    corrected = lvef("o1c", "p1", when(P1, 88), 49)
    found = indicator_results(
        [*BUNDLES, bundle("b1-fix", corrected)], start=START, end=END, as_of=AS_OF
    )
    assert next(r for r in found if r.code == "lvef-50-3m").numerator == ("Procedure/s4",)


def test_days_are_counted_where_they_were_written() -> None:
    # Placed at 23:30 in Beijing (15:30 UTC the same day); an LVEF at 00:30 Beijing 120 days
    # later is on day 120, inside the window, though in UTC it is still day 119's evening.
    rows = bundle_facts(
        bundle(
            "late",
            stent("s", "p", when(P1, 0, "23:30:00")),
            lvef("o", "p", when(P1, 120, "00:30:00"), 52),
        ),
        "late",
    )
    (episode,) = stent_episodes([{**r, "idx": 0} for r in rows], AS_OF)
    assert episode.lvef is not None and episode.lvef.day == 120
    assert evaluate("lvef-50-3m", [episode]).numerator == ("Procedure/s",)


def test_units_other_than_the_indicators_are_not_read() -> None:
    # An LVEF written as a fraction (0.55 of 1) or a pressure in kPa is not what the
    # indicator compares: no follow-up, rather than a wrong verdict.
    kpa = bp_panel("b", "p", when(P1, 90), 17, 11)
    for component in kpa["component"]:
        component["valueQuantity"]["code"] = "kPa"
    doc = bundle(
        "units",
        stent("s", "p", when(P1, 0)),
        obs("o", "p", when(P1, 90), "10230-1", valueQuantity=quantity(0.55, "1")),
        kpa,
    )
    assert {r["fact"] for r in bundle_facts(doc, "units")} == {"stent", "void"}
    (episode,) = indicator_results([doc], start=START, end=END, as_of=AS_OF)[:1]
    assert episode.exclusions == {"Procedure/s": "no-follow-up"}


@pytest.mark.parametrize(
    ("system", "code", "expected"),
    [
        (SNOMED, "36969009", True),
        (SNOMED, "11101003", False),  # angioplasty without a stent
        ("http://hl7.org/fhir/sid/icd-9-cm", "36.06", True),
        ("http://hl7.org/fhir/sid/icd-9-cm", "36.07", True),
        ("http://hl7.org/fhir/sid/icd-9-cm", "36.09", False),
        (ICD9CM3_CN, "36.0700x001", True),
        (ICD9CM3_CN, "36.0600", True),
        (ICD10PCS, "02703DZ", True),  # one artery, percutaneous, intraluminal device
        (ICD10PCS, "0271346", True),
        (ICD10PCS, "02703ZZ", False),  # no device
        (ICD10PCS, "02703TZ", False),  # radioactive device
        (ICD10PCS, "0270046", True),
        ("http://example.org/other", "36969009", False),
        (SNOMED, None, False),
    ],
)
def test_what_counts_as_a_stent_placement(system: str, code: str | None, expected: bool) -> None:
    assert is_stent(system, code) is expected


# -- for all inputs ------------------------------------------------------------------------------

one_case = st.fixed_dictionaries(
    {
        "placed": st.dates(min_value=date(2025, 11, 1), max_value=date(2026, 4, 30)),
        "lvef": st.lists(st.tuples(st.integers(-10, 150), st.integers(20, 80)), max_size=3),
        "bp": st.lists(
            st.tuples(st.integers(-10, 150), st.integers(90, 180), st.integers(50, 110)),
            max_size=3,
        ),
        "smoking": st.lists(
            st.tuples(st.integers(-400, 150), st.sampled_from([CURRENT, FORMER, NEVER])),
            max_size=3,
        ),
        "died": st.one_of(st.none(), st.integers(1, 200)),
    }
)


def case_bundle(n: int, case: dict[str, Any]) -> dict[str, Any]:
    pid, day0 = f"p{n}", case["placed"].isoformat()
    extra = {} if case["died"] is None else {"deceasedDateTime": when(day0, case["died"])}
    resources = [patient(pid, **extra), stent(f"s{n}", pid, when(day0, 0))]
    resources += [lvef(f"l{n}-{i}", pid, when(day0, d), v) for i, (d, v) in enumerate(case["lvef"])]
    resources += [
        bp_panel(f"b{n}-{i}", pid, when(day0, d), s, dia)
        for i, (d, s, dia) in enumerate(case["bp"])
    ]
    resources += [
        smoking(f"m{n}-{i}", pid, when(day0, d, f"1{i}:00:00"), answer)
        for i, (d, answer) in enumerate(case["smoking"])
    ]
    return bundle(f"case{n}", *resources)


@settings(max_examples=60, deadline=None)
@given(cases=st.lists(one_case, max_size=6), seed=st.integers(0, 2**32 - 1))
def test_populations_nest_and_the_order_of_patients_does_not_matter(
    cases: list[dict[str, Any]], seed: int
) -> None:
    bundles = [case_bundle(n, c) for n, c in enumerate(cases)]
    first = indicator_results(bundles, start=START, end=END, as_of=AS_OF)
    random.Random(seed).shuffle(bundles)
    again = indicator_results(bundles, start=START, end=END, as_of=AS_OF)
    assert [r.counts() for r in first] == [r.counts() for r in again]
    for r in first:
        assert set(r.denominator) <= set(r.initial_population)
        assert set(r.exclusions) <= set(r.denominator)
        assert set(r.numerator) <= set(r.denominator) - set(r.exclusions)
    # Each closed placement in the period is one episode (one stent per patient here).
    in_window = [
        c
        for c in cases
        if START <= c["placed"] <= END and AS_OF.date() > c["placed"] + timedelta(days=120)
    ]
    assert all(len(r.initial_population) == len(in_window) for r in first)
    assert set(INDICATORS) == {r.code for r in first}
