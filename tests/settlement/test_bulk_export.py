"""Bulk Data $export: kick-off, status, manifest with SHA-256, NDJSON files, cancel, restart."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from exchange.privacy.access import access_count
from exchange.settlement import bulk_export
from exchange.settlement.bulk_export import SHA256_EXTENSION
from tests.api_helpers import VECTORS, Api, is_outcome, open_api
from tests.settlement.test_settlement_index import PASSPORT, consent_bundle, settlement_bundle
from tests.settlement.test_settlement_search import insurer, submit

KIM = (PASSPORT, "M20000001")
LEE = (PASSPORT, "M20000002")
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def kickoff(api: Api, headers: dict[str, str], **params: Any) -> Any:
    return api.client.get("/fhir/$export", params=params, headers={**ASYNC, **headers})


def path_of(url: str) -> str:
    return urlsplit(url).path


def wait_done(api: Api, status_url: str, headers: dict[str, str]) -> Any:
    deadline = time.monotonic() + 20
    while True:
        answer = api.client.get(path_of(status_url), headers=headers)
        if answer.status_code != 202:
            return answer
        assert answer.headers["Retry-After"] and "X-Progress" in answer.headers
        assert time.monotonic() < deadline, "export did not finish"
        time.sleep(0.05)


def exported(api: Api, headers: dict[str, str], **params: Any) -> tuple[dict[str, Any], dict]:
    """Kick off, wait, download: the manifest and {type: file bytes}, hashes checked."""
    started = kickoff(api, headers, **params)
    assert started.status_code == 202, started.text
    is_outcome(started)
    done = wait_done(api, started.headers["Content-Location"], headers)
    assert done.status_code == 200, done.text
    manifest = done.json()
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert manifest["request"].endswith("$export" + ("?" if params else "")) or params
    files: dict[str, bytes] = {}
    for item in manifest["output"]:
        got = api.client.get(path_of(item["url"]), headers=headers)
        assert got.status_code == 200, got.text
        assert got.headers["content-type"].startswith("application/fhir+ndjson")
        assert hashlib.sha256(got.content).hexdigest() == item["extension"][SHA256_EXTENSION]
        lines = got.content.split(b"\n")
        assert lines[-1] == b"" and len(lines) - 1 == item["count"]
        for line in lines[:-1]:
            assert json.loads(line)["resourceType"] == item["type"]
        files[item["type"]] = got.content
    return manifest, files


def test_an_insurer_exports_what_consent_permits(tmp_path: Path, db_url: str) -> None:
    with open_api(tmp_path / "data", db_url) as api:
        hospital = api.credential()
        kim_body = settlement_bundle(KIM, "insurer-a", amount="1200.00")
        submit(api, kim_body, hospital)
        submit(api, settlement_bundle(LEE, "insurer-a", tag="L1", amount="850.50"), hospital)
        submit(api, settlement_bundle(KIM, "insurer-b", tag="B1"), hospital)
        submit(api, consent_bundle(KIM, "insurer-a"), hospital)  # Lee has no consent
        ins = insurer(api)
        before = access_count(api.services.engine)
        manifest, files = exported(api, ins)
        assert sorted(files) == sorted(
            ["Claim", "ClaimResponse", "Invoice", "ExplanationOfBenefit", "Coverage",
             "DocumentReference"]
        )  # fmt: skip
        for data in files.values():
            (line,) = data.splitlines()
            assert line in kim_body  # exactly as submitted (that Bundle has no line breaks)
            assert json.loads(line)["id"].endswith("-A1")
        assert b'"value":1200.00' in files["Claim"]
        # One entry for the kick-off and one per file downloaded.
        assert access_count(api.services.engine) == before + 1 + len(files)
        assert manifest["transactionTime"].endswith("Z")


def test_a_hospital_exports_its_own_and_types_and_since_filter(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        old = settlement_bundle(KIM, "insurer-a", tag="O1", last_updated="2026-01-01T00:00:00Z")
        new = settlement_bundle(KIM, "insurer-a", tag="N1", last_updated="2026-02-01T00:00:00Z")
        submit(api, old, hospital)
        submit(api, new, hospital)
        submit(
            api, settlement_bundle(LEE, "insurer-a", tag="X1"), api.credential("hospital", "h-b")
        )
        _, files = exported(api, hospital, _type="Claim,Invoice")
        assert sorted(files) == ["Claim", "Invoice"]
        claims = [json.loads(x)["id"] for x in files["Claim"].splitlines()]
        assert claims == ["c-O1", "c-N1"]  # not the other hospital's
        _, since = exported(api, hospital, _type="Claim", _since="2026-01-15T00:00:00+08:00")
        assert [json.loads(x)["id"] for x in since["Claim"].splitlines()] == ["c-N1"]
        assert access_count(api.services.engine) == 0


def test_pretty_printed_resources_become_one_line_each_with_their_lexemes() -> None:
    raw = b'{\n  "resourceType": "Claim",\r\n  "total": {"value": 1200.00}\n}'
    line = bulk_export.ndjson_line(raw)
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert b"1200.00" in line and json.loads(line) == json.loads(raw)
    assert len(line) == len(raw) + 1


def test_kickoff_refusals_are_outcomes_and_recorded(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        ins = insurer(api)
        no_prefer = api.client.get("/fhir/$export", headers=ins)
        assert no_prefer.status_code == 400 and "respond-async" in no_prefer.text
        cases = (
            ({"_type": "Patient"}, "_type"),
            ({"_since": "yesterday"}, "_since"),
            ({"_since": "2026-01-01"}, "_since"),
            ({"_outputFormat": "text/csv"}, "_outputFormat"),
            ({"_typeFilter": "Claim?status=active"}, "_typeFilter"),
        )
        for params, names in cases:
            refused = kickoff(api, ins, **params)
            assert refused.status_code == 400, refused.text
            assert names in json.dumps(is_outcome(refused))
        bad_accept = kickoff(api, {**ins, "Accept": "text/html"})
        assert bad_accept.status_code == 400
        no_purpose = api.client.get(
            "/fhir/$export", headers={**ASYNC, **api.credential("insurer", "insurer-a")}
        )
        assert no_purpose.status_code == 403
        for role in ("auditor", "admin"):
            assert kickoff(api, api.credential(role, None)).status_code == 403
        # Each insurer request that reached the operation is one entry (the unknown parameter
        # _typeFilter is refused before it, with no client action to record).
        assert access_count(api.services.engine) == 1 + 4 + 1 + 1


def test_only_the_owner_sees_a_job_and_delete_cancels_it(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        submit(api, settlement_bundle(KIM, "insurer-a"), hospital)
        started = kickoff(api, hospital, _type="Claim")
        status = path_of(started.headers["Content-Location"])
        done = wait_done(api, status, hospital)
        file_url = path_of(done.json()["output"][0]["url"])
        stranger = api.credential()  # same org, another client
        for method, url in (("GET", status), ("GET", file_url), ("DELETE", status)):
            assert api.client.request(method, url, headers=stranger).status_code == 404
        assert api.client.get(status + "/9.ndjson", headers=hospital).status_code == 404
        assert api.client.get(status + "/x.json", headers=hospital).status_code == 400
        assert api.client.delete(status, headers=hospital).status_code == 202
        for url in (status, file_url):
            assert api.client.get(url, headers=hospital).status_code == 404
        assert api.client.delete(status, headers=hospital).status_code == 404


def test_status_is_202_while_running_and_a_cancelled_job_keeps_no_files(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        submit(api, settlement_bundle(KIM, "insurer-a"), hospital)
        poll = api.client.get("/fhir/$export-status/" + "0" * 36, headers=hospital)
        assert poll.status_code == 404
        started = kickoff(api, hospital, _type="Claim")
        job_id = path_of(started.headers["Content-Location"]).rsplit("/", 1)[1]
        client_id = bulk_export.load_job(api.services.engine, job_id).spec.client_id  # type: ignore[union-attr]
        wait_done(api, started.headers["Content-Location"], hospital)
        # A job held before it starts reading: the status says so, with progress.
        engine = api.services.engine
        hold = threading.Event()
        spec = bulk_export.JobSpec(client_id, "hospital-a", "hospital", None, ("Claim",), None, "x")
        job = bulk_export.start_job(engine, spec)
        bulk_export.start_worker(api.services.vault, api.services.gate, job, before=hold.wait)
        running = api.client.get(f"/fhir/$export-status/{job.id}", headers=hospital)
        assert running.status_code == 202
        assert running.headers["X-Progress"] == "queued" and running.headers["Retry-After"] == "2"
        assert (
            api.client.delete(f"/fhir/$export-status/{job.id}", headers=hospital).status_code == 202
        )
        hold.set()
        deadline = time.monotonic() + 10
        while job.id in bulk_export.RUNNING and time.monotonic() < deadline:
            time.sleep(0.02)
        assert bulk_export.load_job(engine, job.id) is None
        assert bulk_export.files_of(engine, job.id) == []


def test_finished_jobs_survive_a_restart_and_interrupted_ones_fail(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with open_api(data) as api:
        hospital = api.credential()
        submit(api, settlement_bundle(KIM, "insurer-a"), hospital)
        manifest, files = exported(api, hospital, _type="Claim")
        status = path_of(kickoff(api, hospital, _type="Claim").headers["Content-Location"])
        wait_done(api, status, hospital)
        first_status = urlsplit(manifest["output"][0]["url"]).path.rsplit("/", 1)[0]
        client_id = bulk_export.load_job(
            api.services.engine, first_status.rsplit("/", 1)[1]
        ).spec.client_id  # type: ignore[union-attr]
        # A job whose worker never ran: as after a crash mid-export.
        spec = bulk_export.JobSpec(client_id, "hospital-a", "hospital", None, ("Claim",), None, "x")
        orphan = bulk_export.start_job(api.services.engine, spec)
    with open_api(data) as api:
        again = api.client.get(first_status, headers=hospital)
        assert again.status_code == 200 and again.json() == manifest
        got = api.client.get(path_of(manifest["output"][0]["url"]), headers=hospital)
        assert got.content == files["Claim"]
        failed = api.client.get(f"/fhir/$export-status/{orphan.id}", headers=hospital)
        assert failed.status_code == 500
        assert "interrupted" in is_outcome(failed)["issue"][0]["diagnostics"]


# --- the Synthea-derived settlement set -------------------------------------------------------

SYNTHEA = VECTORS / "fhir" / "synthea-10"


def synthea_settlements(limit_encounters: int = 4) -> list[tuple[tuple[str, str], bytes]]:
    """Settlement Bundles derived from the Synthea patients: per patient, the Patient as
    generated, and a Claim per encounter (its period, its serviceProvider as provider), with
    a total in CNY written with two decimals; plus the Coverage naming the payer."""
    patients = [json.loads(x) for x in (SYNTHEA / "Patient.000.ndjson").read_bytes().splitlines()]
    encounters: dict[str, list[dict[str, Any]]] = {}
    for line in (SYNTHEA / "Encounter.000.ndjson").read_bytes().splitlines():
        enc = json.loads(line)
        ref = enc["subject"]["reference"].rsplit("/", 1)[-1].removeprefix("urn:uuid:")
        encounters.setdefault(ref, []).append(enc)
    out = []
    for n, patient in enumerate(patients):
        ident = next(i for i in patient["identifier"] if i.get("system") and i.get("value"))
        payer = "insurer-a" if n % 2 == 0 else "insurer-b"
        ref = f"urn:uuid:{patient['id']}"
        entries: list[dict[str, Any]] = [{"fullUrl": ref, "resource": patient}]
        raws = []
        for k, enc in enumerate(encounters.get(patient["id"], [])[:limit_encounters]):
            cents = int(hashlib.sha256(enc["id"].encode()).hexdigest()[:6], 16) % 500_000
            raws.append(
                f'{{"resourceType":"Claim","id":"syn-{n}-{k}","status":"active",'
                f'"type":{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/'
                f'claim-type","code":"professional"}}]}},"use":"claim",'
                f'"patient":{{"reference":"{ref}"}},"created":"{enc["period"]["start"]}",'
                f'"insurer":{{"reference":"Organization/{payer}"}},'
                f'"provider":{{"display":"synthea provider"}},'
                f'"priority":{{"coding":[{{"code":"normal"}}]}},'
                f'"insurance":[{{"sequence":1,"focal":true,"coverage":{{"reference":'
                f'"Coverage/cov-{n}"}}}}],"total":{{"value":{cents // 100}.{cents % 100:02d},'
                f'"currency":"CNY"}}}}'
            )
        raws.append(
            f'{{"resourceType":"Coverage","id":"cov-{n}","status":"active",'
            f'"beneficiary":{{"reference":"{ref}"}},"payor":[{{"reference":'
            f'"Organization/{payer}"}}]}}'
        )
        head = json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})
        more = "".join(
            f',{{"fullUrl":"urn:uuid:syn-{n}-{k}","resource":{r}}}' for k, r in enumerate(raws)
        )
        out.append(((ident["system"], ident["value"]), (head[:-2] + more + "]}").encode()))
    return out


def test_the_synthea_settlement_set_exports_with_matching_hashes(tmp_path: Path) -> None:
    if not (SYNTHEA / "Patient.000.ndjson").is_file():
        pytest.skip(f"Synthea vectors not present at {SYNTHEA}")
    bundles = synthea_settlements()
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        for n, (patient, body) in enumerate(bundles):
            submit(api, body, hospital)
            if n % 4 == 0:  # half of insurer A's patients consent to it
                submit(api, consent_bundle(patient, "insurer-a"), hospital)
        ins = insurer(api)
        manifest, files = exported(api, ins)
        expected: dict[str, list[bytes]] = {}
        for n, (_, body) in enumerate(bundles):
            if n % 4 != 0:
                continue
            doc = json.loads(body)
            for e in doc["entry"][1:]:
                r = e["resource"]
                expected.setdefault(r["resourceType"], []).append(r["id"].encode())
        assert sorted(files) == sorted(expected)
        for rtype, data in files.items():
            lines = data.splitlines()
            assert [json.loads(x)["id"].encode() for x in lines] == expected[rtype]
            for line in lines:
                assert any(line in body for _, body in bundles)  # byte for byte
        counts = {o["type"]: o["count"] for o in manifest["output"]}
        assert counts == {t: len(ids) for t, ids in expected.items()}
        assert counts["Claim"] > 0


def test_a_job_of_another_process_is_orphaned_only_when_it_stops_reporting() -> None:
    spec = bulk_export.JobSpec("cl-1", "h", "hospital", None, ("Claim",), None, "x")
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def job(owner: str, updated: datetime, status: str = bulk_export.IN_PROGRESS) -> Any:
        stamp = updated.isoformat().replace("+00:00", "Z")
        return bulk_export.Job("j", spec, stamp, status, "queued", owner, stamp, None)

    fresh = now - bulk_export.STALE_AFTER + timedelta(seconds=1)
    stale = now - bulk_export.STALE_AFTER - timedelta(seconds=1)
    assert not bulk_export.is_orphaned(job("other", fresh), now)
    assert bulk_export.is_orphaned(job("other", stale), now)
    assert not bulk_export.is_orphaned(job("other", stale, bulk_export.COMPLETED), now)
    # This process's job is orphaned as soon as no worker of this process runs it.
    assert bulk_export.is_orphaned(job(bulk_export.PROCESS, fresh), now)
