"""`GET /fhir/VerificationResult?target=Organization/{org}` over real HTTP: one R4B
VerificationResult per licence and accreditation, its status on today's date, the signing
admin, and the attestation's ledger entry, which verifies."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fhir.resources.R4B.bundle import Bundle as FhirBundle
from fhir.resources.R4B.verificationresult import VerificationResult
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import update

from exchange.http.routes import verification as vr
from exchange.registry import institutions as inst
from ledger.entry import parse_entry
from ledger.jcs import canonicalize
from tests.api_helpers import Api, is_outcome, open_api
from tests.registry.test_institutions import BASE

TODAY = date.today()
LIVE = inst.Accreditation("JCI", "academic medical center", TODAY - timedelta(days=300),
                          TODAY + timedelta(days=65), TODAY - timedelta(days=30))  # fmt: skip
LAPSED = inst.Accreditation("ISO 9001", "quality management", TODAY - timedelta(days=900),
                            TODAY - timedelta(days=1))  # fmt: skip
COMING = inst.Accreditation("Temos", "medical travel", TODAY + timedelta(days=10),
                            TODAY + timedelta(days=1000))  # fmt: skip
RECORD = replace(
    BASE,
    licence_valid_from=TODAY - timedelta(days=365),
    licence_valid_to=TODAY + timedelta(days=365),
    accreditations=(LIVE, LAPSED, COMING),
)


def _attest(api: Api, record: inst.Institution, admin: str = "registry-admin") -> int:
    key = Ed25519PrivateKey.generate()
    inst.register_admin_key(api.services.engine, admin, key.public_key())
    return inst.append_attestation(api.services.log, inst.sign_attestation(record, admin, key))


def _results(api: Api, target: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    answer = api.client.get("/fhir/VerificationResult", params={"target": target}, headers=headers)
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    FhirBundle.model_validate(doc)
    resources = [e["resource"] for e in doc["entry"]]
    for r in resources:
        VerificationResult.model_validate(r)
    return resources


def test_one_result_per_licence_and_accreditation(tmp_path: Path, db_url: str) -> None:
    with open_api(tmp_path, db_url) as api:
        index = _attest(api, RECORD)
        got = _results(api, f"Organization/{RECORD.org}", api.credential("insurer", "ins-1"))
        assert [r["status"] for r in got] == ["validated", "validated", "req-revalid", "in-process"]
        assert [r["targetLocation"][0] for r in got] == [
            "Organization.identifier[0]",
            *(f"Organization.extension('{vr.ACCREDITATION_EXTENSION}')[{n}]" for n in range(3)),
        ]
        assert [r["nextScheduled"] for r in got] == [
            RECORD.licence_valid_to.isoformat(),
            *(a.valid_to.isoformat() for a in RECORD.accreditations),
        ]
        entry = parse_entry(api.services.log.entries(index, index + 1)[0])
        for r in got:
            assert r["target"] == [{"reference": f"Organization/{RECORD.org}"}]
            ledger = r["extension"][0]
            assert ledger["url"] == vr.LEDGER_ENTRY_EXTENSION
            assert ledger["valueIdentifier"]["value"] == str(index)
            assert r["validator"][0]["organization"]["identifier"]["value"] == "registry-admin"
            assert r["attestation"]["date"] == entry.time[:10]
            assert r["lastPerformed"] == entry.time
            # The signature in the resource verifies the record over its RFC 8785 bytes with
            # the key it names: anyone can re-check what the admin attested.
            key = base64.b64decode(r["validator"][0]["identityCertificate"])
            unsigned = {"admin": "registry-admin", "key": base64.b64encode(key).decode(),
                        "record": RECORD.to_json()}  # fmt: skip
            signature = base64.b64decode(r["attestation"]["sourceSignature"]["data"])
            Ed25519PublicKey.from_public_bytes(key).verify(signature, canonicalize(unsigned))
        assert got[1]["primarySource"][0]["who"]["display"] == "JCI (academic medical center)"
        # The regulator supervising the institution reads the same results.
        regulator = api.credential("regulator", "nmpa")
        as_read = _results(api, f"Organization/{RECORD.org}", regulator)
        assert [{**r, "statusDate": None} for r in as_read] == [
            {**r, "statusDate": None} for r in got
        ]  # statusDate is when each answer was made


def test_a_later_change_and_a_blacklisting_show(tmp_path: Path) -> None:
    with open_api(tmp_path) as api:
        _attest(api, RECORD)
        later = _attest(api, replace(RECORD, blacklisted=True, blacklist_reason="fraud"), "a2")
        got = _results(api, RECORD.org, api.credential("auditor", None))
        assert {r["status"] for r in got} == {"val-fail"}
        assert {r["extension"][0]["valueIdentifier"]["value"] for r in got} == {str(later)}
        assert {r["attestation"]["who"]["identifier"]["value"] for r in got} == {"a2"}


def test_refusals(tmp_path: Path) -> None:
    with open_api(tmp_path) as api:
        index = _attest(api, RECORD)
        headers = api.credential()
        get = api.client.get
        missing = get("/fhir/VerificationResult", params={"target": "nobody"}, headers=headers)
        assert (
            missing.status_code == 404
            and "nobody" in is_outcome(missing)["issue"][0]["diagnostics"]
        )
        bad = get("/fhir/VerificationResult", params={"target": "Patient/x"}, headers=headers)
        assert bad.status_code == 400
        assert is_outcome(bad)["issue"][0]["expression"] == ["target"]
        assert get("/fhir/VerificationResult", headers=headers).status_code == 400
        unauthenticated = get("/fhir/VerificationResult", params={"target": RECORD.org})
        assert unauthenticated.status_code == 401
        # A stored attestation that no longer matches its ledger entry is not answered.
        forged = json.loads(inst.sign_attestation(RECORD, "x", Ed25519PrivateKey.generate()))
        with api.services.engine.begin() as conn:
            conn.execute(
                update(inst.attestations_table)
                .where(inst.attestations_table.c.idx == index)
                .values(data=canonicalize(forged))
            )
        tampered = get("/fhir/VerificationResult", params={"target": RECORD.org}, headers=headers)
        assert tampered.status_code == 409
        assert f"entry {index}" in is_outcome(tampered)["issue"][0]["diagnostics"]


@given(
    st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)),
    st.integers(-400, 400),
    st.integers(0, 800),
    st.booleans(),
)
def test_status_is_validated_exactly_within_the_validity(
    start: date, offset: int, length: int, blacklisted: bool
) -> None:
    end = start + timedelta(days=length)
    today = start + timedelta(days=offset)
    status = vr.status_of(start, end, blacklisted, today)
    if blacklisted:
        assert status == "val-fail"
    else:
        assert (status == "validated") == (start <= today <= end)
        assert (status == "req-revalid") == (today > end)
