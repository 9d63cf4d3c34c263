"""C2SP tlog-cosignature (c2sp.org/tlog-cosignature), the Ed25519 type: ``cosignature/v1``.

A cosignature is a signed-note signature line that a witness (a *cosigner*) adds to a
checkpoint after checking it is consistent with everything it saw of the log before:

    — <cosigner name> base64(key id || timestamp || Ed25519 signature)

The key id is SHA-256(<name> || 0x0A || 0x04 || 32-byte public key)[:4], 0x04 being the
signature type c2sp.org/signed-note assigns to timestamped Ed25519 cosignatures. The
timestamp is the POSIX time of cosigning as a big-endian uint64, at most 2^63 - 1. The
signature is over this message (two header lines, then the checkpoint's note text, extension
lines included, without any signature line):

    cosignature/v1
    time <timestamp, decimal, no leading zeros>
    <origin>
    <size>
    <base64 root>

It says: as of that time, the largest tree the cosigner has seen for the log with this
origin, consistent with every earlier one, has this root. The message does not name the
cosigner, so a public key serves one cosigner name only. Verifier keys are
``<name>+<hex key id>+<base64(0x04 || public key)>``.

A verifier ignores signature lines whose (name, key id) is not a cosigner it trusts, and
rejects the note when a trusted cosigner's line fails to verify (signed-note, "Signatures").
Standard library and ``cryptography`` only.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .encoding import b64
from .note import NoteError, Signature, is_valid_key_name, split_vkey

SIG_TYPE = 0x04
HEADER = "cosignature/v1"
MAX_TIMESTAMP = 2**63 - 1
SIGNATURE_SIZE = 8 + 64
"""Bytes after the key id in a cosignature: the uint64 timestamp and the Ed25519 signature."""


class CosignatureError(ValueError):
    """A cosignature, cosigner key or cosigned note is malformed, or a trusted cosigner's
    signature does not verify."""


def key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(name || "\\n" || 0x04 || public key)[:4]: the id of an Ed25519 cosigner key."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([SIG_TYPE]) + public_key).digest()[:4]


def signed_message(text: str, timestamp: int) -> bytes:
    """The bytes a cosignature signs: the ``cosignature/v1`` and ``time`` lines, then the
    checkpoint's note text (ending in its newline)."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise CosignatureError(f"cosignature timestamp {timestamp} is outside 0..2^63-1")
    if not text.endswith("\n"):
        raise CosignatureError("the cosigned note text must end in a newline")
    return f"{HEADER}\ntime {timestamp}\n{text}".encode()


@dataclass(frozen=True)
class Cosignature:
    """One cosignature line, opened: who, when, and the Ed25519 signature."""

    name: str
    key_id: bytes
    timestamp: int
    signature: bytes

    @classmethod
    def from_signature(cls, sig: Signature) -> Cosignature:
        """The timestamp and signature of a note signature line of this type."""
        if len(sig.signature) != SIGNATURE_SIZE:
            raise CosignatureError(
                f"cosignature by {sig.name} is {len(sig.signature)} bytes after its key id, "
                f"not {SIGNATURE_SIZE} (uint64 timestamp and Ed25519 signature)"
            )
        (ts,) = struct.unpack(">Q", sig.signature[:8])
        if ts > MAX_TIMESTAMP:
            raise CosignatureError(f"cosignature by {sig.name} has timestamp {ts} above 2^63-1")
        return cls(sig.name, sig.key_id, ts, sig.signature[8:])

    def as_signature(self) -> Signature:
        return Signature(self.name, self.key_id, struct.pack(">Q", self.timestamp) + self.signature)

    def line(self) -> str:
        """The note signature line, ending in a newline."""
        return self.as_signature().line()


@dataclass(frozen=True)
class CosignerVerifier:
    """The public key of an Ed25519 cosigner, as a policy or a log trusts it."""

    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def from_vkey(cls, vkey: str) -> CosignerVerifier:
        """Parses ``name+hexid+base64(0x04 || key)``; the id must match the name and key."""
        try:
            name, kid, raw = split_vkey(vkey)
        except NoteError as e:
            raise CosignatureError(str(e)) from e
        if len(raw) != 33 or raw[0] != SIG_TYPE:
            raise CosignatureError(
                f"verifier key for {name} is not an Ed25519 cosignature key (type 0x04)"
            )
        if key_id(name, raw[1:]) != kid:
            raise CosignatureError(f"verifier key id for {name} does not match its key")
        return cls(name, kid, raw[1:])

    def vkey(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+" + b64(bytes([SIG_TYPE]) + self.public_key)

    def matches(self, sig: Signature) -> bool:
        """Whether a signature line claims to be by this cosigner (name and key id)."""
        return sig.name == self.name and sig.key_id == self.key_id

    def verify(self, text: str, sig: Signature) -> Cosignature:
        """Opens and checks this cosigner's signature line on a note's text."""
        cosig = Cosignature.from_signature(sig)
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(
                cosig.signature, signed_message(text, cosig.timestamp)
            )
        except InvalidSignature:
            raise CosignatureError(
                f"cosignature by {self.name}+{self.key_id.hex()} does not verify"
            ) from None
        return cosig


@dataclass(frozen=True)
class Cosigner:
    """An Ed25519 cosigner: a witness's name and private key."""

    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        if not is_valid_key_name(self.name):
            raise CosignatureError(f"invalid cosigner name {self.name!r}")

    @property
    def verifier(self) -> CosignerVerifier:
        pub = self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return CosignerVerifier(self.name, key_id(self.name, pub), pub)

    def cosign(self, text: str, timestamp: int) -> Cosignature:
        """The cosignature of a checkpoint's note text at `timestamp` (POSIX seconds)."""
        sig = self.private_key.sign(signed_message(text, timestamp))
        return Cosignature(self.name, self.verifier.key_id, timestamp, sig)


def verify_cosignatures(
    text: str,
    signatures: Iterable[Signature],
    cosigners: Iterable[CosignerVerifier],
    *,
    not_after: int | None = None,
) -> dict[CosignerVerifier, Cosignature]:
    """The cosignatures by trusted cosigners among a note's signature lines, checked.

    Lines by other keys are ignored (the log's own signature among them). A line by a trusted
    cosigner that fails to verify, or (with `not_after`) is dated after it, rejects the whole
    note: CosignatureError. When a cosigner signed twice, the later timestamp is kept.
    """
    trusted = {(c.name, c.key_id): c for c in cosigners}
    found: dict[CosignerVerifier, Cosignature] = {}
    for sig in signatures:
        c = trusted.get((sig.name, sig.key_id))
        if c is None:
            continue
        cosig = c.verify(text, sig)
        if not_after is not None and cosig.timestamp > not_after:
            raise CosignatureError(
                f"cosignature by {c.name} is dated {cosig.timestamp}, after {not_after}"
            )
        if c not in found or found[c].timestamp < cosig.timestamp:
            found[c] = cosig
    return found
