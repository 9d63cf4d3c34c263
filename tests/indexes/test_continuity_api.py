"""The continuity endpoints: a patient's IPS and a Bundle's HL7 v2.5.1 message over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle as R4BBundle

from adapters.hl7v2.read import read_message
from exchange.privacy.access import access_count, disclosures_of
from tests.adapters.test_adapt_ips import ips_problems, section
from tests.api_helpers import is_outcome, open_api
from tests.paths import FIXTURES as TEST_FIXTURES

FIXTURES = TEST_FIXTURES / "continuity"
KR = ("boao-kr-inpatient-record.json", "boao-kr-discharge-meds.json")
MRN = "https://fhir.boao-lecheng-hospital.example/sid/mrn|BL2026110045"
PASSPORT = "http://hl7.org/fhir/sid/passport-KOR|M12345678"
MEDICATIONS = "10160-0"


@pytest.fixture
def api(tmp_path: Path):  # type: ignore[no-untyped-def]
    with open_api(tmp_path) as api:
        yield api


def submit_kr(api) -> tuple[dict[str, str], list[str]]:  # type: ignore[no-untyped-def]
    hospital = api.credential("hospital", "boao-lecheng")
    ids = []
    for name in KR:
        r = api.post((FIXTURES / name).read_bytes(), hospital)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return hospital, ids


def test_summary_by_any_identifier_is_a_conforming_ips(api) -> None:  # type: ignore[no-untyped-def]
    hospital, _ = submit_kr(api)
    docs = []
    for identifier in (MRN, PASSPORT):
        r = api.client.get(
            "/fhir/Patient/$summary", params={"identifier": identifier}, headers=hospital
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/fhir+json")
        R4BBundle.model_validate_json(r.content)
        doc = r.json()
        assert ips_problems(doc) == []
        docs.append(doc)
    # Both Bundles went in: the discharge medication is in the summary.
    meds = section(docs[0], MEDICATIONS)
    assert meds is not None and meds.get("entry")
    # Either identifier finds the same Bundles (the generated ids differ per document).
    assert [len(section(d, MEDICATIONS)["entry"]) for d in docs] == [len(meds["entry"])] * 2
    assert [len(d["entry"]) for d in docs] == [len(docs[0]["entry"])] * 2


def test_summary_is_only_the_submitters(api) -> None:  # type: ignore[no-untyped-def]
    submit_kr(api)
    other = api.credential("hospital", "pujiang-intl")
    r = api.client.get("/fhir/Patient/$summary", params={"identifier": MRN}, headers=other)
    assert r.status_code == 404
    is_outcome(r)
    auditor = api.credential("auditor")
    r = api.client.get("/fhir/Patient/$summary", params={"identifier": MRN}, headers=auditor)
    assert r.status_code == 403


@pytest.mark.parametrize("identifier", ["BL2026110045", "|BL2026110045", "urn:x|", ""])
def test_summary_needs_system_and_value(api, identifier: str) -> None:  # type: ignore[no-untyped-def]
    hospital, _ = submit_kr(api)
    r = api.client.get(
        "/fhir/Patient/$summary", params={"identifier": identifier}, headers=hospital
    )
    assert r.status_code == 400
    is_outcome(r)


@pytest.mark.parametrize("message", ["ADT_A08", "ORU_R01", "MDM_T02"])
def test_hl7v2_of_a_stored_bundle_parses_strictly(api, message: str) -> None:  # type: ignore[no-untyped-def]
    hospital, ids = submit_kr(api)
    r = api.client.get(
        f"/fhir/Bundle/{ids[0]}/$hl7v2", params={"message": message}, headers=hospital
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("x-application/hl7-v2+er7")
    parsed = read_message(r.content.decode("utf-8"), strict=True)
    assert parsed.structure in (message, "ADT_A01")
    assert parsed.charset == "UNICODE UTF-8"
    assert parsed.patient is not None


def test_hl7v2_refusals(api) -> None:  # type: ignore[no-untyped-def]
    hospital, ids = submit_kr(api)
    url = f"/fhir/Bundle/{ids[0]}/$hl7v2"
    r = api.client.get(url, params={"message": "ORM_O01"}, headers=hospital)
    assert r.status_code == 400
    is_outcome(r)
    other = api.credential("hospital", "pujiang-intl")
    assert api.client.get(url, headers=other).status_code == 404
    assert api.client.get("/fhir/Bundle/nope/$hl7v2", headers=hospital).status_code == 404
    assert api.client.get(url).status_code == 401


def test_each_export_is_one_access_entry_about_the_patient(api) -> None:  # type: ignore[no-untyped-def]
    hospital, ids = submit_kr(api)
    bundle_subject = api.entry(api.log_size() - 1).subject
    assert bundle_subject is not None
    before = api.log_size()
    r = api.client.get("/fhir/Patient/$summary", params={"identifier": MRN}, headers=hospital)
    assert r.status_code == 200
    r = api.client.get(f"/fhir/Bundle/{ids[0]}/$hl7v2", headers=hospital)
    assert r.status_code == 200
    assert access_count(api.services.engine) == 2
    assert api.log_size() == before + 2
    for index in (before, before + 1):
        entry = api.entry(index)
        assert (entry.kind, entry.sender, entry.subject) == (
            "access",
            "boao-lecheng",
            bundle_subject,
        )
    rows = disclosures_of(api.services.engine, bundle_subject)
    assert [(row.action, row.purpose, row.outcome) for row in rows] == [
        ("transform", "TREAT", "0")
    ] * 2
    # A refusal discloses nothing and is not an export.
    other = api.credential("hospital", "pujiang-intl")
    api.client.get("/fhir/Patient/$summary", params={"identifier": MRN}, headers=other)
    assert api.log_size() == before + 2
