"""Erasure by crypto-shredding (issue 9, done-when 2): after two admins erase a random patient,
their Bundles answer 410 with the reason, the exact bytes no longer confirm the commitment,
and a full audit and every stored receipt still verify."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from exchange import vault
from exchange.bootstrap import master_key
from exchange.cli.exits import EXIT_OK, EXIT_USAGE
from exchange.cli.main import main
from exchange.identity.clients import register_client
from exchange.indexes.patients import bundles_about, patient_index
from exchange.privacy.erasure import ADMIN_TOKEN_ENV
from exchange.store.tables import keys_table, patient_ids_table, requests_table
from ledger.verify import verify_receipt, verify_submission
from tests.api_helpers import (
    Api,
    is_outcome,
    observation_bundle,
    open_api,
    patient_bundle,
    stored_values_by_table,
)

MRN_SYSTEM = "urn:example:mrn"


def _state_args(api: Api, data: Path) -> list[str]:
    url = api.services.settings.db_url
    return ["--data", str(data)] + (["--db", url] if url else [])


def _erase(
    api: Api, data: Path, monkeypatch: pytest.MonkeyPatch, token: str, *args: str
) -> tuple[int, str, str]:
    monkeypatch.setenv(ADMIN_TOKEN_ENV, token)
    return _run(["erase", *args, "--json", *_state_args(api, data)])


def _run(argv: list[str]) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _confirms(value: bytes, body: bytes, commit: bytes) -> bool:
    """Whether the value, or a 32-byte piece of a short value, is the salt of `commit`."""
    pieces = [value]
    if len(value) <= 128:
        pieces += [value[i : i + 32] for i in range(max(0, len(value) - 31))]
    return any(hashlib.sha256(p + body).digest() == commit for p in pieces)


def _submit_patients(api: Api, rng: random.Random, hospital: dict[str, str]) -> dict[str, Any]:
    """Three patients, two Bundles each (one of them in two versions); a Bundle with none."""
    submitted: dict[str, Any] = {"patients": {}, "answers": []}  # (answer, body, version)
    for p in range(3):
        mrn = f"MRN-{rng.randrange(10**8):08d}-{p}"
        bodies = []
        for b in range(2):
            ident = f"urn:uuid:{rng.getrandbits(128):032x}"
            body = patient_bundle(mrn, ident, name=f"Family{p}x{b}")
            answer = api.post(body, hospital)
            assert answer.status_code == 201, answer.text
            bodies.append((answer.json(), body, 1))
            if b == 1:
                newer = patient_bundle(mrn, ident, name=f"Renamed{p}")
                again = api.post(newer, {**hospital, "If-Match": 'W/"1"'})
                assert again.status_code == 201, again.text
                bodies.append((again.json(), newer, 2))
        submitted["patients"][mrn] = bodies
        submitted["answers"].extend(bodies)
    plain = observation_bundle("98.60")
    answer = api.post(plain, hospital)
    assert answer.status_code == 201
    submitted["answers"].append((answer.json(), plain, 1))
    return submitted


def test_erasing_a_random_patient(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random()
    data = tmp_path / "data"
    with open_api(data, db_url) as api:
        engine = api.services.engine
        hospital = api.credential()
        submitted = _submit_patients(api, rng, hospital)
        victim = rng.choice(sorted(submitted["patients"]))
        erased = submitted["patients"][victim]
        pseudonym = api.entry(erased[0][0]["index"]).subject
        assert pseudonym is not None
        assert api.services.vault.subjects_of("hospital-a", (MRN_SYSTEM, victim)) == [pseudonym]
        indexes = api.services.indexes
        indexes.fresh(patient_index(api.services.pseudonym_key))
        key = api.services.pseudonym_key
        about = bundles_about(engine, key, "hospital-a", (MRN_SYSTEM, victim))
        assert about == list(dict.fromkeys(a["id"] for a, _, _ in erased))
        erased_indices = {a["index"] for a, _, _ in erased}

        admin1, token1 = register_client(engine, "first admin", "admin", None)
        admin2, token2 = register_client(engine, "second admin", "admin", None)
        code, out, err = _erase(
            api, data, monkeypatch, token1,
            "--patient", f"{MRN_SYSTEM}|{victim}", "--org", "hospital-a", "--by", admin1.client_id,
        )  # fmt: skip
        assert code == EXIT_OK, err
        request_id = json.loads(out)["request"]
        # Requested only: nothing is erased yet.
        first = api.client.get(f"/fhir/Bundle/{erased[0][0]['id']}", headers=hospital)
        assert first.status_code == 200

        with engine.connect() as conn:
            wrapped = conn.execute(
                select(keys_table.c.wrapped).where(keys_table.c.pseudonym == pseudonym)
            ).scalar_one()
        code, out, err = _erase(
            api, data, monkeypatch, token2, "--confirm", request_id, "--by", admin2.client_id
        )
        assert code == EXIT_OK, err
        if db_url.startswith("sqlite"):
            # Not left behind in free pages or the write-ahead log of the database file.
            path = Path(db_url.removeprefix("sqlite:///"))
            files = list(path.parent.glob(path.name + "*"))
            assert files and all(bytes(wrapped) not in f.read_bytes() for f in files)
        result = json.loads(out)
        assert result["status"] == "erased" and result["keys"] == 1
        assert result["bundles"] == len(erased)
        erasure_index = result["index"]

        # 410 with the reason, on every version of every erased Bundle.
        for answer, _, version in erased:
            for url in (
                f"/fhir/Bundle/{answer['id']}",
                f"/fhir/Bundle/{answer['id']}/_history/{version}",
                f"/fhir/Bundle/{answer['id']}/$hl7v2",
                f"/fhir/Binary/{answer['id']}",
                f"/fhir/Binary/{answer['id']}/_history/{version}",
            ):
                gone = api.client.get(url, headers=hospital)
                assert gone.status_code == 410, (url, gone.text)
                issue = is_outcome(gone)["issue"][0]
                assert issue["code"] == "deleted"
                assert "erased" in issue["diagnostics"]
                assert f"ledger entry {erasure_index}" in issue["diagnostics"]
                assert victim not in gone.text

        # The other patients' Bundles read back byte for byte.
        for answer, body, version in submitted["answers"]:
            if answer["index"] not in erased_indices:
                url = f"/fhir/Binary/{answer['id']}/_history/{version}"
                read = api.client.get(url, headers=hospital)
                assert read.status_code == 200 and read.content == body

        # Guessing with the exact bytes confirms nothing: no stored value is the salt, and no
        # stored value is the unkeyed digest of the bytes.
        values = [v for vs in stored_values_by_table(api).values() for v in vs]
        for answer, body, _ in erased:
            commit = api.entry(answer["index"]).commit
            assert not any(_confirms(v, body, commit) for v in values)
            assert hashlib.sha256(body).digest() not in values
            assert victim.encode() not in b"".join(values)

        # Derived indexes forget the patient; the pseudonym no longer leads to the identifier.
        indexes.fresh(patient_index(api.services.pseudonym_key))
        assert bundles_about(engine, key, "hospital-a", (MRN_SYSTEM, victim)) == []
        with engine.connect() as conn:
            left = conn.execute(
                select(patient_ids_table.c.idx).where(patient_ids_table.c.idx.in_(erased_indices))
            ).all()
        assert left == []
        assert api.services.vault.subjects_of("hospital-a", (MRN_SYSTEM, victim)) == []

        # The erasure is a ledger entry with no PHI, committing to its stored record.
        entry = api.entry(erasure_index)
        assert entry.kind == "erasure" and entry.subject == pseudonym
        with engine.connect() as conn:
            row = conn.execute(
                select(requests_table).where(requests_table.c.request_id == request_id)
            ).one()
        assert row.lookup is None and row.idx == erasure_index
        verify_submission(entry, bytes(row.data), bytes(row.salt))
        record = json.loads(row.data)
        assert record["requestedBy"] == admin1.client_id
        assert record["confirmedBy"] == admin2.client_id
        assert record["subject"] == base64.b64encode(pseudonym).decode()

        # Every receipt the log stores, and every receipt handed out, still verifies; the
        # surviving Bundles still match their commitments.
        verifier = api.verifier()
        for index in range(api.log_size()):
            stored = api.client.get(f"/v1/log/entries/{index}/receipt")
            assert stored.status_code == 200
            assert verify_receipt(stored.text, [verifier]).entry.index == index
        for answer, body, _ in submitted["answers"]:
            verify_receipt(answer["receipt"], [verifier])
            if answer["index"] not in erased_indices:
                api.check_receipt(answer, body)

        # A full audit of the database passes.
        vkey = api.client.get("/v1/log/key").text
        code, out, err = _run(["audit", "--db", db_url, "--key", vkey, "-q"])
        assert code == EXIT_OK, out + err

        # The patient can come back: a new key and a new, unlinkable pseudonym.
        again = api.post(patient_bundle(victim, name="Returned"), hospital)
        assert again.status_code == 201, again.text
        assert api.entry(again.json()["index"]).subject not in (None, pseudonym)
        read = api.client.get(f"/fhir/Bundle/{again.json()['id']}", headers=hospital)
        assert read.status_code == 200


def test_two_admins_are_needed(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    with open_api(data, db_url) as api:
        engine = api.services.engine
        hospital = api.credential()
        answer = api.post(patient_bundle("MRN-2P"), hospital).json()
        patient = ["--patient", f"{MRN_SYSTEM}|MRN-2P", "--org", "hospital-a"]
        admin1, token1 = register_client(engine, "first admin", "admin", None)
        admin2, token2 = register_client(engine, "second admin", "admin", None)
        nurse, nurse_token = register_client(engine, "ward", "hospital", "hospital-a")

        # A non-admin may neither request nor confirm; a credential must be the --by client's.
        code, _, err = _erase(
            api, data, monkeypatch, nurse_token, *patient, "--by", nurse.client_id
        )
        assert code == EXIT_USAGE and "only admins" in err
        code, _, err = _erase(api, data, monkeypatch, token2, *patient, "--by", admin1.client_id)
        assert code == EXIT_USAGE and ADMIN_TOKEN_ENV in err
        code, _, err = _erase(api, data, monkeypatch, "", *patient, "--by", admin1.client_id)
        assert code == EXIT_USAGE
        # Unknown patient: refused, nothing pending.
        unknown = ["--patient", f"{MRN_SYSTEM}|nobody", "--org", "hospital-a"]
        code, _, err = _erase(api, data, monkeypatch, token1, *unknown, "--by", admin1.client_id)
        assert code == 3 and "nothing about this patient" in err

        code, out, _ = _erase(api, data, monkeypatch, token1, *patient, "--by", admin1.client_id)
        assert code == EXIT_OK
        request_id = json.loads(out)["request"]
        size = api.log_size()
        # The same admin twice, and a non-admin, are refused; nothing is erased or appended.
        code, _, err = _erase(
            api, data, monkeypatch, token1, "--confirm", request_id, "--by", admin1.client_id
        )
        assert code == EXIT_USAGE and "second, different admin" in err
        code, _, err = _erase(
            api, data, monkeypatch, nurse_token, "--confirm", request_id, "--by", nurse.client_id
        )
        assert code == EXIT_USAGE
        assert api.log_size() == size
        assert api.client.get(f"/fhir/Bundle/{answer['id']}", headers=hospital).status_code == 200

        code, _, err = _erase(
            api, data, monkeypatch, token2, "--confirm", request_id, "--by", admin2.client_id
        )
        assert code == EXIT_OK, err
        assert api.client.get(f"/fhir/Bundle/{answer['id']}", headers=hospital).status_code == 410
        # Another org learns nothing about it, not even that it was erased.
        other = api.credential("hospital", "hospital-b")
        assert api.client.get(f"/fhir/Bundle/{answer['id']}", headers=other).status_code == 404
        # Confirming again does nothing more.
        code, _, err = _erase(
            api, data, monkeypatch, token2, "--confirm", request_id, "--by", admin2.client_id
        )
        assert code == 3 and "carried out" in err
        assert api.log_size() == size + 1


def test_a_key_erased_by_another_process_is_never_sealed_under(tmp_path: Path, db_url: str) -> None:
    """The server caches a patient's key; an erasure by another process must win."""
    from exchange.privacy.erasure import confirm_erasure, request_erasure

    with open_api(tmp_path / "data", db_url) as api:
        engine = api.services.engine
        hospital = api.credential()
        first = api.post(patient_bundle("MRN-RACE"), hospital)
        assert first.status_code == 201
        old_subject = api.entry(first.json()["index"]).subject
        admin1, _ = register_client(engine, "a1", "admin", None)
        admin2, _ = register_client(engine, "a2", "admin", None)
        # Another vault on the same database erases, as the CLI would from its own process.
        master = master_key(api.services.settings, vault_is_empty=False)
        other = vault.Vault(engine, master, api.services.pseudonym_key)
        request_id = request_erasure(
            api.services.vault, "hospital-a", (MRN_SYSTEM, "MRN-RACE"), admin1
        )
        confirm_erasure(api.services.log, other, request_id, admin2)
        # The server still has the old key cached: the write notices it is gone, forgets it
        # and prepares the submission again under a new key and a new pseudonym.
        next_ = api.post(patient_bundle("MRN-RACE", name="Next"), hospital)
        assert next_.status_code == 201, next_.text
        assert api.entry(next_.json()["index"]).subject not in (None, old_subject)
        read = api.client.get(f"/fhir/Bundle/{next_.json()['id']}", headers=hospital)
        assert read.status_code == 200
        gone = api.client.get(f"/fhir/Bundle/{first.json()['id']}", headers=hospital)
        assert gone.status_code == 410


def test_erasing_by_another_identifier_of_the_patient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Bundle's key needs the key of every Patient.identifier it names: erasing the patient
    by the second identifier erases that Bundle too."""
    data = tmp_path / "data"
    patient = {
        "resourceType": "Patient",
        "identifier": [
            {"system": MRN_SYSTEM, "value": "MRN-TWO"},
            {"system": "urn:example:passport", "value": "P-123"},
        ],
    }
    body = json.dumps(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"fullUrl": "urn:uuid:00000000-0000-0000-0000-000000000001", "resource": patient}
            ],
        }  # fmt: skip
    ).encode()
    with open_api(data) as api:
        hospital = api.credential()
        answer = api.post(body, hospital).json()
        admin1, token1 = register_client(api.services.engine, "a1", "admin", None)
        admin2, token2 = register_client(api.services.engine, "a2", "admin", None)
        code, out, err = _erase(
            api, data, monkeypatch, token1,
            "--patient", "urn:example:passport|P-123", "--org", "hospital-a",
            "--by", admin1.client_id,
        )  # fmt: skip
        assert code == EXIT_OK, err
        request_id = json.loads(out)["request"]
        code, out, err = _erase(
            api, data, monkeypatch, token2, "--confirm", request_id, "--by", admin2.client_id
        )
        assert code == EXIT_OK, err
        assert json.loads(out)["bundles"] == 1
        assert api.client.get(f"/fhir/Bundle/{answer['id']}", headers=hospital).status_code == 410
