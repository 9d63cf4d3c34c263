"""The regulator's per-product RWD export over HTTP: consented Bundles only, all logged."""

from __future__ import annotations

import json
from pathlib import Path

from adapters.trace_export import ndjson_line
from exchange.bundles.read import bundle_by_id
from exchange.privacy.access import access_count
from tests.api_helpers import is_outcome, open_api
from tests.indexes.test_trace_api import GTIN, pack
from tests.indexes.test_trace_by_content import APPROVAL, CN_CODE, with_invoice
from tests.settlement.test_settlement_index import consent_bundle

REGULATOR = "nmpa"
PASSPORT = "http://hl7.org/fhir/sid/passport-RUS"


def patient_pack(n: int, passport: str, lot: str = "AB12C34") -> bytes:
    """The administration fixture for patient `passport` (their MRN made unique too)."""
    text = pack(lot, f"SER{n:06d}", n).decode()
    return text.replace("753108642", passport).replace("BL2026110391", f"BL-{passport}").encode()


def test_only_consented_bundles_leave_and_each_request_is_one_access_entry(
    tmp_path: Path, db_url: str
) -> None:
    with open_api(tmp_path / "data", db_url) as api:
        hospital = api.credential("hospital", "hospital-a")
        regulator = {**api.credential("regulator", REGULATOR), "X-Purpose-Of-Use": "HRESCH"}
        posted = {}
        for n, passport in enumerate(["111111111", "222222222", "333333333"]):
            r = api.post(patient_pack(n, passport), hospital)
            assert r.status_code == 201, r.text
            posted[passport] = r.json()["id"]
        other_lot = api.post(patient_pack(9, "111111111", lot="ZZ99X01"), hospital)
        assert other_lot.status_code == 201
        # 111: research consent naming the regulator; 222: consent for an insurer only;
        # 333: a research consent, then withdrawn.
        for body in (
            consent_bundle((PASSPORT, "111111111"), REGULATOR, purpose="HRESCH"),
            consent_bundle((PASSPORT, "222222222"), "insurer-a", purpose="HPAYMT"),
            consent_bundle((PASSPORT, "333333333"), REGULATOR, purpose="HRESCH"),
            consent_bundle(
                (PASSPORT, "333333333"), REGULATOR, purpose="HRESCH", status="inactive",
                date_time="2026-06-01T00:00:00Z",
            ),
        ):  # fmt: skip
            assert api.post(body, hospital).status_code == 201
        before = access_count(api.services.engine)

        got = api.client.get("/v1/trace/rwd-export", params={"gtin": GTIN}, headers=regulator)
        assert got.status_code == 200, got.text
        assert got.headers["content-type"].startswith("application/fhir+ndjson")
        expected = [
            ndjson_line(bundle_by_id(api.services.vault, bundle_id).data)
            for bundle_id in (posted["111111111"], other_lot.json()["id"])
        ]
        assert got.content == b"".join(expected)
        for line in got.content.splitlines():
            assert json.loads(line)["resourceType"] == "Bundle"
        by_lot = api.client.get(
            "/v1/trace/rwd-export", params={"gtin": GTIN, "lot": "ZZ99X01"}, headers=regulator
        )
        assert by_lot.content == expected[1]
        clinical = {**regulator, "X-Purpose-Of-Use": "CLINTRCH"}
        assert api.client.get(
            "/v1/trace/rwd-export", params={"gtin": GTIN}, headers=clinical
        ).content == b"".join(expected)  # HRESCH covers its CLINTRCH

        refused = [
            ({**regulator, "X-Purpose-Of-Use": "HPAYMT"}, {"gtin": GTIN}, 403),
            ({k: v for k, v in regulator.items() if k != "X-Purpose-Of-Use"}, {"gtin": GTIN}, 403),
            (regulator, {"gtin": "12345"}, 400),
        ]
        for headers, params, status in refused:
            r = api.client.get("/v1/trace/rwd-export", params=params, headers=headers)
            assert r.status_code == status, r.text
            is_outcome(r)
        assert access_count(api.services.engine) == before + 3 + len(refused)

        # Other roles get nothing and append nothing.
        for role, org in (("hospital", "hospital-a"), ("insurer", "insurer-a"),
                          ("auditor", None), ("admin", None)):  # fmt: skip
            r = api.client.get(
                "/v1/trace/rwd-export", params={"gtin": GTIN}, headers=api.credential(role, org)
            )
            assert r.status_code == 403
        assert access_count(api.services.engine) == before + 3 + len(refused)


def test_a_regulator_needs_an_org(tmp_path: Path) -> None:
    from exchange.identity.clients import ClientError, check_client

    try:
        check_client("nmpa", "regulator", None)
    except ClientError as e:
        assert "--org" in str(e)
    else:
        raise AssertionError("a regulator without an org was accepted")


def test_the_export_takes_the_approval_and_the_chinese_code_and_mixed_bundles(
    tmp_path: Path,
) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential("hospital", "hospital-a")
        regulator = {**api.credential("regulator", REGULATOR), "X-Purpose-Of-Use": "HRESCH"}
        mixed = with_invoice(json.loads(patient_pack(1, "111111111")))
        r = api.post(json.dumps(mixed, ensure_ascii=False).encode(), hospital)
        assert r.status_code == 201 and r.json()["kind"] == "settlement", r.text
        consent = consent_bundle((PASSPORT, "111111111"), REGULATOR, purpose="HRESCH")
        assert api.post(consent, hospital).status_code == 201
        expected = ndjson_line(bundle_by_id(api.services.vault, r.json()["id"]).data)
        for params in (
            {"gtin": GTIN},
            {"approval": "琼特药审[2026]0158号"},
            {"approval": APPROVAL, "lot": "AB12C34"},
            {"cn_code": CN_CODE},
        ):
            got = api.client.get("/v1/trace/rwd-export", params=params, headers=regulator)
            assert got.status_code == 200, got.text
            assert got.content == expected, params
        got = api.client.get("/v1/trace/rwd-export", params={"cn_code": "123"}, headers=regulator)
        assert got.status_code == 400
        assert is_outcome(got)["issue"][0]["expression"] == ["cn_code"]
