"""`GET /fhir/Organization[/{id}]` over real HTTP: registry records as R4B Organizations."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fhir.resources.R4B.organization import Organization

from exchange.registry import institutions as inst
from exchange.registry.admission import FLAGS_HEADER
from tests.api_helpers import is_outcome, open_api
from tests.paths import ROOT
from tests.registry.test_institutions import BASE


def test_organization_read_and_search(tmp_path: Path) -> None:
    with open_api(tmp_path) as api:
        key = Ed25519PrivateKey.generate()
        inst.register_admin_key(api.services.engine, "admin-1", key.public_key())
        inst.append_attestation(api.services.log, inst.sign_attestation(BASE, "admin-1", key))
        # Every role but the mediator (a case package only) reads the registry.
        for role, who in (("insurer", "insurer-x"), ("regulator", "nmpa"), ("auditor", None)):
            headers = api.credential(role, who)
            got = api.client.get(f"/fhir/Organization/{BASE.org}", headers=headers)
            assert got.status_code == 200, (role, got.text)
            org = Organization.model_validate(got.json())
            assert org.identifier[0].value == BASE.licence_number
            assert org.alias == [BASE.name_zh]
            found = api.client.get("/fhir/Organization", headers=headers).json()
            assert [e["resource"]["id"] for e in found["entry"]] == [BASE.org]
        mediator = api.credential("mediator", "m-1")
        assert api.client.get("/fhir/Organization", headers=mediator).status_code == 403
        missing = api.client.get("/fhir/Organization/nobody", headers=headers)
        assert missing.status_code == 404
        assert "nobody" in is_outcome(missing)["issue"][0]["diagnostics"]
        assert api.client.get("/fhir/Organization").status_code == 401


def _register(api, record) -> None:
    key = Ed25519PrivateKey.generate()
    inst.register_admin_key(api.services.engine, "admin-1", key.public_key())
    inst.append_attestation(api.services.log, inst.sign_attestation(record, "admin-1", key))


def test_intake_refuses_expired_or_blacklisted_and_flags_lapsed(tmp_path: Path) -> None:
    from dataclasses import replace
    from datetime import date, timedelta

    from tests.api_helpers import HOSPITAL_ORG, observation_bundle

    today = date.today()
    lapsed = inst.Accreditation(
        "JCI", "hospital", today - timedelta(days=400), today - timedelta(days=1)
    )
    live = replace(
        BASE,
        org=HOSPITAL_ORG,
        licence_valid_to=today + timedelta(days=30),
        accreditations=(lapsed,),
    )
    with open_api(tmp_path) as api:
        headers = api.credential()
        _register(api, live)
        ok = api.post(observation_bundle(), headers)
        assert ok.status_code == 201
        assert ok.headers[FLAGS_HEADER] == f"accreditation-lapsed:JCI:{lapsed.valid_to}"
        for record, why in (
            (replace(live, licence_valid_to=today - timedelta(days=1)), "expired on"),
            (
                replace(live, blacklisted=True, blacklist_reason="forged invoices"),
                "blacklisted: forged invoices",
            ),
        ):
            _register(api, record)
            size, rows = api.log_size(), api.bundle_rows()
            refused = api.post(observation_bundle(), headers)
            assert refused.status_code == 403
            assert why in is_outcome(refused)["issue"][0]["diagnostics"]
            assert (api.log_size(), api.bundle_rows()) == (size, rows)


def test_unregistered_sender_strict_vs_default(tmp_path: Path) -> None:
    from tests.api_helpers import observation_bundle

    with open_api(tmp_path) as api:
        headers = api.credential()
        assert api.post(observation_bundle(), headers).status_code == 201
    # MEDLEDGER_INSTITUTIONS_STRICT, read once at start (exchange.config).
    with open_api(tmp_path, settings={"institutions_strict": True}) as api:
        refused = api.post(observation_bundle(), headers)
        assert refused.status_code == 403
        assert "no institution registry record" in is_outcome(refused)["issue"][0]["diagnostics"]


def test_sender_check_reads_the_registry_once_and_sees_another_process_within_ttl(
    tmp_path: Path,
) -> None:
    """Intake keeps sender records for a few seconds; a blacklisting by the CLI in another
    process reaches a running service within that time, and its own changes at once."""
    import json
    import os
    import subprocess
    import sys
    import time
    from dataclasses import replace
    from datetime import date, timedelta

    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )
    from sqlalchemy import event

    from tests.api_helpers import HOSPITAL_ORG, observation_bundle

    live = replace(BASE, org=HOSPITAL_ORG, licence_valid_to=date.today() + timedelta(days=30))
    data = tmp_path / "data"
    with open_api(data) as api:
        key = Ed25519PrivateKey.generate()
        inst.register_admin_key(api.services.engine, "admin-1", key.public_key())
        inst.append_attestation(api.services.log, inst.sign_attestation(live, "admin-1", key))
        api.services.senders.ttl = 1.0
        reads = {"n": 0}

        def count(_conn, _cursor, statement, *_rest) -> None:
            reads["n"] += statement.startswith("SELECT institutions.record")

        event.listen(api.services.engine, "before_cursor_execute", count)
        headers = api.credential()
        for _ in range(5):
            assert api.post(observation_bundle(), headers).status_code == 201
        assert reads["n"] == 1

        pem = tmp_path / "admin.pem"
        pem.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        record = tmp_path / "rec.json"
        barred = replace(live, blacklisted=True, blacklist_reason="forged invoices")
        record.write_text(json.dumps(barred.to_json()))
        args = ["institutions", "set", "--record", str(record), "--admin", "admin-1"]
        cli = subprocess.run(
            [sys.executable, "-m", "exchange.cli", *args, "--key", str(pem), "--data", str(data)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode == 0, cli.stderr
        deadline = time.monotonic() + api.services.senders.ttl
        while time.monotonic() < deadline + 0.5:
            refused = api.post(observation_bundle(), headers)
            if refused.status_code == 403:
                break
            assert refused.status_code == 201
            time.sleep(0.1)
        assert refused.status_code == 403
        assert time.monotonic() < deadline + 0.5, "the change took longer than the ttl"
        assert "forged invoices" in is_outcome(refused)["issue"][0]["diagnostics"]
