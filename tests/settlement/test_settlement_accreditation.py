"""Settlement search results carry the hospital's accreditation status on the service date."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fhir.resources.R4B.bundle import Bundle as FhirBundle

from exchange.http.routes.settlement import ACCREDITATION_STATUS_EXTENSION
from exchange.registry import institutions as inst
from tests.api_helpers import Api, open_api
from tests.registry.test_institutions import BASE
from tests.settlement.test_settlement_index import HOSPITAL, PASSPORT, settlement_bundle

KIM = (PASSPORT, "M10000001")
TODAY = date.today()
# Surveyed on 2023-01-10: three years on, on 2026-01-10, the accreditation has lapsed although
# its stated end is later.
JCI = inst.Accreditation("JCI", "hospital", date(2022, 1, 1), date(2027, 12, 31), date(2023, 1, 10))


def _register(api: Api) -> None:
    key = Ed25519PrivateKey.generate()
    inst.register_admin_key(api.services.engine, "admin-1", key.public_key())
    record = replace(
        BASE,
        org=HOSPITAL,
        licence_valid_from=TODAY - timedelta(days=365),
        licence_valid_to=TODAY + timedelta(days=365),
        accreditations=(JCI,),
    )
    inst.append_attestation(api.services.log, inst.sign_attestation(record, "admin-1", key))


def _statuses(api: Api, headers: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    answer = api.client.get("/fhir/Claim", headers=headers)
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    FhirBundle.model_validate(doc)
    out = {}
    for e in doc["entry"]:
        (ext,) = e["extension"]
        assert ext["url"] == ACCREDITATION_STATUS_EXTENSION
        out[e["resource"]["id"]] = ext["extension"]
    return out


def test_each_result_says_the_accreditation_status_on_its_service_date(tmp_path: Path) -> None:
    with open_api(tmp_path) as api:
        _register(api)
        headers = api.credential()
        for tag, created in (("A1", "2025-06-01T10:00:00Z"), ("B1", "2026-03-03T16:00:00Z")):
            body = settlement_bundle(KIM, "insurer-a", tag=tag, created=created)
            assert api.post(body, headers).status_code == 201
        got = _statuses(api, headers)
        assert got["c-A1"] == [
            {"url": "body", "valueString": "JCI"},
            {"url": "date", "valueDate": "2025-06-01"},
            {"url": "status", "valueCode": "accredited"},
        ]
        assert got["c-B1"] == [
            {"url": "body", "valueString": "JCI"},
            {"url": "date", "valueDate": "2026-03-03"},
            {"url": "status", "valueCode": "lapsed"},
            {"url": "lapsed", "valueDate": "2026-01-10"},
        ]


def test_a_hospital_the_registry_does_not_know_is_unaccredited(tmp_path: Path) -> None:
    with open_api(tmp_path) as api:
        headers = api.credential("hospital", "hospital-b")
        assert api.post(settlement_bundle(KIM, "insurer-a"), headers).status_code == 201
        assert _statuses(api, headers)["c-A1"] == [
            {"url": "date", "valueDate": "2026-03-03"},
            {"url": "status", "valueCode": "none"},
        ]
