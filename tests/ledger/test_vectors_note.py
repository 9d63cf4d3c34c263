"""Public vectors: C2SP signed-note examples, golang.org/x/mod note keys, RFC 8785 JCS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledger.jcs import CanonicalizationError, canonicalize
from ledger.note import NoteError, Verifier, open_note, sign, split


def _load(vectors: Path, name: str) -> dict:
    return json.loads((vectors / "signed-note" / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["c2sp-example.json", "golang-note.json"])
def test_signed_note_examples_verify(vectors: Path, name: str) -> None:
    d = _load(vectors, name)
    v = Verifier.from_vkey(d["vkey"])
    assert v.vkey() == d["vkey"]
    note = open_note(d["note"], [v])
    assert note.text == d["text"]
    assert [s.name for s in note.verified] == [v.name]


@pytest.mark.parametrize("name", ["c2sp-example.json", "golang-note.json"])
def test_signed_note_every_flipped_byte_fails(vectors: Path, name: str) -> None:
    d = _load(vectors, name)
    v = Verifier.from_vkey(d["vkey"])
    raw = d["note"].encode()
    for i in range(len(raw)):
        mutated = bytearray(raw)
        mutated[i] ^= 0x01
        try:
            text = mutated.decode("utf-8")
        except UnicodeDecodeError:
            continue
        with pytest.raises(NoteError):
            open_note(text, [v])


def test_golang_bad_vkeys_rejected(vectors: Path) -> None:
    d = _load(vectors, "golang-note.json")
    for bad in d["bad_vkeys"]:
        with pytest.raises(NoteError):
            Verifier.from_vkey(bad)


def test_unknown_signer_is_not_trusted(vectors: Path) -> None:
    d = _load(vectors, "golang-note.json")
    enoch = Verifier.from_vkey(d["other_vkey_enoch"])
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        open_note(d["note"], [enoch])
    # Known plus unknown: the known signature counts, the other is set aside.
    note = open_note(d["note"], [enoch, Verifier.from_vkey(d["vkey"])])
    assert len(note.verified) == 1 and not note.unverified


def test_sign_round_trip_with_two_keys() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ledger.note import Signer

    a = Signer("log.example/a", Ed25519PrivateKey.generate())
    b = Signer("log.example/b", Ed25519PrivateKey.generate())
    note = sign("hello\n", [a, b])
    assert len(split(note)[1]) == 2
    assert len(open_note(note, [a.verifier, b.verifier]).verified) == 2
    with pytest.raises(NoteError):
        sign("no newline", [a])
    with pytest.raises(NoteError):
        sign("blank\n\nline\n", [a])


def test_jcs_vectors(vectors: Path) -> None:
    inputs = sorted((vectors / "jcs" / "input").glob("*.json"))
    assert inputs
    for p in inputs:
        want = (vectors / "jcs" / "output" / p.name).read_bytes()
        assert canonicalize(json.loads(p.read_text(encoding="utf-8"))) == want, p.name


def test_jcs_refuses_what_has_no_form() -> None:
    for bad in (float("nan"), float("inf"), "\ud800", {1: "x"}, object()):
        with pytest.raises(CanonicalizationError):
            canonicalize(bad)
