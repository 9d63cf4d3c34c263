"""The SHL viewer in headless Chromium: real links, a real ledger, a real sharing server.

Each test opens the page as a recipient would, from a link to files encrypted with a JOSE
library, and reads the verdict from <output id="verification" data-status=...>.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fhir.resources.R4B.provenance import Provenance

from exchange.shl.viewer import render_viewer
from ledger.note import Signer, sign
from ledger.note import split as split_note
from ledger.receipt import format_receipt, parse_receipt
from tests.shl.shl_helpers import (
    ORIGIN,
    PATIENT_NAME,
    Ledger,
    Recorded,
    ShlServer,
    b64,
    fhir_json,
    ips_document,
    now_epoch,
    provenance,
)

FHIR = "application/fhir+json"


@dataclass
class World:
    ledger: Ledger
    ips: bytes
    doc_id: str
    rec: Recorded
    server: ShlServer

    def files(
        self, ips: bytes | None = None, rec: Recorded | None = None, receipt: str | None = None
    ) -> list[tuple[str, bytes]]:
        """The two files of a link: the summary, and the Provenance with its receipt."""
        prov = provenance(f"Bundle/{self.doc_id}", rec or self.rec, receipt)
        return [(FHIR, ips if ips is not None else self.ips), (FHIR, fhir_json(prov))]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    ledger = Ledger(tmp_path_factory.mktemp("shl") / "ledger.db")
    ips = ips_document()
    rec = ledger.record(ips)
    server = ShlServer(render_viewer([ledger.vkey]))
    yield World(ledger, ips, json.loads(ips)["id"], rec, server)
    server.close()
    ledger.close()


def verdict(page: Any) -> tuple[str, str]:
    page.wait_for_selector("#verification[data-status]", timeout=15_000)
    out = page.locator("#verification")
    return out.get_attribute("data-status"), out.inner_text()


def posts(server: ShlServer, shlink: str) -> list[Any]:
    path = f"/shl/m/{server.link_id(shlink)}"
    return [s.body for s in server.seen if s.method == "POST" and s.path == path]


# --- what a recipient sees -------------------------------------------------------------------


def test_valid_link_shows_the_patient_and_verified(page: Any, world: World) -> None:
    Provenance.model_validate(json.loads(world.files()[1][1]))  # a conformant R4 Provenance
    link = world.server.share(world.files(), deflate=[0], label="Discharge summary, Boao")
    page.goto(world.server.viewer_url(link, recipient="Dr. Lee, Seoul"))

    status, text = verdict(page)
    assert status == "verified", text
    assert f"recorded in the ledger {ORIGIN}" in text and f"entry {world.rec.index}." in text
    assert page.locator("#patient-name").inner_text() == PATIENT_NAME
    assert page.locator("#open-form").is_hidden()  # the recipient came from the query
    problems = page.locator(".ips-section").first
    assert "急性前壁心肌梗死" in problems.locator(".original").inner_text()
    translated = problems.locator(".translation[lang=en]").inner_text()
    assert "Acute transmural myocardial infarction of anterior wall" in translated
    assert posts(world.server, link) == [{"recipient": "Dr. Lee, Seoul"}]
    assert any(s.path.startswith("/shl/file/") for s in world.server.seen)  # by location
    timings = page.evaluate("performance.getEntriesByType('measure').map(m => m.name)")
    assert {"medledger:decrypt", "medledger:verify", "medledger:render"} <= set(timings)


def test_translation_language_can_be_changed(page: Any, world: World) -> None:
    link = world.server.share(world.files())
    page.goto(world.server.viewer_url(link, recipient="Dr. Lee"))
    assert verdict(page)[0] == "verified"
    options = page.locator("#language option")
    assert options.all_inner_texts() == ["한국어 (ko)", "English (en)"]
    page.select_option("#language", "ko")
    section = page.locator(".ips-section").first
    assert "번역(ko)" in section.locator(".translation[lang=ko]").inner_text()
    assert page.locator("#verification").get_attribute("data-status") == "verified"


def test_tampered_summary_fails(page: Any, world: World) -> None:
    tampered = world.ips.replace(b'"birthDate": "1962-04-18"', b'"birthDate": "1962-04-19"')
    assert len(tampered) == len(world.ips)
    assert sum(a != b for a, b in zip(tampered, world.ips, strict=True)) == 1
    # Re-encrypted with the link's key: decryption succeeds, only the ledger can tell.
    link = world.server.share(world.files(ips=tampered))
    page.goto(world.server.viewer_url(link, recipient="Dr. Lee"))

    status, text = verdict(page)
    assert status == "failed"
    assert "does not match what the hospital recorded" in text and "summary content" in text
    assert page.locator("#summary").get_attribute("class") == "unverified"
    assert "1962-04-19" in page.locator("#summary").inner_text()  # shown, marked unverified


def _flip_signature(receipt: str) -> str:
    head, sep, line = receipt.rstrip("\n").rpartition("\n— ")
    name, _, sig = line.partition(" ")
    raw = bytearray(base64.b64decode(sig))
    raw[-1] ^= 0x01
    return f"{head}{sep}{name} {b64(bytes(raw))}\n"


def _other_key(receipt: str) -> str:
    r = parse_receipt(receipt)
    text, _ = split_note(r.checkpoint)
    impostor = Signer(ORIGIN, Ed25519PrivateKey.generate())
    return format_receipt(r.__class__(r.index, r.proof, sign(text, [impostor]), r.extra))


def _altered_proof(receipt: str) -> str:
    r = parse_receipt(receipt)
    proof = list(r.proof)
    proof[0] = bytes([proof[0][0] ^ 0x80]) + proof[0][1:]
    return format_receipt(r.__class__(r.index, tuple(proof), r.checkpoint, r.extra))


@pytest.mark.parametrize(
    ("alter", "check"),
    [
        (_flip_signature, "ledger signature"),
        (_other_key, "ledger signature"),
        (_altered_proof, "inclusion in the ledger"),
    ],
    ids=["forged-signature", "another-key", "altered-proof"],
)
def test_tampered_receipt_fails(page: Any, world: World, alter: Any, check: str) -> None:
    link = world.server.share(world.files(receipt=alter(world.rec.receipt)))
    page.goto(world.server.viewer_url(link, recipient="Dr. Lee"))
    status, text = verdict(page)
    assert status == "failed"
    assert f"Check that failed: 未通过的检查： {check}" in text, text


def test_a_file_altered_after_encryption_fails(page: Any, world: World) -> None:
    files = world.files()
    link = world.server.share(files)
    shared = world.server.links[world.server.link_id(link)]
    ct, token = shared.files[0]
    parts = token.split(".")
    body = bytearray(base64.urlsafe_b64decode(parts[3] + "=="))
    body[10] ^= 0x01
    parts[3] = base64.urlsafe_b64encode(bytes(body)).rstrip(b"=").decode()
    shared.files[0] = (ct, ".".join(parts))
    page.goto(world.server.viewer_url(link, recipient="Dr. Lee"))
    status, text = verdict(page)
    assert status == "failed" and "altered or damaged" in text


def test_a_file_that_is_not_json_fails(page: Any, world: World) -> None:
    link = world.server.share([(FHIR, b"<Bundle/>"), *world.files()[1:]])
    page.goto(world.server.viewer_url(link, recipient="Dr. Lee"))
    status, text = verdict(page)
    assert status == "failed" and "cannot be read as FHIR" in text


def test_summary_without_a_proof_fails(page: Any, world: World) -> None:
    link = world.server.share(world.files()[:1], embedded=[0])
    page.goto(world.server.viewer_url(link, recipient="Dr. Lee"))
    status, text = verdict(page)
    assert status == "failed" and "no proof of recording" in text
    assert page.locator("#patient-name").inner_text() == PATIENT_NAME


def test_passcode_is_asked_and_a_wrong_one_shows_remaining_attempts(
    page: Any, world: World
) -> None:
    link = world.server.share(world.files(), passcode="7394", long_term=True)
    page.goto(world.server.viewer_url(link))  # no recipient: the page asks
    page.wait_for_selector("#open-form:not([hidden])")
    assert page.locator("#passcode").is_visible()
    assert "Long-term link" in page.locator("#link").inner_text()
    page.fill("#recipient", "Dr. Park, Busan")
    page.fill("#passcode", "0000")
    page.click("#open-form button[type=submit]")
    page.wait_for_selector("#status[data-kind=warning]")
    assert "Wrong passcode. 2 attempts remaining." in page.locator("#status").inner_text()
    assert page.locator("#verification").get_attribute("data-status") is None

    page.fill("#passcode", "7394")
    page.click("#open-form button[type=submit]")
    assert verdict(page)[0] == "verified"
    assert posts(world.server, link) == [
        {"recipient": "Dr. Park, Busan", "passcode": "0000"},
        {"recipient": "Dr. Park, Busan", "passcode": "7394"},
    ]


def test_last_wrong_passcode_disables_the_link(page: Any, world: World) -> None:
    link = world.server.share(world.files(), passcode="7394")
    world.server.links[world.server.link_id(link)].attempts = 1
    page.goto(world.server.viewer_url(link, recipient="Dr. Park"))
    page.wait_for_selector("#open-form:not([hidden])")
    page.fill("#passcode", "1111")
    page.click("#open-form button[type=submit]")
    page.wait_for_selector("#status[data-kind=error]")
    assert "no longer active" in page.locator("#status").inner_text()
    assert page.locator("#toolbar").is_hidden()  # nothing to print or translate


def test_expired_link_says_so_and_fetches_nothing(page: Any, world: World) -> None:
    link = world.server.share(world.files(), exp=now_epoch() - 3600, label="Old summary")
    page.goto(world.server.viewer_url(link, recipient="Dr. Lee"))
    page.wait_for_selector("#status[data-kind=error]")
    assert "This link has expired." in page.locator("#status").inner_text()
    assert "Old summary" in page.locator("#link").inner_text()
    assert posts(world.server, link) == []
    assert page.locator("#verification").get_attribute("data-status") is None


def test_revoked_link_says_it_is_no_longer_active(page: Any, world: World) -> None:
    link = world.server.share(world.files())
    world.server.links[world.server.link_id(link)].active = False
    page.goto(world.server.viewer_url(link, recipient="Dr. Lee"))
    page.wait_for_selector("#status[data-kind=error]")
    assert "no longer active" in page.locator("#status").inner_text()


def test_direct_file_link(page: Any, world: World) -> None:
    """Flag U: one file, fetched by GET with ?recipient=; a collection Bundle carries the
    summary's exact bytes (Binary) and the Provenance targeting it."""
    collection = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "urn:uuid:0f0e0d0c-0b0a-4908-8706-050403020100",
                "resource": {
                    "resourceType": "Binary",
                    "id": "ips",
                    "contentType": FHIR,
                    "data": b64(world.ips),
                },
            },
            {"resource": provenance("Binary/ips", world.rec)},
        ],
    }
    link = world.server.share([(FHIR, fhir_json(collection))], direct=True)
    page.goto(world.server.viewer_url(link, recipient="Dr. Lee"))
    status, text = verdict(page)
    assert status == "verified", text
    assert page.locator("#patient-name").inner_text() == PATIENT_NAME
    direct = [s for s in world.server.seen if s.path == f"/shl/u/{world.server.link_id(link)}"]
    assert [s.query for s in direct] == [{"recipient": ["Dr. Lee"]}]
    assert posts(world.server, link) == []


def test_pasted_viewer_link_opens(page: Any, world: World) -> None:
    link = world.server.share(world.files())
    page.goto(f"{world.server.base}/shl/view?recipient=Dr.%20Lee")
    page.wait_for_selector("#paste-form:not([hidden])")
    page.fill("#link-text", f"https://viewer.example.org/view#{link}")
    page.click("#paste-form button[type=submit]")
    assert verdict(page)[0] == "verified"


def test_narrative_markup_is_made_safe(page: Any, world: World, tmp_path: Path) -> None:
    """Narrative is shown as text and allowed XHTML only: no script, handler, link, image,
    style or id survives, even in a summary the ledger verifies."""
    doc = json.loads(world.ips)
    section = doc["entry"][0]["resource"]["section"][0]
    section["text"]["div"] = (
        '<div xmlns="http://www.w3.org/1999/xhtml" lang="zh-CN">'
        '<p style="color:red" onclick="window.__injected=1" id="verification">问题 '
        '<a href="javascript:window.__injected=2">link</a></p>'
        "<script>window.__injected=3</script>"
        '<img src="http://127.0.0.1:9/x.png" onerror="window.__injected=4" alt="scan"/>'
        "<svg><script>window.__injected=5</script></svg>"
        '<table><tr><td colspan="2" onmouseover="window.__injected=6">cell</td></tr></table>'
        '<div class="translation" lang="en"><p>Problems <b>bold</b></p></div></div>'
    )
    data = json.dumps(doc, ensure_ascii=False, indent=2).encode()
    ledger = Ledger(tmp_path / "ledger.db")
    try:
        rec = ledger.record(data)
        server = ShlServer(render_viewer([ledger.vkey]))
        try:
            prov = provenance(f"Bundle/{doc['id']}", rec)
            link = server.share([(FHIR, data), (FHIR, fhir_json(prov))])
            page.goto(server.viewer_url(link, recipient="Dr. Lee"))
            assert verdict(page)[0] == "verified"
            first = page.locator(".ips-section").first
            lines = first.locator(".original").inner_text().split("\n")
            assert [ln.strip() for ln in lines if ln.strip()][1:] == ["问题 link", "[scan]", "cell"]
            assert "Problems bold" in first.locator(".translation").inner_text()
            assert page.evaluate("window.__injected") is None
            assert page.locator("[id=verification]").count() == 1
            unsafe = (
                "#summary script, #summary img, #summary svg, #summary a[href], "
                "#summary [style], #summary [onclick], #summary [onmouseover]"
            )
            assert page.locator(unsafe).count() == 0
            assert first.locator("td[colspan='2']").count() == 1  # allowed attributes stay
        finally:
            server.close()
    finally:
        ledger.close()


# --- witnesses -------------------------------------------------------------------------------


def _witness(name: str) -> tuple[str, Ed25519PrivateKey]:
    """A cosigner key (C2SP tlog-cosignature, Ed25519, type 0x04) and its vkey."""
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    kid = hashlib.sha256(name.encode() + b"\n\x04" + pub).digest()[:4]
    return f"{name}+{kid.hex()}+" + b64(b"\x04" + pub), key


def _cosign(receipt: str, witnesses: list[tuple[str, Ed25519PrivateKey]], when: int) -> str:
    """Adds cosignature/v1 lines to the receipt's checkpoint: Ed25519 over
    "cosignature/v1\\ntime <t>\\n" + the checkpoint text, with the timestamp before it."""
    r = parse_receipt(receipt)
    text, _ = split_note(r.checkpoint)
    lines = []
    for vkey, key in witnesses:
        name, kid_hex, _ = vkey.split("+", 2)
        sig = key.sign(f"cosignature/v1\ntime {when}\n{text}".encode())
        lines.append(f"— {name} {b64(bytes.fromhex(kid_hex) + when.to_bytes(8, 'big') + sig)}\n")
    return format_receipt(r.__class__(r.index, r.proof, r.checkpoint + "".join(lines), r.extra))


@pytest.fixture(scope="module")
def witnessed(world: World) -> Iterator[tuple[ShlServer, list[tuple[str, Ed25519PrivateKey]]]]:
    ws = [_witness(f"witness{i}.test.example") for i in (1, 2, 3)]
    policy = "\n".join(
        [
            "# two of three witnesses must have seen every checkpoint",
            f"log {world.ledger.vkey}",
            *(f"witness w{i} {vkey}" for i, (vkey, _) in enumerate(ws, 1)),
            "group quorum-group 2 w1 w2 w3",
            "quorum quorum-group",
            "",
        ]
    )
    server = ShlServer(render_viewer([world.ledger.vkey], policy))
    yield server, ws
    server.close()


@pytest.mark.parametrize(
    ("cosigners", "status"),
    [((0, 2), "verified"), ((1,), "failed"), ((), "failed")],
    ids=["two-of-three", "one-of-three", "none"],
)
def test_witness_quorum(
    page: Any, world: World, witnessed: Any, cosigners: tuple[int, ...], status: str
) -> None:
    server, ws = witnessed
    receipt = _cosign(world.rec.receipt, [ws[i] for i in cosigners], now_epoch())
    link = server.share(world.files(receipt=receipt))
    page.goto(server.viewer_url(link, recipient="Dr. Lee"))
    got, text = verdict(page)
    assert got == status, text
    if status == "verified":
        assert "Confirmed by 2 independent witness(es)." in text
    else:
        assert "not confirmed by enough independent witnesses" in text
        assert "witness cosignatures" in text


def test_a_bad_cosignature_by_a_known_witness_fails(
    page: Any, world: World, witnessed: Any
) -> None:
    server, ws = witnessed
    impostor = (ws[2][0], Ed25519PrivateKey.generate())  # w3's name and id, another key
    receipt = _cosign(world.rec.receipt, [ws[0], ws[1], impostor], now_epoch())
    link = server.share(world.files(receipt=receipt))
    page.goto(server.viewer_url(link, recipient="Dr. Lee"))
    got, text = verdict(page)
    assert got == "failed" and "the cosignature by witness w3 does not verify" in text


# --- older browsers --------------------------------------------------------------------------


def test_without_native_base64(page: Any, world: World) -> None:
    """Browsers before Uint8Array.fromBase64 take the atob path to the same verdict."""
    page.add_init_script("delete Uint8Array.fromBase64; delete Uint8Array.prototype.toBase64;")
    link = world.server.share(world.files(), deflate=[0])
    page.goto(world.server.viewer_url(link, recipient="Dr. Lee"))
    assert page.evaluate("typeof Uint8Array.fromBase64") == "undefined"
    assert verdict(page)[0] == "verified"


def test_browser_without_ed25519_is_told_so(page: Any, world: World) -> None:
    """A browser whose WebCrypto lacks Ed25519 (as before Chrome 137) cannot verify: the
    verdict says so instead of calling the summary altered."""
    page.add_init_script("""{
        const importKey = crypto.subtle.importKey.bind(crypto.subtle);
        crypto.subtle.importKey = (format, data, alg, ...rest) =>
            (alg && (alg === "Ed25519" || alg.name === "Ed25519"))
                ? Promise.reject(new DOMException("Unrecognized name", "NotSupportedError"))
                : importKey(format, data, alg, ...rest);
    }""")
    link = world.server.share(world.files())
    page.goto(world.server.viewer_url(link, recipient="Dr. Lee"))
    status, text = verdict(page)
    assert status == "failed"
    assert "this browser cannot check the ledger's signatures (Ed25519)" in text
