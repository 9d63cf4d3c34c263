"""Registry attestations, checked the way the service signs them, without the service.

An attestation (the registry of institutions, `kind=institution` entries) is the RFC 8785
canonical JSON ``{"admin", "key", "record", "signature"}``: `key` the admin's raw 32-byte
Ed25519 public key (base64), `signature` Ed25519 (RFC 8032, base64) over the RFC 8785 bytes
of the same object without `signature`. The log entry commits to the attestation's bytes as
SHA-256(salt ‖ bytes) like any submission, and its sender is the institution (`record.org`).

The signature shows that the holder of `key` signed the record; that the key was the
registered key of that admin was checked by the service before it appended the entry, and
the entry is what the log signs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.jcs import CanonicalizationError, canonicalize
from ledger.untrusted import InputRejected, read_base64, read_json

MAX_ATTESTATION_BYTES = 1 << 20
_FIELDS = {"admin", "key", "record", "signature"}


class AttestationError(ValueError):
    """The bytes are not a canonical attestation, or its signature does not verify."""


@dataclass(frozen=True)
class Attestation:
    admin: str
    key: bytes  # raw Ed25519 public key
    org: str
    record: dict[str, Any]
    value: dict[str, Any]  # the whole parsed attestation


def verify_attestation(data: bytes) -> Attestation:
    """Parses one attestation and checks its signature (Ed25519 over RFC 8785 bytes)."""
    try:
        obj = read_json(data, MAX_ATTESTATION_BYTES)
    except InputRejected as e:
        raise AttestationError(f"not strict JSON: {e}") from None
    if not isinstance(obj, dict) or set(obj) != _FIELDS:
        raise AttestationError(f"an attestation has exactly the fields {sorted(_FIELDS)}")
    admin, record = obj["admin"], obj["record"]
    if not isinstance(admin, str) or not isinstance(record, dict):
        raise AttestationError("admin must be a string and record an object")
    org = record.get("org")
    if not isinstance(org, str):
        raise AttestationError("the record names no org")
    try:
        key = read_base64(obj["key"], "key", size=32)
        sig = read_base64(obj["signature"], "signature")
        canonical = canonicalize(obj)
        unsigned = canonicalize({k: obj[k] for k in ("admin", "key", "record")})
    except (InputRejected, CanonicalizationError) as e:
        raise AttestationError(str(e)) from None
    if canonical != data:
        raise AttestationError("not in canonical (RFC 8785) form")
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(sig, unsigned)
    except InvalidSignature:
        raise AttestationError(f"the signature by admin {admin!r} does not verify") from None
    return Attestation(admin, key, org, record, obj)
