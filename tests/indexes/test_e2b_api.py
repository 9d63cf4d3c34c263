"""GET /fhir/Bundle/{id}/$e2b: a stored adverse-event Bundle as an ICSR, over HTTP."""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from adapters.e2b import icsr_for_bundle
from exchange.bundles.read import bundle_by_id
from exchange.privacy.access import access_count
from tests.api_helpers import is_outcome, open_api
from tests.paths import FIXTURES as TEST_FIXTURES
from tests.settlement.test_settlement_index import consent_bundle

FIXTURES = TEST_FIXTURES / "trace"
EVENT = (FIXTURES / "lecheng-rwd-adverse-event.json").read_bytes()
PASSPORT = ("http://hl7.org/fhir/sid/passport-RUS", "753108642")
REGULATOR = "nmpa"
NS = {"v3": "urn:hl7-org:v3"}


def disclosures(api, hospital: dict[str, str]) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    answer = api.client.get(
        f"/v1/patients/{PASSPORT[1]}/disclosures", params={"system": PASSPORT[0]}, headers=hospital
    )
    assert answer.status_code == 200, answer.text
    events = [e["resource"] for e in answer.json().get("entry", [])]
    return [(e["subtype"][0]["code"], e["outcome"]) for e in events]


def test_the_hospital_and_a_consented_regulator_get_the_icsr_each_request_one_entry(
    tmp_path: Path, db_url: str
) -> None:
    with open_api(tmp_path, db_url) as api:
        hospital = api.credential("hospital", "boao-lecheng")
        other = api.credential("hospital", "other-hospital")
        regulator = {**api.credential("regulator", REGULATOR), "X-Purpose-Of-Use": "HRESCH"}
        r = api.post(EVENT, hospital)
        assert r.status_code == 201, r.text
        bundle_id = r.json()["id"]
        url = f"/fhir/Bundle/{bundle_id}/$e2b"

        before = access_count(api.services.engine)
        got = api.client.get(url, headers=hospital)
        assert got.status_code == 200, got.text
        assert got.headers["content-type"].startswith("application/xml")
        root = etree.fromstring(got.content)
        batch = root.xpath("v3:id", namespaces=NS)[0].get("extension")
        stored = bundle_by_id(api.services.vault, bundle_id)
        assert stored is not None
        # The bytes the adapter gives for the stored Bundle at that batch's instant.
        rendered = icsr_for_bundle(stored.data, now=_batch_time(root))
        assert rendered.batch_number == batch and rendered.xml == got.content
        assert access_count(api.services.engine) == before + 1

        # Another hospital and the regulator without consent: absent, one refusal each.
        for headers in (other, regulator):
            refused = api.client.get(url, headers=headers)
            assert refused.status_code == 404, refused.text
            is_outcome(refused)
        no_purpose = {k: v for k, v in regulator.items() if k != "X-Purpose-Of-Use"}
        assert api.client.get(url, headers=no_purpose).status_code == 403
        assert access_count(api.services.engine) == before + 4

        consent = consent_bundle(PASSPORT, REGULATOR, purpose="HRESCH")
        assert api.post(consent, hospital).status_code == 201
        after_consent = access_count(api.services.engine)
        got = api.client.get(url, headers=regulator)
        assert got.status_code == 200, got.text
        assert etree.fromstring(got.content).xpath("v3:id", namespaces=NS)
        assert access_count(api.services.engine) == after_consent + 1
        # In the patient's accounting: both renderings; the refusals named no one.
        assert disclosures(api, hospital) == [("operation", "0"), ("operation", "0")]

        for role, org in (("insurer", "insurer-a"), ("auditor", None), ("mediator", "m-1")):
            r = api.client.get(url, headers=api.credential(role, org))
            assert r.status_code == 403, (role, r.text)


def test_a_bundle_without_an_adverse_event_is_422_and_an_unknown_one_404(tmp_path: Path) -> None:
    with open_api(tmp_path) as api:
        hospital = api.credential("hospital", "boao-lecheng")
        record = (FIXTURES / "lecheng-rwd-administration.json").read_bytes()
        r = api.post(record, hospital)
        assert r.status_code == 201, r.text
        before = access_count(api.services.engine)
        got = api.client.get(f"/fhir/Bundle/{r.json()['id']}/$e2b", headers=hospital)
        assert got.status_code == 422, got.text
        assert "AdverseEvent" in is_outcome(got)["issue"][0]["diagnostics"]
        got = api.client.get("/fhir/Bundle/no-such-bundle/$e2b", headers=hospital)
        assert got.status_code == 404
        is_outcome(got)
        assert access_count(api.services.engine) == before + 2


def _batch_time(root: etree._Element):  # type: ignore[no-untyped-def]
    from datetime import datetime

    value = root.xpath("v3:creationTime", namespaces=NS)[0].get("value")
    return datetime.strptime(value, "%Y%m%d%H%M%S%z")
