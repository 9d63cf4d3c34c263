"""Case packages: a package of a real log verifies offline, says what each member proves, and
fails naming the member that any changed byte is in."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import zipfile
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.cases import (
    CaseBuildError,
    CaseError,
    CaseFailed,
    CaseMalformed,
    Recorded,
    build_package,
    verify_package,
)
from exchange.cases.archive import write_zip
from ledger.policy import parse_policy

from .case_helpers import World, policy_text


def members_of(package: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(package)) as zf:  # any ZIP tool reads a package
        return {i.filename: zf.read(i) for i in zf.infolist()}


def vkey(world: World) -> list[str]:
    return [world.signer.verifier.vkey()]


def test_package_verifies_and_says_what_each_member_proves(world: World, package: bytes) -> None:
    report = verify_package(package, vkey(world))
    names = set(members_of(package))
    assert {f.member for f in report.findings} == names
    assert (report.checkpoint_size, report.latest_size) == (9, 14)
    assert {n for n in names if n.startswith("bundles/")} == {
        f"bundles/{b}.{ext}"
        for b in ("b-1_v1", "b-2_v1", "b-3_v1", "b-1_v2")
        for ext in ("json", "salt", "tlog-proof")
    }
    assert {n for n in names if re.fullmatch(r"registry/[\d-]+\.json", n)} == {
        "registry/2026-03-02.json", "registry/2026-03-03.json",
        "registry/2026-03-10.json", "registry/2026-03-11.json",
    }  # fmt: skip
    lines = dict(line.split(": ", 1) for line in report.lines())
    assert "consent then: b-1 version 1 (entry 1)" in lines["bundles/b-2_v1.json"]
    assert "licence PDY-469000-0001 valid" in lines["bundles/b-2_v1.json"]
    assert "(registry entry 5)" in lines["bundles/b-3_v1.json"]  # the renewal, as of that day
    assert "for purpose HPAYMT" in lines["accounting/4.json"]
    # the exact submitted bytes, decimals and all
    assert b'"value": 1200.00' in members_of(package)["bundles/b-3_v1.json"]


def test_same_inputs_same_bytes_and_a_path_verifies(world: World, package: bytes) -> None:
    assert build_package(world.case, world.log) == package
    path = world.path / "case.zip"
    path.write_bytes(package)
    verify_package(path, vkey(world))


def test_policy_met_and_not_met(world: World, package: bytes) -> None:
    report = verify_package(package, vkey(world), parse_policy(policy_text(world)))
    assert report.witnesses == ("W",)
    with pytest.raises(CaseFailed) as e:
        verify_package(package, vkey(world), parse_policy(policy_text(world, with_witness=False)))
    assert e.value.member == "log/latest-checkpoint" and e.value.exit_code == 4
    assert "quorum" in e.value.reason


def test_another_logs_key_fails_at_the_checkpoint(world: World, package: bytes) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ledger.note import Signer

    other = Signer(world.signer.name, Ed25519PrivateKey.generate()).verifier.vkey()
    with pytest.raises(CaseFailed) as e:
        verify_package(package, [other])
    assert e.value.member == "log/checkpoint"
    with pytest.raises(CaseMalformed):
        verify_package(package, ["not a key"])


# --- one changed byte ------------------------------------------------------------------------


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_changed_byte_in_any_member_names_it(
    world: World, package: bytes, data: st.DataObject
) -> None:
    members = members_of(package)
    name = data.draw(st.sampled_from(sorted(members)), label="member")
    body = bytearray(members[name])
    pos = data.draw(st.integers(0, len(body) - 1), label="offset")
    body[pos] ^= data.draw(st.integers(1, 255), label="xor")
    members[name] = bytes(body)
    with pytest.raises(CaseError) as e:
        verify_package(write_zip(members), vkey(world))
    assert isinstance(e.value, CaseMalformed) or (
        isinstance(e.value, CaseFailed) and e.value.member == name
    ), (name, e.value)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_changed_byte_anywhere_in_the_zip_fails(
    world: World, package: bytes, data: st.DataObject
) -> None:
    pos = data.draw(st.integers(0, len(package) - 1), label="offset")
    changed = bytearray(package)
    changed[pos] ^= data.draw(st.integers(1, 255), label="xor")
    with pytest.raises(CaseError) as e:
        verify_package(bytes(changed), vkey(world))
    # a byte inside a member's data is blamed on that member
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        for info in zf.infolist():
            start = info.header_offset + 30 + len(info.filename)
            if start <= pos < start + info.file_size:
                assert isinstance(e.value, CaseFailed) and e.value.member == info.filename
                return
    assert e.value.exit_code in (3, 4)


# --- tampering -------------------------------------------------------------------------------


def test_tampered_manifest(world: World, package: bytes) -> None:
    members = members_of(package)
    manifest = members["manifest.json"]
    members["manifest.json"] = manifest.replace(b"2026-03-31", b"2026-04-30")  # the period
    with pytest.raises(CaseFailed) as e:
        verify_package(write_zip(members), vkey(world))
    assert e.value.member == "manifest.json" and "digest" in e.value.reason


def test_swapped_bundle_with_a_consistent_manifest_fails_its_commitment(
    world: World, package: bytes
) -> None:
    """A forger who rewrites a Bundle and the manifest's hash and digest is still caught by
    the commitment the log signed."""
    from exchange.cases.layout import render_json, sha256_hex

    members = members_of(package)
    name = "bundles/b-2_v1.json"
    members[name] = members[name].replace("血压".encode(), "正常".encode())
    manifest = json.loads(members["manifest.json"])
    for f in manifest["files"]:
        if f["name"] == name:
            f["sha256"] = sha256_hex(members[name])
    del manifest["digest"]
    manifest["digest"] = sha256_hex(render_json(manifest))
    members["manifest.json"] = render_json(manifest)
    with pytest.raises(CaseFailed) as e:
        verify_package(write_zip(members), vkey(world))
    assert e.value.member == name and "commit" in e.value.reason


def test_unknown_member(world: World, package: bytes) -> None:
    members = members_of(package)
    members["bundles/extra_v1.json"] = b"{}"
    with pytest.raises(CaseFailed) as e:
        verify_package(write_zip(members), vkey(world))
    assert e.value.member == "bundles/extra_v1.json" and "not listed" in e.value.reason


@pytest.mark.parametrize(
    "name", ["../evil.json", "/etc/passwd", "bundles/../../x_v1.json", "bundles\\x_v1.json", "a"]
)
def test_names_outside_the_layout_are_malformed(world: World, package: bytes, name: str) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for member, body in members_of(package).items():
            zf.writestr(member, body)
        zf.writestr(name, b"x")
    with pytest.raises(CaseMalformed):
        verify_package(buf.getvalue(), vkey(world))


def test_hostile_zips_are_malformed(world: World, package: bytes) -> None:
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", b"\0" * (50 << 20))  # 50 MiB in about 50 KiB
    dup = io.BytesIO()
    with zipfile.ZipFile(dup, "w") as zf:
        zf.writestr("manifest.json", b"{}")
        with pytest.warns(UserWarning):
            zf.writestr("manifest.json", b"{}")
    for data in (bomb.getvalue(), dup.getvalue(), b"", b"PK\3\4" + b"\xff" * 40, package[:-1]):
        with pytest.raises(CaseMalformed):
            verify_package(data, vkey(world))
    # a stored ZIP written by another tool (other dates) is not the canonical layout either
    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w") as zf:
        for member, body in sorted(members_of(package).items()):
            zf.writestr(member, body)
    with pytest.raises(CaseMalformed):
        verify_package(plain.getvalue(), vkey(world))


def test_builder_refuses_bytes_the_log_did_not_commit_to(world: World) -> None:
    from dataclasses import replace

    doc = world.case.documents[0]
    bad = replace(world.case, documents=[replace(doc, data=doc.data + b" ")])
    with pytest.raises(CaseBuildError, match="does not commit"):
        build_package(bad, world.log)
    beyond = replace(world.case, disclosures=[Recorded(12, b"s" * 32, b"{}")])
    with pytest.raises(CaseBuildError, match="not in the checkpoint"):
        build_package(beyond, world.log)


def test_a_package_stays_verifiable_without_the_log(world: World, package: bytes) -> None:
    """After an erasure the log can no longer give the Bundles, but a package made before
    holds its own bytes: it is checked with the key alone."""
    members = members_of(package)
    assert "Patient" in members["bundles/b-2_v1.json"].decode()
    verify_package(package, vkey(world))


# --- index.html ------------------------------------------------------------------------------


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_index_is_bilingual_static_and_escaped(package: bytes) -> None:
    members = members_of(package)
    page = _Page()
    page.feed(members["index.html"].decode())
    text = "".join(page.text)
    assert "医疗纠纷案卷材料" in text and "Case package for a medical dispute" in text
    assert "Boao Lecheng <International> Hospital" not in members["index.html"].decode()
    assert all(tag not in ("script", "img", "iframe", "link") for tag, _ in page.tags)
    hrefs = [a["href"] for tag, a in page.tags if tag == "a"]
    assert hrefs and all(h in members for h in hrefs)  # links stay inside the package


# --- an independent check of the receipts (hashlib and cryptography only) -------------------


def _root_from_path(index: int, size: int, leaf: bytes, path: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2, written out again."""
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise AssertionError("path too long")
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\1" + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = hashlib.sha256(b"\1" + r + p).digest()
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0
    return r


def test_receipts_verify_with_an_independent_rfc6962_check(world: World, package: bytes) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    members = members_of(package)
    vk = world.signer.verifier.vkey()
    name, _, key64 = vk.split("+", 2)
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key64)[1:])
    checkpoint = members["log/checkpoint"].decode()
    body, sigs = checkpoint.split("\n\n")
    origin, size_s, root64 = body.split("\n")
    raw = base64.b64decode(sigs.removeprefix(f"\u2014 {name} ").strip())
    public.verify(raw[4:], (body + "\n").encode())
    size, root = int(size_s), base64.b64decode(root64)
    receipts = [n for n in members if n.endswith(".tlog-proof")]
    assert len(receipts) == 4 + 2 + 2
    for n in receipts:
        head, _, note = members[n].decode().partition("\n\n")
        assert note == checkpoint
        lines = head.split("\n")
        assert lines[0] == "c2sp.org/tlog-proof@v1"
        extra = base64.b64decode(lines[1].removeprefix("extra "))
        index = int(lines[2].removeprefix("index "))
        path = [base64.b64decode(h) for h in lines[3:]]
        leaf = hashlib.sha256(b"\0" + extra).digest()
        assert _root_from_path(index, size, leaf, path) == root, n
        entry = json.loads(extra)
        assert entry["index"] == index
        base = n.removesuffix(".tlog-proof")
        salt = base64.b64decode(members[base + ".salt"])
        assert (
            base64.b64encode(hashlib.sha256(salt + members[base + ".json"]).digest()).decode()
            == entry["commit"]
        )
