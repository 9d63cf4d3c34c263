"""`GET /fhir/MeasureReport` over real HTTP: R4B MeasureReports with the independently
expected counts, the period as FHIR date search, roles, and refusals as OperationOutcomes."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle as FhirBundle
from fhir.resources.R4B.measurereport import MeasureReport
from hypothesis import given
from hypothesis import strategies as st

from adapters.indicators import INDICATORS as STENT_INDICATORS
from adapters.indicators import indicator_results
from exchange.errors import MedledgerError
from exchange.http.errors import status_of
from tests.adapters.test_indicators import BUNDLES, EXPECTED
from tests.api_helpers import HOSPITAL_ORG, Api, is_outcome, open_api
from tests.quality.test_quality_facts import expected_counts, submit_all

REPORTER = f"Organization/{HOSPITAL_ORG}"


def _reports(response: Any) -> dict[str, tuple[int, int]]:
    """The counts of a searchset of MeasureReports, each parsed with the R4B model."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    doc = response.json()
    FhirBundle.model_validate(doc)
    assert doc["type"] == "searchset" and doc["total"] == len(doc["entry"])
    out = {}
    for entry in doc["entry"]:
        report = MeasureReport.model_validate(entry["resource"])
        assert report.type == "summary" and report.status == "complete"
        # R4 allows no Organization as subject: the institution is the reporter.
        assert report.subject is None and report.reporter.reference == REPORTER
        (group,) = report.group
        pops = {p.code.coding[0].code: p.count for p in group.population}
        assert report.measure.endswith(group.id)
        if group.id in STENT_INDICATORS:
            continue  # test_the_stent_indicators_are_served checks these
        if pops["denominator"]:
            assert float(group.measureScore.value) == round(
                pops["numerator"] / pops["denominator"], 4
            )
        else:
            assert group.measureScore is None
        out[group.id] = (pops["numerator"], pops["denominator"])
    return out


def _get(api: Api, headers: dict[str, str], **params: Any) -> Any:
    return api.client.get("/fhir/MeasureReport", params=params, headers=headers)


@pytest.fixture
def seeded(tmp_path: Path, db_url: str) -> Any:
    with open_api(tmp_path, db_url) as api:
        submit_all(api, api.credential(), datetime.now(UTC))
        yield api


def test_reports_parse_and_count_what_was_expected(seeded: Api) -> None:
    api = seeded
    insurer = api.credential("insurer", "insurer-a")
    size = api.log_size()
    got = _reports(_get(api, insurer, reporter=REPORTER, period="2026"))
    assert got == expected_counts(datetime.now(UTC))
    # A range in FHIR date search form: the first quarter.
    q1 = _get(api, insurer, reporter=HOSPITAL_ORG, period=["ge2026-01", "lt2026-04"])
    assert _reports(q1) == expected_counts(datetime.now(UTC), date(2026, 1, 1), date(2026, 3, 31))
    month = _get(api, insurer, reporter=REPORTER, period="eq2026-02")
    assert _reports(month) == expected_counts(
        datetime.now(UTC), date(2026, 2, 1), date(2026, 2, 28)
    )
    # subject= is another name for reporter, as an earlier release asked for it.
    alias = _get(api, insurer, subject=REPORTER, period="2026")
    assert alias.json()["entry"] and _reports(alias) == got
    both = _get(api, insurer, reporter=HOSPITAL_ORG, subject=REPORTER, period="2026")
    assert _reports(both) == got
    # Aggregates disclose no patient: no access entry is appended.
    assert api.log_size() == size


def test_who_may_read_quality(seeded: Api) -> None:
    api = seeded
    expected = _reports(_get(api, api.credential(), reporter=REPORTER, period="2026"))
    for role, org in (("hospital", HOSPITAL_ORG), ("auditor", None), ("admin", None),
                      ("regulator", "nmpa"), ("insurer", "insurer-a")):  # fmt: skip
        answer = _get(api, api.credential(role, org), reporter=REPORTER, period="2026")
        assert answer.status_code == 200, (role, answer.text)
        assert _reports(answer) == expected, role
    mediator = _get(api, api.credential("mediator", "m-1"), reporter=REPORTER, period="2026")
    assert mediator.status_code == 403
    other = _get(api, api.credential("hospital", "hospital-b"), reporter=REPORTER, period="2026")
    assert other.status_code == 403
    assert "own organisation" in is_outcome(other)["issue"][0]["diagnostics"]
    assert _get(api, {}, reporter=REPORTER, period="2026").status_code == 401
    admin = api.credential("admin", None)
    unknown = _get(api, admin, reporter="Organization/nobody", period="2026")
    assert unknown.status_code == 404
    assert "nobody" in is_outcome(unknown)["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"reporter": REPORTER, "period": "2026-13"}, "period"),
        ({"reporter": REPORTER, "period": "26"}, "period"),
        ({"reporter": REPORTER, "period": "ge2026-01-01"}, "both ends"),
        ({"reporter": REPORTER, "period": ["ge2026-06", "le2026-01"]}, "before it starts"),
        ({"reporter": REPORTER, "period": ["2026", "ge2026-01"]}, "repeats"),
        ({"reporter": REPORTER, "period": ["2026", "2026", "2026"]}, "at most two"),
        ({"reporter": "Patient/p1", "period": "2026"}, "reporter"),
        ({"period": "2026"}, "reporter=Organization/<id> is required"),
        ({"reporter": REPORTER, "subject": "Organization/other", "period": "2026"}, "different"),
        ({"reporter": REPORTER}, "period"),
        ({"reporter": REPORTER, "period": "2026", "date": "2026"}, "unknown query parameter date"),
    ],
)
def test_bad_search_is_a_400_outcome(tmp_path: Path, params: dict[str, Any], says: str) -> None:
    with open_api(tmp_path) as api:
        answer = _get(api, api.credential("auditor", None), **params)
        assert answer.status_code == 400, answer.text
        issue = is_outcome(answer)["issue"][0]
        assert says in issue["diagnostics"]


def test_capability_statement_lists_the_registry_and_quality_reads(tmp_path: Path) -> None:
    from fhir.resources.R4B.capabilitystatement import CapabilityStatement

    with open_api(tmp_path) as api:
        doc = api.client.get("/fhir/metadata").json()
        CapabilityStatement.model_validate(doc)
        resources = {r["type"]: r for r in doc["rest"][0]["resource"]}
        params = {
            t: {p["name"] for p in resources[t].get("searchParam", [])}
            for t in ("Organization", "MeasureReport", "VerificationResult")
        }
        assert params == {
            "Organization": set(),
            "MeasureReport": {"reporter", "subject", "period"},
            "VerificationResult": {"target"},
        }


@given(
    st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)),
    st.integers(0, 4000),
)
def test_a_ge_le_range_is_the_period(first: date, days: int) -> None:
    from exchange.http.routes.quality import period_of

    last = min(first + timedelta(days=days), date(2099, 12, 31))
    assert period_of([f"ge{first}", f"le{last}"]) == (first, last)
    assert period_of([f"le{last}", f"ge{first}"]) == (first, last)
    inner = (first + timedelta(days=1), last - timedelta(days=1))
    if inner[0] <= inner[1]:
        assert period_of([f"gt{first}", f"lt{last}"]) == inner
    else:  # nothing lies strictly between them
        with pytest.raises(MedledgerError) as refused:
            period_of([f"gt{first}", f"lt{last}"])
        assert status_of(refused.value) == 400
    assert period_of([str(first.year)]) == (date(first.year, 1, 1), date(first.year, 12, 31))


def test_the_stent_indicators_are_served(tmp_path: Path, db_url: str) -> None:
    """The hand-worked Bundles of tests/adapters/test_indicators.py, submitted: each stent
    indicator is one MeasureReport whose group is what the adapter counts over them."""
    with open_api(tmp_path, db_url) as api:
        hospital = api.credential()
        for doc in BUNDLES:
            body = {k: v for k, v in doc.items() if k != "id"}
            r = api.post(json.dumps(body).encode(), hospital)
            assert r.status_code == 201, r.text
        regulator = api.credential("regulator", "nmpa")
        first_quarter = ["ge2026-01-01", "le2026-03-31"]
        answer = _get(api, regulator, reporter=REPORTER, period=first_quarter)
        assert answer.status_code == 200, answer.text
        served = {
            e["resource"]["group"][0]["id"]: e["resource"]
            for e in answer.json()["entry"]
            if e["resource"]["group"][0]["id"] in STENT_INDICATORS
        }
        assert set(served) == set(STENT_INDICATORS)
        for report in served.values():
            MeasureReport.model_validate(report)
        now = datetime.fromisoformat(next(iter(served.values()))["date"])
        expected = indicator_results(
            [dict(doc, id=f"b{n}") for n, doc in enumerate(BUNDLES)],
            start=date(2026, 1, 1),
            end=date(2026, 3, 31),
            as_of=now,
        )
        for result in expected:
            assert served[result.code]["group"] == [result.group()], result.code
        # By hand, as tests/adapters/test_indicators.py's EXPECTED, now that the window of
        # p5's placement on 31 March has closed too: p5 is in, without a follow-up.
        pops = {
            code: {p["code"]["coding"][0]["code"]: p["count"] for p in r["group"][0]["population"]}
            for code, r in served.items()
        }
        lvef, bp, smoking = (
            EXPECTED["lvef-50-3m"],
            EXPECTED["bp-140-90-3m"],
            EXPECTED["smoking-cessation-3m"],
        )
        assert pops["lvef-50-3m"] == {
            "initial-population": lvef["initial-population"] + 1,
            "denominator": lvef["denominator"] + 1,
            "denominator-exclusion": lvef["denominator-exclusion"] + 1,  # p5: no-follow-up
            "numerator": lvef["numerator"],
        }
        assert pops["bp-140-90-3m"] == {
            "initial-population": bp["initial-population"] + 1,
            "denominator": bp["denominator"] + 1,
            "denominator-exclusion": bp["denominator-exclusion"] + 1,
            "numerator": bp["numerator"],
        }
        assert pops["smoking-cessation-3m"] == {
            **smoking,
            "initial-population": smoking["initial-population"] + 1,  # p5 gave no status
        }
