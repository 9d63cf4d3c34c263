"""Exports keep the privacy promises (issue 19, items 3 and 13).

Item 3: a Bulk Data file is decided again when it is downloaded (a withdrawal since the
kick-off refuses it), jobs and files expire, and each download, like each regulator's RWD
export, is one access entry per patient disclosed, found in that patient's accounting of
disclosures. Item 13: what is kept about an export file (its SHA-256) and the quality facts
derived from Bundles are keyed by the patients' data keys, so after an erasure they confirm
no guess.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from exchange import vault
from exchange.identity.clients import register_client
from exchange.privacy import erasure
from exchange.quality import facts as qf
from exchange.settlement import bulk_export
from exchange.settlement.bulk_export import SHA256_EXTENSION
from tests.api_helpers import Api, is_outcome, open_api, stored_values_by_table
from tests.indexes.test_trace_api import GTIN
from tests.quality.test_quality_facts import EPISODES, episode_bundles
from tests.settlement.test_bulk_export import kickoff, path_of, wait_done
from tests.settlement.test_rwd_export_api import PASSPORT as RWD_PASSPORT
from tests.settlement.test_rwd_export_api import REGULATOR, patient_pack
from tests.settlement.test_settlement_index import PASSPORT, consent_bundle, settlement_bundle
from tests.settlement.test_settlement_search import insurer, submit

KIM = (PASSPORT, "M50000001")
LEE = (PASSPORT, "M50000002")


def finished(api: Api, headers: dict[str, str], **params: Any) -> Any:
    """Kick off and wait: the complete-status response."""
    started = kickoff(api, headers, **params)
    assert started.status_code == 202, started.text
    done = wait_done(api, started.headers["Content-Location"], headers)
    assert done.status_code == 200, done.text
    return done


def disclosures(api: Api, hospital: dict[str, str], patient: tuple[str, str]) -> list[dict]:
    """The AuditEvents of the patient's accounting of disclosures, as the hospital reads it."""
    got = api.client.get(
        f"/v1/patients/{patient[1]}/disclosures", params={"system": patient[0]}, headers=hospital
    )
    assert got.status_code == 200, got.text
    return [e["resource"] for e in got.json().get("entry", [])]


def erase(api: Api, org: str, patient: tuple[str, str]) -> None:
    first, _ = register_client(api.services.engine, "admin one", "admin", None)
    second, _ = register_client(api.services.engine, "admin two", "admin", None)
    request_id = erasure.request_erasure(api.services.vault, org, patient, first)
    erasure.confirm_erasure(api.services.log, api.services.vault, request_id, second)


def two_patient_export(api: Api) -> tuple[dict[str, str], dict[str, str], str]:
    """Kim and Lee each with a Claim and a consent for insurer-a; the insurer's finished
    export of Claims: (hospital headers, insurer headers, the Claim file's path)."""
    hospital = api.credential()
    for patient, tag in ((KIM, "K1"), (LEE, "L1")):
        submit(api, settlement_bundle(patient, "insurer-a", tag=tag, types=("Claim",)), hospital)
        submit(api, consent_bundle(patient, "insurer-a", consent_id=f"c-{tag}"), hospital)
    ins = insurer(api)
    done = finished(api, ins, _type="Claim")
    (item,) = done.json()["output"]
    assert item["count"] == 2
    return hospital, ins, path_of(item["url"])


# --- item 3 ---------------------------------------------------------------------------------


def test_a_file_is_refused_once_a_patient_in_it_withdrew(tmp_path: Path, db_url: str) -> None:
    with open_api(tmp_path / "data", db_url) as api:
        hospital, ins, file_url = two_patient_export(api)
        withdrawal = consent_bundle(
            KIM, "insurer-a", consent_id="c-K1", status="inactive",
            date_time="2026-03-09T00:00:00Z",
        )  # fmt: skip
        submit(api, withdrawal, hospital)
        refused = api.client.get(file_url, headers=ins)
        assert refused.status_code == 403, refused.text
        assert "consent no longer permits" in is_outcome(refused)["issue"][0]["diagnostics"]
        # A new export leaves out whoever withdrew.
        again = finished(api, ins, _type="Claim").json()["output"]
        assert [o["count"] for o in again] == [1]
        line = api.client.get(path_of(again[0]["url"]), headers=ins).content
        assert json.loads(line)["id"] == "c-L1"


def test_each_download_is_an_access_entry_per_patient_it_discloses(
    tmp_path: Path, db_url: str
) -> None:
    with open_api(tmp_path / "data", db_url) as api:
        hospital, ins, file_url = two_patient_export(api)
        before = {p: disclosures(api, hospital, p) for p in (KIM, LEE)}
        got = api.client.get(file_url, headers=ins)
        assert got.status_code == 200, got.text
        for patient in (KIM, LEE):
            new = disclosures(api, hospital, patient)[len(before[patient]) :]
            assert len(new) == 1, new
            (event,) = new
            assert event["outcome"] == "0" and event["subtype"][0]["code"] == "operation"
            assert event["entity"][1]["what"]["type"] == "Claim"
            assert event["agent"][0]["purposeOfUse"][0]["coding"][0]["code"] == "HPAYMT"
        assert KIM[1] not in json.dumps(new)


def test_jobs_and_files_expire(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        _, ins, file_url = two_patient_export(api)
        status = file_url.rsplit("/", 1)[0]
        job = bulk_export.load_job(api.services.engine, status.rsplit("/", 1)[1])
        assert job is not None
        for url in (status, file_url):
            got = api.client.get(url, headers=ins)
            assert got.status_code == 200
            expected = bulk_export.expires(job, timedelta(hours=24))
            assert parsedate_to_datetime(got.headers["Expires"]) == expected.replace(microsecond=0)
        # Configured shorter, the same job has expired: refused, and deleted with its files.
        api.services.settings = replace(api.services.settings, export_ttl=timedelta(seconds=0))
        gone = api.client.get(file_url, headers=ins)
        assert gone.status_code == 404, gone.text
        assert "expired" in json.dumps(is_outcome(gone))
        assert api.client.get(status, headers=ins).status_code == 404
        with api.services.engine.connect() as conn:
            assert conn.execute(select(bulk_export.jobs_table)).first() is None
            assert conn.execute(select(bulk_export.files_table)).first() is None


def test_each_rwd_export_is_an_access_entry_per_patient_it_discloses(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        patients = [(RWD_PASSPORT, p) for p in ("555555551", "555555552", "555555553")]
        for n, (_, passport) in enumerate(patients):
            assert api.post(patient_pack(n, passport), hospital).status_code == 201
        for patient in patients[:2]:  # the third gave no research consent
            body = consent_bundle(patient, REGULATOR, purpose="HRESCH")
            assert api.post(body, hospital).status_code == 201
        regulator = {**api.credential("regulator", REGULATOR), "X-Purpose-Of-Use": "HRESCH"}
        got = api.client.get("/v1/trace/rwd-export", params={"gtin": GTIN}, headers=regulator)
        assert got.status_code == 200 and got.content.count(b"\n") == 2
        for patient, disclosed in zip(patients, (True, True, False), strict=True):
            events = disclosures(api, hospital, patient)
            assert len(events) == (1 if disclosed else 0), events
            if disclosed:
                assert events[0]["outcome"] == "0"
                assert events[0]["agent"][0]["name"] == REGULATOR


# --- item 13 --------------------------------------------------------------------------------


def test_an_export_digest_is_keyed_and_confirms_nothing_after_an_erasure(
    tmp_path: Path, db_url: str
) -> None:
    with open_api(tmp_path / "data", db_url) as api:
        hospital = api.credential()
        submit(api, settlement_bundle(KIM, "insurer-a", types=("Claim",)), hospital)
        submit(api, consent_bundle(KIM, "insurer-a"), hospital)
        ins = insurer(api)
        (item,) = finished(api, ins, _type="Claim").json()["output"]
        digest = item["extension"][SHA256_EXTENSION]
        data = api.client.get(path_of(item["url"]), headers=ins).content
        assert hashlib.sha256(data).hexdigest() == digest

        def kept() -> bool:
            values = [v for vs in stored_values_by_table(api).values() for v in vs]
            return any(digest.encode() in v or bytes.fromhex(digest) in v for v in values)

        assert not kept(), "the file's plain SHA-256 is stored"
        erase(api, "hospital-a", KIM)
        assert not kept()
        status = path_of(item["url"]).rsplit("/", 1)[0]
        (after,) = api.client.get(status, headers=ins).json()["output"]
        assert "extension" not in after  # its digest can no longer be known
        assert api.client.get(path_of(item["url"]), headers=ins).status_code == 410


def test_quality_facts_are_sealed_under_the_bundle_key(tmp_path: Path, db_url: str) -> None:
    with open_api(tmp_path / "data", db_url) as api:
        hospital = api.credential()
        episode = EPISODES[0]
        for body in episode_bundles(episode):
            assert api.post(body, hospital).status_code == 201
        engine = api.services.engine
        api.services.indexes.fresh(qf.QUALITY)
        facts = qf.sender_rows(api.services.vault, "hospital-a")
        assert {"38214-3", "4548-4"} <= {str(r["code"]).rsplit("|", 1)[-1] for r in facts}
        stored = stored_values_by_table(api)[qf.quality_table.name]
        for clear in (b"38214-3", b"4548-4", b"6.5", episode.start.encode(), b"Encounter/e1"):
            assert not any(clear in v for v in stored), clear
        # A copy of the rows (a backup) is unreadable once the patient is erased.
        with engine.connect() as conn:
            copy = conn.execute(select(qf.quality_table)).all()
        erase(api, "hospital-a", ("urn:example:mrn", episode.patient.upper()))
        with engine.connect() as conn:
            alive = api.services.vault.bundle_keys(conn, {int(r.idx) for r in copy})
            gone = {int(r.idx) for r in copy} - set(alive)
            assert gone, "the Bundle keys of the patient's Bundles"
            with pytest.raises(vault.Erased):
                api.services.vault.joint_key_of(conn, gone, qf.FACT_LABEL)
        left = qf.sender_rows(api.services.vault, "hospital-a")
        assert len(left) == sum(1 for r in copy if int(r.idx) not in gone) < len(copy)


# --- items 2 and 13 together: what a Bundle naming two patients leaves behind ---------------

BABY = (PASSPORT, "M50000009")


def mother_and_baby_claim() -> bytes:
    """A Claim about the baby, in a Bundle that names the mother first (her entry's subject)."""
    doc = json.loads(settlement_bundle(BABY, "insurer-a", tag="B1", types=("Claim",)))
    mother = {"resourceType": "Patient", "identifier": [{"system": KIM[0], "value": KIM[1]}]}
    doc["entry"].insert(0, {"fullUrl": "urn:uuid:00000000-0000-0000-0000-0000000000ab",
                            "resource": mother})  # fmt: skip
    return json.dumps(doc).encode()


def test_erasing_one_patient_a_bundle_names_seals_away_what_was_derived_from_it_only(
    tmp_path: Path, db_url: str
) -> None:
    """The export digests and quality facts of a Bundle naming a mother and her baby are
    sealed under its Bundle key: erasing the baby makes them unreadable, while those of the
    mother's own Bundle (in another file) stay readable; the download of the file holding
    both is in both patients' accounting."""
    with open_api(tmp_path / "data", db_url) as api:
        hospital = api.credential()
        both = submit(api, mother_and_baby_claim(), hospital)
        claims = settlement_bundle(KIM, "insurer-a", tag="K1", types=("Claim", "Invoice"))
        own = submit(api, claims, hospital)
        for patient, tag in ((BABY, "B"), (KIM, "K")):
            submit(api, consent_bundle(patient, "insurer-a", consent_id=f"c-{tag}"), hospital)
        ins = insurer(api)
        output = {o["type"]: o for o in finished(api, ins, _type="Claim,Invoice").json()["output"]}
        assert (output["Claim"]["count"], output["Invoice"]["count"]) == (2, 1)
        got = api.client.get(path_of(output["Claim"]["url"]), headers=ins)
        assert got.status_code == 200, got.text
        for patient in (KIM, BABY):
            events = [e for e in disclosures(api, hospital, patient) if e["action"] == "E"
                      and e["subtype"][0]["code"] == "operation"]  # fmt: skip
            assert [e["entity"][-1]["what"]["type"] for e in events] == ["Claim"], patient

        engine = api.services.engine
        api.services.indexes.fresh(qf.QUALITY)
        facts = {int(str(r["idx"])) for r in qf.sender_rows(api.services.vault, "hospital-a")}
        assert {both["index"], own["index"]} <= facts
        with engine.connect() as conn:
            copy = conn.execute(select(qf.quality_table)).all()

        erase(api, "hospital-a", BABY)
        status = path_of(output["Claim"]["url"]).rsplit("/", 1)[0]
        after = {o["type"]: o for o in api.client.get(status, headers=ins).json()["output"]}
        assert "extension" not in after["Claim"]
        assert after["Invoice"]["extension"] == output["Invoice"]["extension"]
        assert api.client.get(path_of(output["Claim"]["url"]), headers=ins).status_code == 410
        invoice = api.client.get(path_of(output["Invoice"]["url"]), headers=ins)
        assert invoice.status_code == 200
        digest = hashlib.sha256(invoice.content).hexdigest()
        assert digest == output["Invoice"]["extension"][SHA256_EXTENSION]

        opened = api.services.vault
        with engine.connect() as conn:
            assert set(opened.bundle_keys(conn, [both["index"], own["index"]])) == {own["index"]}
            with pytest.raises(vault.Erased):
                opened.joint_key_of(conn, [both["index"], own["index"]], qf.FACT_LABEL)
            opened.joint_key_of(conn, [own["index"]], qf.FACT_LABEL)
        # The copy's rows of the Bundle naming the baby say nothing any more; the others do.
        left = {int(str(r["idx"])) for r in qf.sender_rows(api.services.vault, "hospital-a")}
        assert both["index"] not in left and own["index"] in left
        assert any(int(r.idx) == both["index"] for r in copy)
        assert api.client.get(f"/fhir/Bundle/{own['id']}", headers=hospital).status_code == 200
        assert api.client.get(f"/fhir/Bundle/{both['id']}", headers=hospital).status_code == 410
