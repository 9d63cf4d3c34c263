"""SMART Health Links through the service's HTTP API: a hospital makes a link to its patient's
summary, and whoever holds the link opens it without a credential.

The reader is the test's own, not the service's: the link is decoded with base64 and json,
the manifest asked for over HTTP, files opened with joserfc, the summary parsed by
fhir.resources (R4B) and its receipt checked by `medledger verify` against the key the log
publishes. Each open is looked for in the patient's accounting of disclosures.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
import uvicorn
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.provenance import Provenance
from joserfc import jwe
from joserfc.jwk import OctKey
from sqlalchemy import update

from exchange.app import create_app
from exchange.config import Settings
from exchange.identity.clients import register_client
from exchange.privacy.erasure import confirm_erasure, request_erasure
from exchange.store.tables import shl_links_table
from ledger.note import Verifier
from ledger.verify import verify_receipt, verify_submission
from tests.api_helpers import Api, is_outcome, open_api
from tests.delivery.peers import bound_socket
from tests.paths import FIXTURES
from tests.settlement.test_settlement_index import consent_resource
from tests.shl.conftest import ARTIFACTS
from tests.shl.test_viewer_browser import verdict

BASE = "http://testserver"
ORG = "boao-lecheng"
MRN_SYSTEM = "https://fhir.boao-lecheng-hospital.example/sid/mrn"
MRN = "BL2026110045"
PATIENT = f"{MRN_SYSTEM}|{MRN}"
PATIENT_NAME = "MINJUN KIM / 김민준"
RECORDS = [
    FIXTURES / "continuity" / name
    for name in ("boao-kr-inpatient-record.json", "boao-kr-discharge-meds.json")
]
SALT_EXTENSION = "urn:medledger:extension:salt"


# --- the test's own reader -------------------------------------------------------------------


def read_link(text: str) -> dict[str, Any]:
    """An SHL payload as a receiver decodes it: after '#', base64url, JSON."""
    link = text.rpartition("#")[2]
    assert link.startswith("shlink:/")
    raw = link[len("shlink:/") :]
    return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))


def open_jwe(key_b64url: str, token: str) -> tuple[dict[str, Any], bytes]:
    obj = jwe.decrypt_compact(token, OctKey.import_key(base64.urlsafe_b64decode(key_b64url + "=")))
    assert obj.plaintext is not None
    return dict(obj.protected), obj.plaintext


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def expires(days: int = 30) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


@dataclass
class Clinic:
    """The service with the Boao hospital's records of one Korean patient."""

    api: Api
    hospital: dict[str, str]

    @property
    def http(self) -> Any:
        return self.api.client

    def make(self, *, direct: bool = False, **body: Any) -> dict[str, Any]:
        request = {"patient": PATIENT, "expires": expires(), **body}
        answer = self.http.post(
            "/v1/shl",
            json=request,
            headers=self.hospital,
            params={"direct": direct} if direct else None,
        )
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def manifest(self, made: dict[str, Any], **body: Any) -> Any:
        return self.http.post(path_of(read_link(made["shlink"])["url"]), json=body)

    def accounting(self) -> list[dict[str, Any]]:
        answer = self.http.get(
            f"/v1/patients/{MRN}/disclosures", params={"system": MRN_SYSTEM}, headers=self.hospital
        )
        assert answer.status_code == 200, answer.text
        return [e["resource"] for e in answer.json()["entry"]]

    def expire(self, made: dict[str, Any]) -> None:
        """The link's time ran out: its stored expiry set to a second ago."""
        past = int(time.time()) - 1
        t = shl_links_table
        with self.api.services.engine.begin() as conn:
            conn.execute(update(t).where(t.c.id == made["id"]).values(exp=past))


def submit_records(api: Api, hospital: dict[str, str]) -> None:
    for path in RECORDS:
        answer = api.post(path.read_bytes(), hospital)
        assert answer.status_code == 201, answer.text


@pytest.fixture(scope="module")
def clinic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clinic]:
    with open_api(tmp_path_factory.mktemp("shl-api")) as api:
        hospital = api.credential("hospital", ORG)
        submit_records(api, hospital)
        yield Clinic(api, hospital)


def recipients(events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(agent name, action code, outcome) of the access entries of SHL requests."""
    return [
        (e["agent"][0].get("name"), e["subtype"][0]["code"], e["outcome"])
        for e in events
        if e["agent"][0]["who"]["identifier"]["value"].startswith("shl-")
    ]


def descriptions(events: list[dict[str, Any]]) -> list[str]:
    return [x["description"] for e in events for x in e["entity"] if "description" in x]


# --- a link, opened ----------------------------------------------------------------------------


def test_a_link_opens_to_a_verified_ips(clinic: Clinic, tmp_path: Path) -> None:
    made = clinic.make(label="Discharge summary, Boao")
    link_id = made["id"]
    assert made["viewer_url"] == f"{BASE}/shl/view#{made['shlink']}"
    assert made["qr_url"] == f"{BASE}/v1/shl/{link_id}/qr.png"
    payload = read_link(made["viewer_url"])
    assert payload["url"] == f"{BASE}/v1/shl/{link_id}/manifest" and len(payload["url"]) <= 128
    assert len(base64.urlsafe_b64decode(payload["key"] + "=")) == 32
    assert payload["label"] == "Discharge summary, Boao" and "flag" not in payload
    assert payload["exp"] > time.time() + 29 * 86400

    answer = clinic.manifest(made, recipient="Dr. Lee, Seoul")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    opened = []
    for f in answer.json()["files"]:
        assert f["contentType"] == "application/fhir+json"
        header, plain = open_jwe(payload["key"], f["embedded"])
        assert (header["alg"], header["enc"], header["cty"]) == (
            "dir", "A256GCM", "application/fhir+json",
        )  # fmt: skip
        opened.append(plain)
    summary, prov_bytes = opened

    bundle = Bundle.model_validate_json(summary)
    assert bundle.type == "document"
    assert bundle.entry[0].resource.get_resource_type() == "Composition"
    patient = next(e.resource for e in bundle.entry if e.resource.get_resource_type() == "Patient")
    assert "MINJUN" in json.dumps(patient.model_dump()["name"])
    # The summary is the hospital's submission, byte for byte, and its own ledger entry.
    stored = clinic.http.get(f"/fhir/Bundle/{made['bundle']}", headers=clinic.hospital)
    exact = clinic.http.get(f"/fhir/Binary/{made['bundle']}", headers=clinic.hospital)
    assert stored.status_code == 200 and exact.content == summary
    assert int(stored.headers["X-Ledger-Index"]) == made["index"]
    entry = clinic.api.entry(made["index"])
    assert entry.sender == ORG and entry.kind in ("record", "rwd")  # as intake classifies it

    prov = Provenance.model_validate_json(prov_bytes)
    assert prov.target[0].reference == f"Bundle/{bundle.id}"
    salt = next(x.valueBase64Binary for x in prov.extension if x.url == SALT_EXTENSION)
    salt_b64 = base64.b64encode(salt).decode()
    receipt = prov.signature[0].data.decode()
    vkey = clinic.http.get("/v1/log/key").text.strip()
    verified = verify_receipt(receipt, [Verifier.from_vkey(vkey)])
    verify_submission(verified.entry, summary, salt)
    assert verified.entry.index == made["index"]

    (tmp_path / "ips.json").write_bytes(summary)
    (tmp_path / "ips.tlog-proof").write_text(receipt)
    run = subprocess.run(
        [sys.executable, "-m", "exchange.cli", "verify", str(tmp_path / "ips.tlog-proof"),
         "--key", vkey, "--bundle", str(tmp_path / "ips.json"), "--salt", salt_b64],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_new_link_summarises_the_records_not_earlier_summaries(clinic: Clinic) -> None:
    first = clinic.make()
    second = clinic.make()
    a, b = (
        clinic.http.get(f"/fhir/Bundle/{m['bundle']}", headers=clinic.hospital).json()
        for m in (first, second)
    )
    assert len(a["entry"]) == len(b["entry"])  # the first summary is no record of the second
    assert a["id"] != b["id"] and second["index"] > first["index"]


def test_a_record_filed_with_a_consent_is_summarised_as_by_summary(tmp_path: Path) -> None:
    """A discharge Bundle that also carries a Consent is filed as `consent`; its clinical
    entries are in the link's summary all the same, exactly the entries Patient/$summary
    builds from the same Bundles."""
    doc = json.loads(RECORDS[0].read_text("utf-8"))
    patient_url = doc["entry"][0]["fullUrl"]
    doc["entry"].append(
        {
            "fullUrl": "urn:uuid:7d1e0c52-3f0a-4b8e-9c61-0a1b2c3d4eff",
            "resource": consent_resource(patient_url, "insurer-a"),
        }
    )
    with open_api(tmp_path) as api:
        hospital = api.credential("hospital", ORG)
        filed = api.post(json.dumps(doc, ensure_ascii=False).encode(), hospital)
        assert filed.status_code == 201 and filed.json()["kind"] == "consent", filed.text
        made = Clinic(api, hospital).make()
        shared = api.client.get(f"/fhir/Binary/{made['bundle']}", headers=hospital).json()
        summary = api.client.get(
            "/fhir/Patient/$summary", params={"identifier": PATIENT}, headers=hospital
        )
        assert summary.status_code == 200, summary.text

    def clinical(ips: dict[str, Any]) -> list[tuple[str, str]]:
        """Each entry's type and code (ids are the document's own)."""
        resources = [e["resource"] for e in ips["entry"]]
        skip = ("Composition", "Patient")
        return sorted(
            (r["resourceType"], json.dumps(r.get("code")))
            for r in resources
            if r["resourceType"] not in skip
        )

    types = {t for t, _ in clinical(shared)}
    assert {"Condition", "Procedure", "AllergyIntolerance"} <= types
    assert "Consent" not in types
    assert clinical(shared) == clinical(summary.json())


def test_a_shared_summary_is_no_record_of_its_own(clinic: Clinic) -> None:
    """The summary is logged as the hospital's submission, but derived from records already
    indexed: the patient's next IPS and the recall index do not read it again."""

    def seen() -> tuple[int, list[int]]:
        summary = clinic.http.get(
            "/fhir/Patient/$summary", params={"identifier": PATIENT}, headers=clinic.hospital
        )
        assert summary.status_code == 200, summary.text
        recall = clinic.http.get(
            "/v1/trace", params={"gtin": "06901234560015"}, headers=clinic.hospital
        )
        assert recall.status_code == 200, recall.text
        return len(summary.json()["entry"]), [e["index"] for e in recall.json()["entries"]]

    before = seen()
    assert before[1]  # the discharge medication's pack is a use on record
    clinic.make()
    assert seen() == before


def test_each_access_is_in_the_patients_accounting(clinic: Clinic) -> None:
    made = clinic.make()
    before = clinic.accounting()
    assert clinic.manifest(made, recipient="Dr. Lee, Seoul").status_code == 200
    by_location = clinic.manifest(made, recipient="Dr. Kim, Busan", embeddedLengthMax=200)
    assert by_location.status_code == 200
    files = by_location.json()["files"]
    assert all("location" in f and "embedded" not in f for f in files)
    key = read_link(made["shlink"])["key"]
    got = clinic.http.get(path_of(files[0]["location"]))
    assert got.status_code == 200 and got.headers["content-type"] == "application/jose"
    assert Bundle.model_validate_json(open_jwe(key, got.text)[1]).type == "document"
    assert clinic.manifest(made).status_code == 400  # no recipient: nothing to account
    assert (
        clinic.http.post(f"/v1/shl/{'B' * 43}/manifest", json={"recipient": "x"}).status_code == 404
    )

    events = clinic.accounting()[len(before) :]
    assert recipients(events) == [
        ("Dr. Lee, Seoul", "read", "0"),
        ("Dr. Kim, Busan", "read", "0"),
        ("Dr. Kim, Busan", "read", "0"),
    ]
    assert descriptions(events) == [
        "SHL manifest: 2 files, 2 embedded, 0 by location",
        "SHL manifest: 2 files, 0 embedded, 2 by location",
        "SHL file 1 by location",
    ]
    for e in events:
        assert e["agent"][0]["purposeOfUse"][0]["coding"][0]["code"] == "PATRQT"
        assert e["meta"]["profile"][0].endswith("PrivacyDisclosure")
        assert made["id"] not in json.dumps(e)  # the id opens the link: never in the accounting


# --- expiry, revocation, passcodes, the U flag -------------------------------------------------


def test_an_expired_link_answers_404_to_every_request(clinic: Clinic) -> None:
    made = clinic.make(passcode="2468")
    direct = clinic.make(direct=True)
    before = clinic.accounting()
    clinic.expire(made)
    clinic.expire(direct)
    answers = [
        clinic.manifest(made, recipient="Dr. Lee", passcode="2468"),
        clinic.http.get(f"/v1/shl/{direct['id']}/file", params={"recipient": "Dr. Lee"}),
        clinic.http.get(f"/v1/shl/{made['id']}/qr.png", headers=clinic.hospital),
        clinic.http.delete(f"/v1/shl/{made['id']}", headers=clinic.hospital),
    ]
    for answer in answers:
        assert answer.status_code == 404, answer.text
        is_outcome(answer)
    events = clinic.accounting()[len(before) :]
    assert recipients(events) == [("Dr. Lee", "search-type", "4")] * 2
    assert descriptions(events) == ["SHL link expired"] * 2


def test_a_revoked_link_answers_404_to_every_request(clinic: Clinic) -> None:
    made = clinic.make()
    by_location = clinic.manifest(made, recipient="Dr. Lee", embeddedLengthMax=0)
    ticket = path_of(by_location.json()["files"][0]["location"])
    other = clinic.api.credential("hospital", "pujiang-intl")
    assert clinic.http.delete(f"/v1/shl/{made['id']}", headers=other).status_code == 404
    insurer = clinic.api.credential("insurer", "insurer-a")
    assert clinic.http.delete(f"/v1/shl/{made['id']}", headers=insurer).status_code == 403

    assert clinic.http.delete(f"/v1/shl/{made['id']}", headers=clinic.hospital).status_code == 204
    before = clinic.accounting()
    for answer in [
        clinic.manifest(made, recipient="Dr. Lee"),
        clinic.http.get(ticket),
        clinic.http.get(f"/v1/shl/{made['id']}/qr.png", headers=clinic.hospital),
        clinic.http.delete(f"/v1/shl/{made['id']}", headers=clinic.hospital),
    ]:
        assert answer.status_code == 404, answer.text
        is_outcome(answer)
    assert descriptions(clinic.accounting()[len(before) :]) == ["SHL link revoked"] * 2

    admin = clinic.api.credential("admin")
    another = clinic.make()
    assert clinic.http.delete(f"/v1/shl/{another['id']}", headers=admin).status_code == 204
    assert clinic.manifest(another, recipient="Dr. Lee").status_code == 404


def test_wrong_passcodes_count_down_then_the_link_is_dead(clinic: Clinic) -> None:
    made = clinic.make(passcode="7394")
    assert read_link(made["shlink"])["flag"] == "P"
    before = clinic.accounting()
    missing = clinic.manifest(made, recipient="Dr. Park")
    assert (missing.status_code, missing.json()) == (401, {"remainingAttempts": 5})
    assert clinic.manifest(made, recipient="Dr. Park", passcode="7394").status_code == 200
    for left in range(4, -1, -1):
        wrong = clinic.manifest(made, recipient="Mallory", passcode="0000")
        assert (wrong.status_code, wrong.json()) == (401, {"remainingAttempts": left})
    dead = clinic.manifest(made, recipient="Dr. Park", passcode="7394")
    assert dead.status_code == 404
    is_outcome(dead)
    events = clinic.accounting()[len(before) :]
    assert recipients(events) == [
        ("Dr. Park", "search-type", "4"),
        ("Dr. Park", "read", "0"),
        *[("Mallory", "search-type", "4")] * 5,
        ("Dr. Park", "search-type", "4"),
    ]
    assert descriptions(events)[-2:] == [
        "SHL manifest: wrong passcode, 0 attempts left; link disabled",
        "SHL link disabled after wrong passcodes",
    ]


def test_parallel_wrong_passcodes_are_each_counted(clinic: Clinic) -> None:
    """Five guesses at once use up the five attempts, each one: a request that loses the
    compare-and-set answers again from the new count, however often it loses."""
    made = clinic.make(passcode="7394")
    url = path_of(read_link(made["shlink"])["url"])
    answers: list[Any] = []
    start = threading.Barrier(5)

    def guess() -> None:
        start.wait()
        answers.append(clinic.http.post(url, json={"recipient": "Mallory", "passcode": "1"}))

    threads = [threading.Thread(target=guess) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [401] * 5, [a.text for a in answers]
    assert sorted(a.json()["remainingAttempts"] for a in answers) == [0, 1, 2, 3, 4]
    assert clinic.manifest(made, recipient="Dr. Park", passcode="7394").status_code == 404


def test_a_direct_file_link(clinic: Clinic) -> None:
    made = clinic.make(direct=True)
    payload = read_link(made["shlink"])
    assert payload["flag"] == "U" and payload["url"] == f"{BASE}/v1/shl/{made['id']}/file"
    before = clinic.accounting()
    got = clinic.http.get(path_of(payload["url"]) + "?recipient=" + quote("Dr. Lee, Seoul"))
    assert got.status_code == 200 and got.headers["content-type"] == "application/jose"
    collection = Bundle.model_validate_json(open_jwe(payload["key"], got.text)[1])
    assert collection.type == "collection"
    binary, prov = (e.resource for e in collection.entry)
    summary = binary.data
    assert Bundle.model_validate_json(summary).type == "document"
    assert prov.target[0].reference == f"Binary/{binary.id}"
    receipt = prov.signature[0].data.decode()
    entry = verify_receipt(receipt, [clinic.api.verifier()]).entry
    verify_submission(entry, summary, prov.extension[0].valueBase64Binary)
    assert entry.index == made["index"]

    no_recipient = clinic.http.get(path_of(payload["url"]))
    assert no_recipient.status_code == 400
    assert is_outcome(no_recipient)["issue"][0]["expression"] == ["recipient"]
    assert (
        clinic.http.post(
            f"/v1/shl/{made['id']}/manifest", json={"recipient": "Dr. Lee"}
        ).status_code
        == 404
    )  # a U link has no manifest
    assert recipients(clinic.accounting()[len(before) :]) == [
        ("Dr. Lee, Seoul", "read", "0"),
        ("Dr. Lee", "search-type", "4"),
    ]
    plain = clinic.make()
    assert clinic.http.get(f"/v1/shl/{plain['id']}/file?recipient=x").status_code == 404


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"patient": PATIENT, "expires": expires(366)}, 400, "expires"),
        ({"patient": PATIENT, "expires": expires(-1)}, 400, "expires"),
        ({"patient": PATIENT, "expires": "2027-01-01T10:00:00"}, 400, "expires"),
        ({"patient": PATIENT}, 400, "expires"),
        ({"patient": MRN, "expires": expires()}, 400, "patient"),
        ({"patient": PATIENT, "expires": expires(), "label": "x" * 81}, 400, "label"),
        ({"patient": PATIENT, "expires": expires(), "passcode": ""}, 400, "passcode"),
        ({"patient": PATIENT, "expires": expires(), "flag": "L"}, 400, "flag"),
        ({"patient": f"{MRN_SYSTEM}|NOBODY", "expires": expires()}, 404, "patient"),
        ([PATIENT], 400, "body"),
    ],
)
def test_bad_link_requests_are_refused_naming_the_field(
    clinic: Clinic, body: Any, status: int, field: str
) -> None:
    size = clinic.api.log_size()
    answer = clinic.http.post("/v1/shl", json=body, headers=clinic.hospital)
    assert answer.status_code == status, answer.text
    assert is_outcome(answer)["issue"][0]["expression"] == [field]
    assert clinic.api.log_size() == size  # nothing appended


def test_other_bad_link_requests(clinic: Clinic) -> None:
    size = clinic.api.log_size()
    h = {**clinic.hospital, "Content-Type": "application/json"}
    for raw in (b"{not json", b"x" * 9000):
        answer = clinic.http.post("/v1/shl", content=raw, headers=h)
        assert answer.status_code == 400 and is_outcome(answer)
    both = {"patient": PATIENT, "expires": expires(), "passcode": "1234"}
    answer = clinic.http.post("/v1/shl", json=both, params={"direct": True}, headers=h)
    assert answer.status_code == 400
    assert is_outcome(answer)["issue"][0]["expression"] == ["passcode"]
    other = clinic.api.credential("hospital", "pujiang-intl")  # not this hospital's patient
    answer = clinic.http.post("/v1/shl", json={"patient": PATIENT, "expires": expires()},
                              headers=other)  # fmt: skip
    assert answer.status_code == 404
    insurer = clinic.api.credential("insurer", "insurer-a")
    assert clinic.http.post("/v1/shl", json=both, headers=insurer).status_code == 403
    assert clinic.http.post("/v1/shl", json=both).status_code == 401
    assert clinic.api.log_size() == size


def test_a_public_url_too_long_for_shl_makes_no_link(tmp_path: Path) -> None:
    """SHL allows a manifest URL of 128 characters: with a 43-character id, 66 for the base."""
    base = "https://" + "x" * 50 + ".example.org"  # 70 characters
    with open_api(tmp_path / "data", public_url=base) as api:
        hospital = api.credential("hospital", ORG)
        body = {"patient": PATIENT, "expires": expires()}
        answer = api.client.post("/v1/shl", json=body, headers=hospital)
        assert answer.status_code == 422
        assert "too long" in is_outcome(answer)["issue"][0]["diagnostics"]


def test_a_sender_the_registry_bars_makes_no_link(clinic: Clinic) -> None:
    """The summary is the hospital's submission: a registry that knows no such institution
    (strict mode) refuses it as it refuses any submission, before anything is appended."""
    size = clinic.api.log_size()
    senders = clinic.api.services.senders
    senders.strict = True
    try:
        body = {"patient": PATIENT, "expires": expires()}
        answer = clinic.http.post("/v1/shl", json=body, headers=clinic.hospital)
    finally:
        senders.strict = False
    assert answer.status_code == 403
    assert f"sender {ORG}" in is_outcome(answer)["issue"][0]["diagnostics"]
    assert clinic.api.log_size() == size


@pytest.mark.parametrize("link_id", ["A" * 43, "short", "x" * 300, "%2E%2E"])
def test_unknown_links_answer_404(clinic: Clinic, link_id: str) -> None:
    for answer in [
        clinic.http.post(f"/v1/shl/{link_id}/manifest", json={"recipient": "Dr. Lee"}),
        clinic.http.get(f"/v1/shl/{link_id}/file", params={"recipient": "Dr. Lee"}),
        clinic.http.get(f"/v1/shl/{link_id}/files/AAAA"),
        clinic.http.get(f"/v1/shl/{link_id}/qr.png", headers=clinic.hospital),
        clinic.http.delete(f"/v1/shl/{link_id}", headers=clinic.hospital),
    ]:
        assert answer.status_code == 404, answer.text
        is_outcome(answer)


def test_an_erased_patients_links_answer_404(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential("hospital", ORG)
        submit_records(api, hospital)
        clinic = Clinic(api, hospital)
        made, direct = clinic.make(), clinic.make(direct=True)
        assert clinic.manifest(made, recipient="Dr. Lee").status_code == 200
        admin1, _ = register_client(api.services.engine, "a1", "admin", None)
        admin2, _ = register_client(api.services.engine, "a2", "admin", None)
        request_id = request_erasure(api.services.vault, ORG, (MRN_SYSTEM, MRN), admin1)
        confirm_erasure(api.services.log, api.services.vault, request_id, admin2)
        size = api.log_size()
        for answer in [
            clinic.manifest(made, recipient="Dr. Lee"),
            api.client.get(f"/v1/shl/{direct['id']}/file", params={"recipient": "Dr. Lee"}),
            api.client.get(f"/v1/shl/{made['id']}/qr.png", headers=hospital),
            api.client.delete(f"/v1/shl/{made['id']}", headers=hospital),
        ]:
            assert answer.status_code == 404, answer.text
            is_outcome(answer)
        assert api.log_size() == size  # nothing is known of whom they were about
        gone = api.client.post("/v1/shl", json={"patient": PATIENT, "expires": expires()},
                               headers=hospital)  # fmt: skip
        assert gone.status_code == 404


def test_links_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    """The same store on PostgreSQL: a link made, opened, its passcode counted, revoked."""
    with open_api(tmp_path / "data", pg_url) as api:
        hospital = api.credential("hospital", ORG)
        submit_records(api, hospital)
        clinic = Clinic(api, hospital)
        made = clinic.make(passcode="7394")
        wrong = clinic.manifest(made, recipient="Mallory", passcode="0000")
        assert (wrong.status_code, wrong.json()) == (401, {"remainingAttempts": 4})
        right = clinic.manifest(made, recipient="Dr. Lee", passcode="7394")
        assert right.status_code == 200, right.text
        key = read_link(made["shlink"])["key"]
        summary = open_jwe(key, right.json()["files"][0]["embedded"])[1]
        assert summary == api.client.get(f"/fhir/Binary/{made['bundle']}", headers=hospital).content
        assert api.client.delete(f"/v1/shl/{made['id']}", headers=hospital).status_code == 204
        assert clinic.manifest(made, recipient="Dr. Lee", passcode="7394").status_code == 404
        assert recipients(clinic.accounting()) == [
            ("Mallory", "search-type", "4"),
            ("Dr. Lee", "read", "0"),
            ("Dr. Lee", "search-type", "4"),
        ]


# --- the QR code and the viewer ----------------------------------------------------------------


def test_qr_decodes_to_the_viewer_url(clinic: Clinic, tmp_path: Path) -> None:
    made = clinic.make(passcode="7394", label="Discharge summary, Boao")
    other = clinic.api.credential("hospital", "pujiang-intl")
    assert clinic.http.get(f"/v1/shl/{made['id']}/qr.png", headers=other).status_code == 404
    admin = clinic.api.credential("admin")
    assert clinic.http.get(f"/v1/shl/{made['id']}/qr.png", headers=admin).status_code == 403
    answer = clinic.http.get(path_of(made["qr_url"]), headers=clinic.hospital)
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    assert answer.content.startswith(b"\x89PNG\r\n\x1a\n")
    zbarimg = shutil.which("zbarimg")
    if zbarimg is None:
        pytest.skip("no zbarimg to decode the QR code (Debian: apt-get install zbar-tools)")
    (tmp_path / "qr.png").write_bytes(answer.content)
    run = subprocess.run(
        [zbarimg, "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", str(tmp_path / "qr.png")],
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.decode().rstrip("\n") == made["viewer_url"]


def test_the_viewer_page_trusts_the_logs_key(clinic: Clinic) -> None:
    page = clinic.http.get("/shl/view", params={"recipient": "Dr. Lee"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["content-security-policy"] == "frame-ancestors 'none'"
    vkey = clinic.http.get("/v1/log/key").text.strip()
    assert json.dumps(vkey) in page.text


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """The service under uvicorn on a loopback port, with the Boao hospital's records."""
    sock = bound_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("shl-live")), public_url=base)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the service did not start"
        time.sleep(0.01)
    try:
        _, token = register_client(app.services.engine, "boao", "hospital", ORG)
        hospital = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, timeout=60) as http:
            post = {**hospital, "Content-Type": "application/fhir+json"}
            for path in RECORDS:
                posted = http.post("/fhir/Bundle", content=path.read_bytes(), headers=post)
                assert posted.status_code == 201, posted.text
            yield base, (http, hospital)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def test_the_viewer_verifies_a_link_from_the_live_service(page: Any, live: tuple[str, Any]) -> None:
    """The viewer URL the service answered, opened in Chromium: the recipient names
    themselves, gives the passcode, and the page fetches, decrypts and verifies the summary
    against the log key it was built with; the open is in the patient's accounting."""
    base, (http, hospital) = live
    made = http.post("/v1/shl", json={"patient": PATIENT, "expires": expires(),
                     "label": "Discharge summary, Boao", "passcode": "7394"},
                     headers=hospital)  # fmt: skip
    assert made.status_code == 201, made.text
    viewer_url = made.json()["viewer_url"]
    assert viewer_url.startswith(f"{base}/shl/view#shlink:/")

    page.goto(viewer_url)
    page.fill("#recipient", "Dr. Lee, Seoul")
    page.fill("#passcode", "7394")
    page.click("#open-form button[type=submit]")
    status, text = verdict(page)
    assert status == "verified", text
    assert page.locator("#patient-name").inner_text() == PATIENT_NAME
    # The top of the page, as docs/img/shl-viewer.png shows it.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    clip = {"x": 0, "y": 0, "width": 1280, "height": 1380}
    page.screenshot(path=str(ARTIFACTS / "shl-viewer-docs.png"), clip=clip, full_page=True)

    accounting = http.get(f"/v1/patients/{MRN}/disclosures", params={"system": MRN_SYSTEM},
                          headers=hospital).json()  # fmt: skip
    events = [e["resource"] for e in accounting["entry"]]
    assert recipients(events)[-1] == ("Dr. Lee, Seoul", "read", "0")
