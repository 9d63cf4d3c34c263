"""The sharing side of SMART Health Links (exchange/shl): payload, files, manifest, QR.

The reader here is the test's own, not the library's: the payload is decoded with base64 and
json, files are opened with joserfc (the library encrypts with `cryptography`), the summary
is parsed by fhir.resources (R4B) and its receipt checked by ledger.verify and by the
`medledger verify` command, over a real ledger in a temporary SQLite file.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.provenance import Provenance
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwe
from joserfc.jwk import OctKey

from exchange.shl import files as shl_files
from exchange.shl.errors import ShlError
from exchange.shl.files import SALT_EXTENSION, decrypt, direct_file, encrypt, ips_from_records
from exchange.shl.link import (
    PASSCODE_ATTEMPTS,
    LinkState,
    new_link,
    parse_request,
)
from exchange.shl.manifest import (
    Answer,
    Locations,
    answer_direct,
    answer_location,
    answer_manifest,
)
from exchange.shl.payload import Payload, decode, encode, viewer_url
from exchange.shl.qr import qr_png
from exchange.shl.viewer import render_viewer
from ledger.note import Verifier
from ledger.verify import verify_receipt, verify_submission
from tests.shl.shl_helpers import FIXTURES, IPS_NOW, PATIENT_NAME, Ledger, Recorded, ShlServer
from tests.shl.test_viewer_browser import verdict

BASE = "https://exchange.example.org"
PATIENT = "urn:oid:2.16.840.1.113883.2.13|KR-MINJUN-0001"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SECRET = bytes(range(32))
RECORDS = ["boao-kr-inpatient-record.json", "boao-kr-discharge-meds.json"]


# --- the test's own reader ------------------------------------------------------------------


def read_link(text: str) -> dict[str, Any]:
    """An SHL payload as a receiver decodes it: the fragment after '#', base64url, JSON."""
    link = text.rpartition("#")[2]
    assert link.startswith("shlink:/")
    raw = link[len("shlink:/") :]
    return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))


def open_jwe(key_b64url: str, token: str) -> tuple[dict[str, Any], bytes]:
    key = OctKey.import_key(base64.urlsafe_b64decode(key_b64url + "="))
    obj = jwe.decrypt_compact(token, key)
    assert obj.plaintext is not None
    return dict(obj.protected), obj.plaintext


@dataclass
class World:
    ledger: Ledger
    ips: bytes
    rec: Recorded
    store: dict[str, LinkState]
    locations: Locations

    def link(self, **request: Any) -> LinkState:
        body = {"patient": PATIENT, "expires": (NOW + timedelta(days=30)).isoformat()}
        direct = request.pop("direct", False)
        body.update(request)
        state = new_link(
            parse_request(body, now=NOW),
            now=NOW,
            created_by="boao-lecheng-hospital",
            ips_bundle="ips-kr-0001",
            ips_version=1,
            direct=direct,
        )
        self.store[state.id] = state
        return state

    def files(self) -> list[shl_files.LinkFile]:
        # A fresh receipt at each answer, as the route serves Log.receipt(index).
        receipt = self.ledger.log.receipt(self.rec.index)
        return shl_files.link_files(self.ips, salt=self.rec.salt, receipt=receipt)

    def manifest(self, link_id: str, body: object, now: datetime = NOW) -> Answer:
        """The thin route: answer, store the attempts compare-and-set, return."""
        answer = answer_manifest(
            self.store.get(link_id), body, now=now, files=self.files, locations=self.locations
        )
        if answer.attempts is not None:
            state = self.store[link_id]
            assert state.remaining_attempts == answer.attempts.expected
            self.store[link_id] = dataclasses.replace(
                state, remaining_attempts=answer.attempts.remaining
            )
        return answer


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    ledger = Ledger(tmp_path_factory.mktemp("shl-server") / "ledger.db")
    records = [(FIXTURES / name).read_bytes() for name in RECORDS]
    ips = ips_from_records(records, now=IPS_NOW, document_id="ips-kr-0001")
    yield World(ledger, ips, ledger.record(ips), {}, Locations(SECRET, BASE))
    ledger.close()


# --- the payload ------------------------------------------------------------------------------


def test_the_specification_example_link_is_encoded_exactly(vectors: Path) -> None:
    spec = (vectors.parent / "specs" / "hl7-smart-health-links.md").read_text(encoding="utf-8")
    want = re.search(r'const shlinkBare = .*\n// "(shlink:/[A-Za-z0-9_-]+)"', spec)
    assert want
    payload = Payload(
        url="https://ehr.example.org/qr/Y9xwkUdtmN9wwoJoN3ffJIhX2UGvCL1JnlPVNL3kDWM/m",
        key="rxTgYlOaKJPFtcEd0qcceN8wEU4p94SqAwIWQe6uX7Q",
        flag="LP",
        label="Back-to-school immunizations for Oliver Brown",
        v=None,
    )
    assert encode(payload) == want.group(1)
    assert decode(f"https://viewer.example.org#{want.group(1)}") == payload


def test_the_specification_example_payload_decodes(vectors: Path) -> None:
    example = (vectors.parent / "specs" / "hl7-shl-payload-example.json").read_bytes()
    link = "shlink:/" + base64.urlsafe_b64encode(example).rstrip(b"=").decode()
    got = decode(link)
    # exp is a string of milliseconds there, read as the viewer reads it; `labelzzz` ignored.
    assert (got.exp, got.flag, got.label, got.v) == (1767225600, "LP", None, 1)


def test_the_specification_example_file_decrypts(vectors: Path) -> None:
    spec = (vectors.parent / "specs" / "hl7-smart-health-links.md").read_text(encoding="utf-8")
    token = re.search(r"//(eyJhbGciOiJkaXIi[A-Za-z0-9_.-]+)", spec)
    key = re.search(r'"key": "([A-Za-z0-9_-]{43})"', spec)
    assert token and key
    header, plain = decrypt(base64.urlsafe_b64decode(key.group(1) + "="), token.group(1))
    assert header["cty"] == "application/smart-health-card"
    assert json.loads(plain)["verifiableCredential"][0].startswith("eyJ")


payloads = st.builds(
    Payload,
    url=st.tuples(
        st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=20),
        st.text("ABCXYZabcxyz0189_/-", max_size=60),
    ).map(lambda t: f"https://{t[0]}.example/{t[1]}"),
    key=st.binary(min_size=32, max_size=32).map(
        lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    ),
    exp=st.none() | st.integers(0, 10**11 - 1),
    flag=st.sampled_from(["", "L", "P", "U", "LP", "LU"]),
    label=st.none() | st.text(max_size=80),
    v=st.sampled_from([None, 1]),
)


@given(payloads)
def test_payload_round_trip(payload: Payload) -> None:
    link = encode(payload)
    assert decode(link) == payload
    assert decode(viewer_url(BASE, payload)) == payload
    obj = read_link(viewer_url(BASE, link))  # the independent reader agrees
    assert obj["url"] == payload.url and obj["key"] == payload.key
    assert obj.get("flag", "") == payload.flag and obj.get("label") == payload.label


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"key": "rxTgYlOaKJPFtcEd0qcceN8wEU4p94SqAwIWQe6uX7"}, "key"),
        ({"key": "rxTgYlOaKJPFtcEd0qcceN8wEU4p94SqAwIWQe6uX7Q=="}, "key"),
        ({"url": "ftp://ehr.example.org/m"}, "url"),
        ({"url": "https://ehr.example.org/" + "m" * 110}, "url"),
        ({"flag": "PL"}, "flag"),
        ({"flag": "PU"}, "flag"),
        ({"flag": "X"}, "flag"),
        ({"label": "x" * 81}, "label"),
        ({"exp": -1}, "exp"),
        ({"v": 2}, "v"),
    ],
)
def test_bad_payloads_are_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    good = {
        "url": "https://ehr.example.org/m",
        "key": "rxTgYlOaKJPFtcEd0qcceN8wEU4p94SqAwIWQe6uX7Q",
    }
    with pytest.raises(ShlError) as e:
        Payload(**{**good, **change})
    assert e.value.field == field


@pytest.mark.parametrize(
    ("text", "field"),
    [("https://x.example/#nope", "shlink"), ("shlink:/e30", "url"), ("shlink:/!!", "shlink")],
)
def test_bad_links_are_refused(text: str, field: str) -> None:
    with pytest.raises(ShlError) as e:
        decode(text)
    assert e.value.field == field


# --- encryption ---------------------------------------------------------------------------------


@settings(max_examples=50)
@given(st.binary(max_size=4096), st.binary(min_size=32, max_size=32), st.booleans())
def test_files_open_with_another_jose_library(data: bytes, key: bytes, deflate: bool) -> None:
    token = encrypt(key, data, cty="application/fhir+json", deflate=deflate)
    key_text = base64.urlsafe_b64encode(key).rstrip(b"=").decode()
    header, plain = open_jwe(key_text, token)
    assert plain == data
    assert header["alg"] == "dir" and header["enc"] == "A256GCM"
    assert header["cty"] == "application/fhir+json" and ("zip" in header) == deflate
    assert decrypt(key, token) == (header, data)


def test_every_encryption_has_its_own_nonce() -> None:
    key = bytes(32)
    nonces = {encrypt(key, b"same").split(".")[2] for _ in range(200)}
    assert len(nonces) == 200


def test_an_altered_file_is_refused() -> None:
    key = bytes(32)
    parts = encrypt(key, b'{"resourceType":"Bundle"}').split(".")
    parts[3] = ("B" if parts[3][0] == "A" else "A") + parts[3][1:]
    with pytest.raises(ShlError, match="does not decrypt"):
        decrypt(key, ".".join(parts))


# --- a link, end to end, read by the test's own reader -----------------------------------------


def test_a_link_opens_to_a_verified_ips(world: World, tmp_path: Path) -> None:
    state = world.link(label="Discharge summary, Boao")
    link = encode(state.payload(BASE))
    payload = read_link(viewer_url(BASE, link))
    assert payload["url"] == f"{BASE}/v1/shl/{state.id}/manifest"
    assert len(payload["key"]) == 43 and len(base64.urlsafe_b64decode(payload["key"] + "=")) == 32
    assert payload["exp"] == int((NOW + timedelta(days=30)).timestamp())
    assert "flag" not in payload and payload["v"] == 1

    link_id = payload["url"].split("/")[-2]
    answer = world.manifest(link_id, {"recipient": "Dr. Lee, Seoul"})
    assert answer.status == 200 and answer.media_type == "application/json"
    assert answer.access is not None
    assert (answer.access.patient, answer.access.recipient) == (PATIENT, "Dr. Lee, Seoul")
    assert (answer.access.action, answer.access.outcome) == ("read", "0")
    assert isinstance(answer.body, dict)
    opened = []
    for f in answer.body["files"]:
        assert f["contentType"] == "application/fhir+json"
        header, plain = open_jwe(payload["key"], f["embedded"])
        assert header["cty"] == "application/fhir+json"
        opened.append(plain)

    summary, prov_bytes = opened
    assert summary == world.ips  # the exact bytes the ledger holds
    bundle = Bundle.model_validate_json(summary)
    assert (
        bundle.type == "document" and bundle.entry[0].resource.get_resource_type() == "Composition"
    )
    patient = next(e.resource for e in bundle.entry if e.resource.get_resource_type() == "Patient")
    assert PATIENT_NAME.split(" / ")[0].split()[0] in json.dumps(patient.model_dump()["name"])
    prov = Provenance.model_validate_json(prov_bytes)
    assert prov.target[0].reference == f"Bundle/{bundle.id}"
    salt = next(x.valueBase64Binary for x in prov.extension if x.url == SALT_EXTENSION)
    salt_b64 = base64.b64encode(salt).decode()
    receipt = prov.signature[0].data.decode()

    verified = verify_receipt(receipt, [Verifier.from_vkey(world.ledger.vkey)])
    verify_submission(verified.entry, summary, salt)
    assert verified.entry.index == world.rec.index

    # ... and with the command a home doctor would run.
    (tmp_path / "ips.json").write_bytes(summary)
    (tmp_path / "ips.tlog-proof").write_text(receipt)
    run = subprocess.run(
        [sys.executable, "-m", "exchange.cli", "verify", str(tmp_path / "ips.tlog-proof"),
         "--key", world.ledger.vkey, "--bundle", str(tmp_path / "ips.json"),
         "--salt", salt_b64],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_ips_is_the_patients_whole_record_in_two_languages(world: World) -> None:
    doc = json.loads(world.ips)
    composition = doc["entry"][0]["resource"]
    div = composition["section"][0]["text"]["div"]
    assert "急性前壁心肌梗死" in div  # the Chinese original
    assert 'class="translation"' in div and 'lang="ko"' in div  # the patient's language
    sources = {e["resource"]["resourceType"] for e in doc["entry"]}
    assert {"MedicationStatement", "Condition"} <= sources or "MedicationRequest" in sources


def test_a_receipt_for_other_bytes_is_refused(world: World) -> None:
    receipt = world.ledger.log.receipt(world.rec.index)
    with pytest.raises(ShlError) as e:
        shl_files.link_files(world.ips + b" ", salt=world.rec.salt, receipt=receipt)
    assert e.value.field == "receipt"


def test_long_files_go_by_location(world: World) -> None:
    state = world.link()
    key = encode(state.payload(BASE))
    key_text = read_link(key)["key"]
    answer = world.manifest(state.id, {"recipient": "Dr. Lee", "embeddedLengthMax": 4000})
    assert answer.status == 200 and isinstance(answer.body, dict)
    summary, prov = answer.body["files"]
    assert "embedded" in prov and len(prov["embedded"]) <= 4000
    url = summary["location"]
    assert url.startswith(f"{BASE}/v1/shl/{state.id}/files/")
    ticket = url.rsplit("/", 1)[1]

    got = answer_location(state, ticket, now=NOW, files=world.files, locations=world.locations)
    assert got.status == 200 and got.media_type == "application/jose"
    assert isinstance(got.body, str) and open_jwe(key_text, got.body)[1] == world.ips
    assert got.access is not None and got.access.recipient == "Dr. Lee"

    other = world.link()
    late = NOW + timedelta(minutes=11)
    for link, ticket_, when in [(other, ticket, NOW), (state, ticket, late), (state, "AAAA", NOW)]:
        refused = answer_location(
            link, ticket_, now=when, files=world.files, locations=world.locations
        )
        assert refused.status == 404
    revoked = dataclasses.replace(state, revoked_at=NOW)
    gone = answer_location(revoked, ticket, now=NOW, files=world.files, locations=world.locations)
    assert gone.status == 404 and gone.access is not None and "revoked" in gone.access.detail


def test_a_ticket_cannot_be_made_with_the_links_own_key(world: World) -> None:
    state = world.link(passcode="2468")
    forged = Locations(state.key, BASE).issue(state.id, 0, "Mallory", NOW).rsplit("/", 1)[1]
    got = answer_location(state, forged, now=NOW, files=world.files, locations=world.locations)
    assert got.status == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "recipient"),
        ({"recipient": ""}, "recipient"),
        ({"recipient": 7}, "recipient"),
        ({"recipient": "Dr. Lee", "embeddedLengthMax": -1}, "embeddedLengthMax"),
        ({"recipient": "Dr. Lee", "embeddedLengthMax": True}, "embeddedLengthMax"),
        ({"recipient": "Dr. Lee", "passcode": 1234}, "passcode"),
        ([], "body"),
    ],
)
def test_bad_manifest_requests_are_400(world: World, body: object, field: str) -> None:
    state = world.link()
    answer = world.manifest(state.id, body)
    assert answer.status == 400 and isinstance(answer.body, dict)
    assert answer.body["issue"][0]["expression"] == [field]


def test_expired_and_revoked_links_are_404_and_accounted(world: World) -> None:
    state = world.link()
    expired = world.manifest(state.id, {"recipient": "Dr. Kim"}, now=NOW + timedelta(days=30))
    world.store[state.id] = dataclasses.replace(state, revoked_at=NOW)
    revoked = world.manifest(state.id, {"recipient": "Dr. Kim"})
    unknown = world.manifest("A" * 43, {"recipient": "Dr. Kim"})
    for answer, why in [(expired, "expired"), (revoked, "revoked")]:
        assert answer.status == 404 and answer.body == unknown.body
        assert answer.access is not None and answer.access.recipient == "Dr. Kim"
        assert answer.access.action == "denied" and why in answer.access.detail
    assert unknown.status == 404 and unknown.access is None
    live = world.manifest(
        world.link().id, {"recipient": "Dr. Kim"}, now=NOW + timedelta(days=30, seconds=-1)
    )
    assert live.status == 200


def test_wrong_passcodes_count_down_then_the_link_is_dead(world: World) -> None:
    state = world.link(passcode="7394")
    assert state.flag == "P" and "7394" not in (state.passcode_hash or "")
    assert read_link(encode(state.payload(BASE)))["flag"] == "P"
    no_passcode = world.manifest(state.id, {"recipient": "Dr. Park"})
    assert no_passcode.status == 401 and no_passcode.attempts is None  # counts nothing
    assert no_passcode.body == {"remainingAttempts": PASSCODE_ATTEMPTS}
    for left in range(PASSCODE_ATTEMPTS - 1, -1, -1):
        answer = world.manifest(state.id, {"recipient": "Dr. Park", "passcode": "0000"})
        assert answer.status == 401 and answer.body == {"remainingAttempts": left}
        assert answer.access is not None and answer.access.action == "denied"
    dead = world.manifest(state.id, {"recipient": "Dr. Park", "passcode": "7394"})
    assert dead.status == 404 and dead.access is not None
    assert "disabled" in dead.access.detail


def test_the_right_passcode_opens_the_link(world: World) -> None:
    state = world.link(passcode="7394")
    wrong = world.manifest(state.id, {"recipient": "Dr. Park", "passcode": "7395"})
    assert wrong.attempts is not None
    assert (wrong.attempts.expected, wrong.attempts.remaining) == (5, 4)
    right = world.manifest(state.id, {"recipient": "Dr. Park", "passcode": "7394"})
    assert right.status == 200 and right.attempts is None
    assert world.store[state.id].remaining_attempts == 4  # a success does not restore it


def test_direct_file_link(world: World) -> None:
    state = world.link(direct=True)
    payload = read_link(encode(state.payload(BASE)))
    assert payload["flag"] == "U" and payload["url"] == f"{BASE}/v1/shl/{state.id}/file"

    def file() -> shl_files.LinkFile:
        receipt = world.ledger.log.receipt(world.rec.index)
        return direct_file(world.ips, salt=world.rec.salt, receipt=receipt)

    assert world.manifest(state.id, {"recipient": "Dr. Lee"}).status == 404  # no manifest
    assert answer_direct(state, None, now=NOW, file=file).status == 400
    got = answer_direct(state, "Dr. Lee", now=NOW, file=file)
    assert got.status == 200 and isinstance(got.body, str)
    assert got.access is not None and got.access.recipient == "Dr. Lee"
    collection = Bundle.model_validate_json(open_jwe(payload["key"], got.body)[1])
    assert collection.type == "collection"
    binary, prov = (e.resource for e in collection.entry)
    assert binary.data == world.ips
    assert prov.target[0].reference == f"Binary/{binary.id}"
    receipt = prov.signature[0].data.decode()
    entry = verify_receipt(receipt, [Verifier.from_vkey(world.ledger.vkey)]).entry
    verify_submission(entry, world.ips, prov.extension[0].valueBase64Binary)

    later = answer_direct(state, "Dr. Lee", now=NOW + timedelta(days=31), file=file)
    assert later.status == 404
    manifest_link = world.link()
    assert answer_direct(manifest_link, "Dr. Lee", now=NOW, file=file).status == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"expires": (NOW + timedelta(days=366)).isoformat()}, "expires"),
        ({"expires": (NOW - timedelta(seconds=1)).isoformat()}, "expires"),
        ({"expires": "2026-12-24T10:00:00"}, "expires"),
        ({"expires": "2026-12-24"}, "expires"),
        ({"expires": "soon"}, "expires"),
        ({"patient": "KR-0001"}, "patient"),
        ({"label": "x" * 81}, "label"),
        ({"passcode": ""}, "passcode"),
        ({"flag": "L"}, "flag"),
    ],
)
def test_bad_link_requests_are_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    body = {"patient": PATIENT, "expires": "2026-12-24T10:00:00+08:00", **change}
    with pytest.raises(ShlError) as e:
        parse_request(body, now=NOW)
    assert e.value.field == field


def test_a_direct_link_cannot_have_a_passcode(world: World) -> None:
    with pytest.raises(ShlError) as e:
        world.link(direct=True, passcode="1234")
    assert e.value.field == "passcode"


# --- the QR code ----------------------------------------------------------------------------


def test_qr_decodes_to_the_viewer_url(world: World, tmp_path: Path) -> None:
    zbarimg = shutil.which("zbarimg")
    if zbarimg is None:
        pytest.skip("no zbarimg to decode the QR code (Debian: apt-get install zbar-tools)")
    state = world.link(passcode="7394", label="Discharge summary, Boao")
    url = viewer_url(BASE, state.payload(BASE))
    png = qr_png(url)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "qr.png").write_bytes(png)
    run = subprocess.run(
        [zbarimg, "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", str(tmp_path / "qr.png")],
        capture_output=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.decode().rstrip("\n") == url


# --- the viewer opens what the library makes ------------------------------------------------


@pytest.mark.parametrize("direct", [False, True], ids=["manifest", "direct-file"])
def test_the_viewer_verifies_the_librarys_files(page: Any, world: World, direct: bool) -> None:
    """Files built and encrypted by exchange/shl, served by the test's sharing server, are
    decrypted and verified by the viewer page in Chromium."""
    receipt = world.ledger.log.receipt(world.rec.index)
    state = world.link(direct=direct)
    if direct:
        made = [direct_file(world.ips, salt=world.rec.salt, receipt=receipt)]
    else:
        made = shl_files.link_files(world.ips, salt=world.rec.salt, receipt=receipt)
    tokens = {i: encrypt(state.key, f.data, cty=f.content_type) for i, f in enumerate(made)}
    server = ShlServer(render_viewer([world.ledger.vkey]))
    try:
        link = server.share(
            [(f.content_type, f.data) for f in made],
            key=state.key,
            jwes=tokens,
            direct=direct,
            embedded=range(len(made)),
        )
        page.goto(server.viewer_url(link, recipient="Dr. Lee, Seoul"))
        status, text = verdict(page)
        assert status == "verified", text
        assert page.locator("#patient-name").inner_text() == PATIENT_NAME
    finally:
        server.close()
