"""Access entries: one ledger entry of kind `access` per recorded request, BALP-shaped, no PHI."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from exchange.identity.clients import register_client
from exchange.privacy.access import (
    PSEUDONYM_SYSTEM,
    AccessError,
    access_count,
    access_submissions,
    disclosures_of,
    record_access,
    record_access_blocking,
)
from exchange.vault import lookup_tag as pseudonym
from tests.api_helpers import is_outcome, open_api

MRN = ("urn:example:mrn", "MRN-0042")


def test_each_recorded_request_is_one_access_entry(tmp_path: Path, db_url: str) -> None:
    rng = random.Random(7)
    with open_api(tmp_path / "data", db_url) as api:
        client, _ = register_client(api.services.engine, "insurer", "insurer", "insurer-a")
        subject = pseudonym(api.services.pseudonym_key, "hospital-a", MRN)
        start = api.log_size()
        n = rng.randint(5, 15)
        actions = [rng.choice(["read", "search", "export", "denied"]) for _ in range(n)]
        indices = []
        for action in actions:
            outcome = "4" if action == "denied" else "0"
            indices.append(
                record_access_blocking(
                    api.services.log,
                    client,
                    action=action,
                    resource_type="Claim",
                    patient_subject=subject,
                    purpose="HPAYMT",
                    outcome=outcome,
                )  # fmt: skip
            )
        assert access_count(api.services.engine) == n
        assert api.log_size() == start + n
        assert indices == list(range(start, start + n))
        for index in indices:
            entry = api.entry(index)
            assert entry.kind == "access"
            assert entry.subject == subject
            assert entry.sender == "insurer-a"
        rows = disclosures_of(api.services.engine, subject)
        assert [r.action for r in rows] == actions
        for row, action in zip(rows, actions, strict=True):
            event = json.loads(row.data)
            AuditEvent.model_validate(event)
            assert MRN[1].encode() not in row.data
            patient = event["entity"][0]["what"]["identifier"]
            assert patient == {"system": PSEUDONYM_SYSTEM, "value": subject.hex()}
            assert event["agent"][0]["purposeOfUse"][0]["coding"][0]["code"] == "HPAYMT"
            disclosed = "PrivacyDisclosure" in event["meta"]["profile"][0]
            assert disclosed is (action != "denied")


def test_the_async_recorder_returns_the_ledger_index(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        client, _ = register_client(api.services.engine, "auditor", "auditor", None)
        index = asyncio.run(
            record_access(
                api.services.log,
                client,
                action="search",
                resource_type="Invoice",
                patient_subject=None,
                purpose=None,
                outcome="0",
            )  # fmt: skip
        )
        assert api.entry(index).kind == "access"
        assert api.entry(index).sender == client.client_id


def test_an_unknown_action_appends_nothing(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        client, _ = register_client(api.services.engine, "insurer", "insurer", "insurer-a")
        size = api.log_size()
        with pytest.raises(AccessError, match="unknown access action 'peek'"):
            record_access_blocking(
                api.services.log, client, action="peek", resource_type="Claim",
                patient_subject=None, purpose="HPAYMT", outcome="0",
            )  # fmt: skip
        assert api.log_size() == size
        assert access_count(api.services.engine) == 0


def test_a_hospital_gets_the_accounting_of_disclosures_of_its_patient(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        insurer, _ = register_client(api.services.engine, "insurer", "insurer", "insurer-a")
        subject = pseudonym(api.services.pseudonym_key, "hospital-a", MRN)
        for action, outcome in (("search", "0"), ("denied", "4")):
            record_access_blocking(
                api.services.log, insurer, action=action, resource_type="Claim",
                patient_subject=subject, purpose="HPAYMT", outcome=outcome,
            )  # fmt: skip
        url = f"/v1/patients/{MRN[1]}/disclosures"
        own = api.client.get(url, params={"system": MRN[0]}, headers=api.credential())
        assert own.status_code == 200, own.text
        doc = own.json()
        assert doc["type"] == "searchset" and doc["total"] == 2
        assert [e["resource"]["outcome"] for e in doc["entry"]] == ["0", "4"]
        assert MRN[1] not in own.text.replace(url, "")
        other = api.client.get(
            url, params={"system": MRN[0]}, headers=api.credential("hospital", "hospital-b")
        )
        assert other.status_code == 200 and other.json()["total"] == 0
        for role, org in (("insurer", "insurer-a"), ("auditor", None)):
            refused = api.client.get(
                url, params={"system": MRN[0]}, headers=api.credential(role, org)
            )
            assert refused.status_code == 403
            is_outcome(refused)
        missing = api.client.get(url, headers=api.credential())
        assert missing.status_code in (400, 422)
        assert "system" in json.dumps(is_outcome(missing))


def test_a_guard_commits_with_each_access_entry_or_stops_it(tmp_path: Path) -> None:
    # The outbox appends a delivery's access entries beside its delivery entry, each guarded:
    # the guard's writes exist with the entry or neither does, and a guard that raises keeps
    # that entry out of the log (a crash in between never makes the accounting twice).
    with open_api(tmp_path / "data") as api:
        log = api.services.log
        client, _ = register_client(api.services.engine, "outbox", "hospital", "home-kr")
        patients = {b"p" * 32: [b"q" * 32], b"r" * 32: []}
        noted: list[int] = []
        subs = access_submissions(
            client, patients, action="transform", resource_type="Bundle", purpose="TREAT",
            outcome="0", detail=None, guard=lambda conn, entry: noted.append(entry.index),
        )  # fmt: skip
        indexes = [log.submit(sub).result().entry.index for sub in subs]
        assert noted == indexes and len(indexes) == 2
        size, count = api.log_size(), access_count(api.services.engine)

        def fail(conn: object, entry: object) -> None:
            raise RuntimeError("the note cannot be written")

        (sub,) = access_submissions(
            client, {b"p" * 32: []}, action="transform", resource_type="Bundle",
            purpose="TREAT", outcome="0", detail=None, guard=fail,
        )  # fmt: skip
        with pytest.raises(RuntimeError, match="the note cannot be written"):
            log.submit(sub).result()
        assert api.log_size() == size
        assert access_count(api.services.engine) == count
