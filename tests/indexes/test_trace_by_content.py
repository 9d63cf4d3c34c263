"""Checks and the recall index follow a Bundle's content, not the kind it is filed under."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from exchange.privacy.access import access_count
from tests.api_helpers import is_outcome, open_api
from tests.paths import FIXTURES as TEST_FIXTURES

ADMINISTRATION = TEST_FIXTURES / "trace" / "lecheng-rwd-administration.json"
GTIN = "00312345678906"
APPROVAL = "琼特药审〔2026〕0158号"
CN_CODE = "83741290012345678901"
MRN = "https://fhir.boao-lecheng-hospital.example/sid/mrn|BL2026110391"
MEDICATION = "Bundle.entry[7].resource"


def rwd() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ADMINISTRATION.read_text("utf-8"))
    return doc


def with_invoice(doc: dict[str, Any]) -> dict[str, Any]:
    """The same report of use plus one Invoice: filed as `settlement`."""
    doc["entry"].append(
        {
            "fullUrl": "https://fhir.boao-lecheng-hospital.example/fhir/Invoice/inv-1",
            "resource": {
                "resourceType": "Invoice",
                "id": "inv-1",
                "status": "issued",
                "subject": {"reference": "Patient/pt-ru-01"},
            },
        }
    )
    return doc


def without_lot(doc: dict[str, Any]) -> dict[str, Any]:
    med = doc["entry"][7]["resource"]
    del med["batch"]["lotNumber"]
    med["extension"] = [e for e in med["extension"] if "(10)" not in str(e.get("valueString", ""))]
    return doc


def without_approval(doc: dict[str, Any]) -> dict[str, Any]:
    fma = doc["entry"][7]["resource"]["extension"][0]
    fma["extension"] = [e for e in fma["extension"] if e["url"] != "importApproval"]
    return doc


def body(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()


def test_a_mixed_bundle_with_a_bad_lot_is_refused_with_the_fhirpath(tmp_path: Path) -> None:
    with open_api(tmp_path) as api:
        hospital = api.credential()
        for doc in (without_lot(rwd()), without_lot(with_invoice(rwd()))):
            r = api.post(body(doc), hospital)
            assert r.status_code == 422, r.text
            issues = is_outcome(r)["issue"]
            assert [i["expression"] for i in issues] == [[f"{MEDICATION}.batch.lotNumber"]]
        r = api.client.get("/v1/trace", params={"gtin": GTIN}, headers=hospital)
        assert r.status_code == 200 and r.json()["entries"] == []


def test_the_missing_import_approval_is_refused_whatever_the_kind(tmp_path: Path) -> None:
    with open_api(tmp_path) as api:
        hospital = api.credential()
        for doc in (without_approval(rwd()), without_approval(with_invoice(rwd()))):
            r = api.post(body(doc), hospital)
            assert r.status_code == 422, r.text
            expressions = [i["expression"] for i in is_outcome(r)["issue"]]
            assert expressions == [[f"{MEDICATION}.extension[0].extension('importApproval')"]]


def test_a_mixed_bundle_is_found_by_every_product_key_and_summarised(
    tmp_path: Path, db_url: str
) -> None:
    with open_api(tmp_path, db_url) as api:
        hospital = api.credential("hospital", "boao-lecheng")
        other = api.credential("hospital", "other-hospital")
        r = api.post(body(with_invoice(rwd())), hospital)
        assert r.status_code == 201, r.text
        assert r.json()["kind"] == "settlement"
        index, bundle_id = r.json()["index"], r.json()["id"]

        def ask(who: dict[str, str], **params: str) -> list[int]:
            r = api.client.get("/v1/trace", params=params, headers=who)
            assert r.status_code == 200, r.text
            return [e["index"] for e in r.json()["entries"]]

        assert ask(hospital, gtin=GTIN, lot="AB12C34") == [index]
        # The approval number as a notice prints it: other brackets, spaces, full width.
        assert ask(hospital, approval="琼特药审[2026] 0158号") == [index]
        assert ask(hospital, approval=APPROVAL, lot="AB12C34") == [index]
        assert ask(hospital, cn_code=CN_CODE) == [index]
        assert ask(hospital, approval="琼特药审〔2026〕0159号") == []
        assert ask(hospital, approval=APPROVAL, lot="AB12C35") == []
        assert ask(other, approval=APPROVAL) == []
        answer = api.client.get(
            "/v1/trace", params={"approval": "琼特药审[2026]0158号"}, headers=hospital
        ).json()
        assert answer["approval"] == APPROVAL and answer["gtin"] is None
        assert answer["entries"] == [{"index": index, "bundle": f"/fhir/Bundle/{bundle_id}"}]

        before = access_count(api.services.engine)
        r = api.client.get("/fhir/Patient/$summary", params={"identifier": MRN}, headers=hospital)
        assert r.status_code == 200, r.text
        ips = r.json()
        kinds = {e["resource"]["resourceType"] for e in ips["entry"]}
        assert "Procedure" in kinds  # the implant the mixed Bundle reported
        assert "Invoice" not in kinds
        assert access_count(api.services.engine) == before + 1


def test_bad_product_keys_are_400_naming_the_parameter(tmp_path: Path) -> None:
    with open_api(tmp_path) as api:
        hospital = api.credential()
        for params, name in (
            ({"cn_code": "8374129001234567890"}, "cn_code"),
            ({"lot": "AB12C34"}, "gtin"),
        ):
            r = api.client.get("/v1/trace", params=params, headers=hospital)
            assert r.status_code == 400, (params, r.text)
            assert is_outcome(r)["issue"][0]["expression"] == [name]
