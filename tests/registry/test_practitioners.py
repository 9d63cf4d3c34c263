"""Practitioner licences: signed on the ledger, served as R4B VerificationResults, and checked
against each Procedure's performer at intake (a warning, or 422 in strict deployments)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from fhir.resources.R4B.bundle import Bundle as FhirBundle
from fhir.resources.R4B.verificationresult import VerificationResult
from hypothesis import given
from hypothesis import strategies as st

from exchange.cli.main import main
from exchange.http.routes import verification as vr
from exchange.registry import institutions as inst
from exchange.registry import practitioners as pr
from exchange.registry.admission import FLAGS_HEADER
from ledger.entry import commitment
from tests.api_helpers import HOSPITAL_ORG, Api, is_outcome, open_api, wrap
from tests.registry.test_institutions import BASE

TODAY = date.today()
DR_WANG = pr.Licence(
    "dr-wang", HOSPITAL_ORG, "physician", "110440100000001",
    TODAY - timedelta(days=400), TODAY + timedelta(days=400),
)  # fmt: skip
DR_SMITH = pr.Licence(
    "dr-smith", HOSPITAL_ORG, "foreign-short-term", "FST-2026-007",
    date(2026, 1, 10), date(2026, 7, 9),
)  # fmt: skip
HOSPITAL = replace(
    BASE,
    org=HOSPITAL_ORG,
    licence_valid_from=TODAY - timedelta(days=365),
    licence_valid_to=TODAY + timedelta(days=365),
    accreditations=(),
)


def _admin(api: Api) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    inst.register_admin_key(api.services.engine, "registry-admin", key.public_key())
    inst.append_attestation(
        api.services.log, inst.sign_attestation(HOSPITAL, "registry-admin", key)
    )
    return key


def _licence(api: Api, key: Ed25519PrivateKey, lic: pr.Licence) -> int:
    return pr.append_licence(api.services.log, pr.sign_licence(lic, "registry-admin", key))


def _procedure_bundle(performer: dict[str, Any], when: str) -> bytes:
    proc = {
        "resourceType": "Procedure",
        "status": "completed",
        "code": {"text": "coronary stent placement"},
        "subject": {"reference": "urn:uuid:00000000-0000-0000-0000-000000000002"},
        "performedDateTime": when,
        "performer": [{"actor": {"display": "cath lab"}}, {"actor": performer}],
    }
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:example:mrn", "value": "M1"}],
    }
    return wrap([json.dumps(proc).encode(), json.dumps(patient).encode()])


def test_a_short_term_registration_lasts_at_most_a_year() -> None:
    pr.Licence("x", "h", "foreign-short-term", "F1", date(2026, 3, 1), date(2027, 2, 28))
    with pytest.raises(inst.RegistryError, match="at most one year"):
        pr.Licence("x", "h", "foreign-short-term", "F1", date(2026, 3, 1), date(2027, 3, 1))
    # A physician's practice licence has no such limit.
    pr.Licence("x", "h", "physician", "P1", date(2026, 3, 1), date(2036, 3, 1))


@given(st.dates(date(2000, 1, 1), date(2090, 1, 1)), st.integers(0, 800))
def test_short_term_validity_property(start: date, days: int) -> None:
    end = start + timedelta(days=days)
    limit = inst._years_after(start, 1)
    if end < limit:
        assert pr.Licence("x", "h", "foreign-short-term", "F", start, end).valid_on(end)
    else:
        with pytest.raises(inst.RegistryError):
            pr.Licence("x", "h", "foreign-short-term", "F", start, end)


def test_verification_results_of_a_practitioner(tmp_path: Path) -> None:
    with open_api(tmp_path) as api:
        key = _admin(api)
        first = _licence(api, key, DR_WANG)
        old = replace(DR_WANG, licence_number="110440100000000", valid_to=TODAY - timedelta(days=2))
        _licence(api, key, old)
        revoked = _licence(api, key, replace(DR_WANG, revoked=True, licence_number="X-1"))
        for role, org in (("regulator", "reg-1"), ("hospital", HOSPITAL_ORG), ("insurer", "i-1")):
            answer = api.client.get(
                "/fhir/VerificationResult",
                params={"target": "Practitioner/dr-wang"},
                headers=api.credential(role, org),
            )
            assert answer.status_code == 200, answer.text
            FhirBundle.model_validate(answer.json())
        got = [e["resource"] for e in answer.json()["entry"]]
        for r in got:
            VerificationResult.model_validate(r)
            assert r["target"] == [{"reference": "Practitioner/dr-wang"}]
        assert [r["status"] for r in got] == ["validated", "req-revalid", "val-fail"]
        assert got[0]["extension"][0]["valueIdentifier"]["value"] == str(first)
        licence = got[0]["extension"][1]
        assert licence["url"] == vr.LICENCE_EXTENSION
        assert {"url": "number", "valueString": DR_WANG.licence_number} in licence["extension"]
        # The attestation the result names is the one its ledger entry commits to.
        row = (
            api.services.engine.connect()
            .execute(
                pr.practitioner_licences_table.select().where(
                    pr.practitioner_licences_table.c.idx == revoked
                )
            )
            .one()
        )
        entry = api.entry(revoked)
        assert entry.kind == "practitioner" and entry.sender == HOSPITAL_ORG
        assert commitment(bytes(row.salt), bytes(row.data)) == entry.commit
        unknown = api.client.get(
            "/fhir/VerificationResult",
            params={"target": "Practitioner/nobody"},
            headers=api.credential("regulator", "reg-1"),
        )
        assert (
            unknown.status_code == 404
            and "nobody" in is_outcome(unknown)["issue"][0]["diagnostics"]
        )


def test_a_tampered_licence_is_a_conflict(tmp_path: Path) -> None:
    with open_api(tmp_path) as api:
        key = _admin(api)
        idx = _licence(api, key, DR_WANG)
        forged = pr.sign_licence(replace(DR_WANG, valid_to=date(2099, 1, 1)), "registry-admin", key)
        with api.services.engine.begin() as conn:
            t = pr.practitioner_licences_table
            conn.execute(t.update().where(t.c.idx == idx).values(data=forged))
        answer = api.client.get(
            "/fhir/VerificationResult",
            params={"target": "Practitioner/dr-wang"},
            headers=api.credential("regulator", "reg-1"),
        )
        assert answer.status_code == 409


def test_unsigned_or_unregistered_licences_append_nothing(tmp_path: Path) -> None:
    with open_api(tmp_path) as api:
        _admin(api)
        size = api.log_size()
        stranger = Ed25519PrivateKey.generate()
        with pytest.raises(inst.RegistryError, match="registered key"):
            _licence(api, stranger, DR_WANG)
        data = bytearray(pr.sign_licence(DR_WANG, "registry-admin", stranger))
        with pytest.raises(inst.RegistryError):
            pr.append_licence(api.services.log, bytes(data).replace(b"dr-wang", b"dr-wong"))
        assert api.log_size() == size


PERFORMERS = [
    {"reference": "Practitioner/dr-wang"},
    {"identifier": {"system": "urn:medledger:practitioner-licence", "value": "110440100000001"}},
]


@pytest.mark.parametrize("performer", PERFORMERS)
def test_intake_flags_a_performer_without_a_licence_on_the_day(
    tmp_path: Path, performer: dict[str, Any]
) -> None:
    with open_api(tmp_path) as api:
        headers = api.credential()
        before = _procedure_bundle(performer, (DR_WANG.valid_from - timedelta(days=1)).isoformat())
        # The registry knows no practitioner of this hospital yet: nothing to check against.
        quiet = api.post(before, headers)
        assert quiet.status_code == 201 and "warnings" not in quiet.json()
        key = _admin(api)
        _licence(api, key, DR_WANG)
        ok = api.post(_procedure_bundle(performer, TODAY.isoformat() + "T09:30:00+08:00"), headers)
        assert ok.status_code == 201 and "warnings" not in ok.json()
        assert FLAGS_HEADER not in ok.headers
        late = _procedure_bundle(performer, (DR_WANG.valid_from - timedelta(days=2)).isoformat())
        flagged = api.post(late, headers)
        assert flagged.status_code == 201, flagged.text
        (warning,) = flagged.json()["warnings"]
        assert warning["expression"] == "Bundle.entry[0].resource.performer[1].actor"
        assert "had no valid licence" in warning["diagnostics"]
        assert flagged.headers[FLAGS_HEADER] == "performer-unlicensed"
        outcome = api.post(
            _procedure_bundle(performer, "2001-01-01"),
            {**headers, "Prefer": "return=OperationOutcome"},
        )
        assert outcome.status_code == 201
        issues = outcome.json()["issue"]
        assert [i["severity"] for i in issues] == ["information", "warning"]
        assert issues[1]["expression"] == ["Bundle.entry[0].resource.performer[1].actor"]


def test_strict_intake_refuses_an_unlicensed_performer(tmp_path: Path) -> None:
    with open_api(tmp_path, settings={"institutions_strict": True}) as api:
        headers = api.credential()
        key = _admin(api)
        _licence(api, key, DR_WANG)
        _licence(api, key, DR_SMITH)
        smith = {"reference": "Practitioner/dr-smith"}
        assert api.post(_procedure_bundle(smith, "2026-07-09"), headers).status_code == 201
        size = api.log_size()
        for performer, day, why in (
            (smith, "2026-07-10", "had no valid licence on 2026-07-10"),
            (
                {"reference": "Practitioner/dr-nobody"},
                "2026-03-01",
                "has no licence in the registry",
            ),
        ):
            refused = api.post(_procedure_bundle(performer, day), headers)
            assert refused.status_code == 422, refused.text
            issue = is_outcome(refused)["issue"][0]
            assert issue["severity"] == "error" and why in issue["diagnostics"]
            assert issue["expression"] == ["Bundle.entry[0].resource.performer[1].actor"]
        assert api.log_size() == size


def test_a_short_term_registration_counts_only_where_it_was_made(tmp_path: Path) -> None:
    elsewhere = replace(DR_SMITH, org="other-hospital")
    performances = (
        pr.Performance(frozenset({("id", "dr-smith")}), "2026-03-01", "p", "Practitioner/dr-smith"),
    )
    assert pr.unlicensed(performances, [DR_SMITH], HOSPITAL_ORG) == []
    assert len(pr.unlicensed(performances, [elsewhere], HOSPITAL_ORG)) == 1


def test_cli_records_and_shows_licences(tmp_path: Path, capsys) -> None:
    data = ["--data", str(tmp_path / "d")]
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "admin.pem"
    pem.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    assert main(["institutions", "register-key", "--admin", "a1", "--key", str(pem), *data]) == 0
    rec = tmp_path / "licence.json"
    rec.write_text(json.dumps(DR_SMITH.to_json()))
    args = ["practitioners", "set", "--record", str(rec), "--admin", "a1", "--key", str(pem)]
    assert main([*args, *data]) == 0
    capsys.readouterr()
    assert main(["practitioners", "show", "--practitioner", "dr-smith", *data]) == 0
    (shown,) = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in shown.items() if k != "index"} == DR_SMITH.to_json()
    assert main(["practitioners", "show", "--practitioner", "dr-nobody", *data]) == 3
    rec.write_text(json.dumps({**DR_SMITH.to_json(), "valid_to": "2027-07-09"}))
    assert main([*args, *data]) == 1
    assert "at most one year" in capsys.readouterr().err
