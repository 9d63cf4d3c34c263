"""C2SP signed-note (c2sp.org/signed-note) with Ed25519 keys.

A note is UTF-8 text ending in a newline, a blank line, then signature lines
``— <key name> <base64(key id || signature)>``. The key id is the first four bytes of
SHA-256(key name || 0x0A || 0x01 || public key), 0x01 naming Ed25519.
A verifier key is written ``<name>+<hex key id>+<base64(0x01 || public key)>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .encoding import b64
from .untrusted import InputRejected, read_base64

ALG_ED25519 = 0x01
MAX_SIGNATURES = 100
"""Verifiers refuse notes with more signatures (signed-note: at least 16 must be accepted)."""
_DASH = "\u2014 "


class NoteError(ValueError):
    """The note, key or signature is malformed, or no trusted key signed the note."""


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key id of an Ed25519 key: SHA-256(name || "\\n" || 0x01 || key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def is_valid_key_name(name: str) -> bool:
    """Key names are non-empty and hold no Unicode spaces and no plus sign."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def split_vkey(vkey: str) -> tuple[str, bytes, bytes]:
    """The parts of a verifier key ``<name>+<hex key id>+<base64(type || key)>``: the name,
    the 4-byte key id and the decoded type byte and key material, which the caller checks
    against its own signature type (0x01 here, 0x04 for cosignatures)."""
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise NoteError("verifier key must read <name>+<hex key id>+<base64 key>")
    name, hex_id, text64 = parts
    if not is_valid_key_name(name):
        raise NoteError(f"invalid key name {name!r}")
    try:
        kid = bytes.fromhex(hex_id)
        raw = base64.b64decode(text64, validate=True)
    except (ValueError, binascii.Error) as e:
        raise NoteError(f"verifier key for {name} is not hex/base64: {e}") from e
    if len(kid) != 4 or len(hex_id) != 8:
        raise NoteError(f"verifier key id for {name} must be 8 hex digits")
    if not raw:
        raise NoteError(f"verifier key for {name} holds no key")
    return name, kid, raw


@dataclass(frozen=True)
class Verifier:
    """An Ed25519 verifier key for signed notes."""

    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parses ``name+hexid+base64key``; the id must match the key and the name."""
        name, kid, raw = split_vkey(vkey)
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError(f"verifier key for {name} is not an Ed25519 key")
        if key_id(name, raw[1:]) != kid:
            raise NoteError(f"verifier key id for {name} does not match its key")
        return cls(name, kid, raw[1:])

    def vkey(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+" + b64(bytes([ALG_ED25519]) + self.public_key)

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """An Ed25519 signer for signed notes."""

    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        if not is_valid_key_name(self.name):
            raise NoteError(f"invalid key name {self.name!r}")

    @property
    def verifier(self) -> Verifier:
        pub = self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return Verifier(self.name, key_id(self.name, pub), pub)

    def signature_line(self, text: str) -> str:
        sig = self.private_key.sign(text.encode("utf-8"))
        return f"{_DASH}{self.name} {b64(self.verifier.key_id + sig)}\n"


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        """The signature line ``— <name> <base64(key id || signature)>`` with its newline."""
        return f"{_DASH}{self.name} {b64(self.key_id + self.signature)}\n"


@dataclass(frozen=True)
class Note:
    """An opened note: its text, the signatures trusted keys verified, and the others."""

    text: str
    verified: tuple[Signature, ...]
    unverified: tuple[Signature, ...]


def sign(text: str, signers: Iterable[Signer]) -> str:
    """A signed note of `text` (which must end in a newline) signed by every signer."""
    _check_text(text)
    lines = [s.signature_line(text) for s in signers]
    if not lines:
        raise NoteError("a note needs at least one signer")
    return text + "\n" + "".join(lines)


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end in a newline")
    if "\n\n" in text:
        raise NoteError("note text must not contain a blank line")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("note text must not contain control characters")


def split(note: str) -> tuple[str, list[Signature]]:
    """Separates the text from its parsed signature lines; no verification."""
    if not note.endswith("\n"):
        raise NoteError("signed note must end in a newline")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise NoteError("signed note has no blank line before its signatures")
    text = note[: cut + 1]
    _check_text(text)
    return text, parse_signature_lines(note[cut + 2 :])


def parse_signature_lines(block: str) -> list[Signature]:
    """The signatures of a block of newline-terminated signature lines (a note's, or a
    witness's answer to add-checkpoint); at least one, at most the verifier's limit."""
    if not block.endswith("\n"):
        raise NoteError("signature lines must end in a newline")
    sigs = []
    for line in block[:-1].split("\n"):
        if not line.startswith(_DASH):
            raise NoteError(f"malformed signature line {line!r}")
        name, sep, text64 = line[len(_DASH) :].partition(" ")
        if not sep or not is_valid_key_name(name):
            raise NoteError(f"malformed signature line {line!r}")
        try:
            raw = read_base64(text64, f"signature by {name}")
        except InputRejected as e:
            raise NoteError(str(e)) from None
        if len(raw) < 5:
            raise NoteError(f"signature by {name} is too short")
        sigs.append(Signature(name, raw[:4], raw[4:]))
        if len(sigs) > MAX_SIGNATURES:
            raise NoteError(f"more than {MAX_SIGNATURES} signatures")
    return sigs


def open_note(note: str, verifiers: Iterable[Verifier]) -> Note:
    """Verifies a signed note against trusted keys.

    Signatures by unknown keys are kept aside, not trusted. A signature by a known key that
    does not verify is an error, and at least one known key must have signed.
    """
    text, sigs = split(note)
    known = {(v.name, v.key_id): v for v in verifiers}
    verified, unverified = [], []
    msg = text.encode("utf-8")
    for sig in sigs:
        v = known.get((sig.name, sig.key_id))
        if v is None:
            unverified.append(sig)
        elif v.verify(msg, sig.signature):
            verified.append(sig)
        else:
            raise NoteError(f"invalid signature by trusted key {sig.name}+{sig.key_id.hex()}")
    if not verified:
        names = ", ".join(f"{s.name}+{s.key_id.hex()}" for s in sigs)
        raise NoteError(f"no signature by a trusted key (signed by: {names})")
    return Note(text, tuple(verified), tuple(unverified))
