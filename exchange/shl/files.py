"""The files a link serves, and their encryption.

A link to a patient's summary serves two ``application/fhir+json`` files (design.md, "SMART
Health Links"): the IPS document Bundle, as the exact bytes appended to the log, and a
``Provenance`` targeting it whose ``signature[0].data`` is base64 of the receipt text and
whose extension ``urn:medledger:extension:salt`` (``valueBase64Binary``) is the salt, so
that SHA-256(salt ‖ bytes) can be checked against the entry the receipt proves. A ``U`` link
has one file, so both travel in a ``collection`` Bundle: a ``Binary`` holding the summary's
exact bytes and the Provenance targeting it (the layout docs/shl.md gives the viewer).

Files leave as compact JWE (SHL "Encrypting and Decrypting Files"; RFC 7516): ``alg dir``,
``enc A256GCM`` under the link's key, ``cty`` the content type, a fresh random 96-bit nonce
per encryption (the same key serves the link for its life), ``zip DEF`` (raw DEFLATE) by
default since FHIR JSON shrinks several times.

    ips_from_records(records, now=, document_id=, language=None) -> bytes
    link_files(ips, salt=, receipt=) -> [LinkFile(summary), LinkFile(provenance)]
    direct_file(ips, salt=, receipt=) -> LinkFile            # the U link's one file
    encrypt(key, plaintext, cty=, deflate=True) -> str       # compact JWE
    decrypt(key, token) -> (protected header, plaintext)
"""

from __future__ import annotations

import base64
import json
import os
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from adapters.base import AdaptError
from adapters.ips import build_ips
from adapters.ips_json import dumps, loads_bundle
from exchange.shl.errors import ShlError
from exchange.shl.payload import KEY_SIZE, b64url, b64url_decode
from ledger.checkpoint import CheckpointError, parse_checkpoint
from ledger.entry import EntryError, commitment, parse_entry
from ledger.note import NoteError
from ledger.note import split as split_note
from ledger.receipt import ReceiptError, parse_receipt

__all__ = [
    "FHIR_JSON",
    "JOSE",
    "SALT_EXTENSION",
    "LinkFile",
    "decrypt",
    "direct_file",
    "encrypt",
    "ips_from_records",
    "link_files",
    "provenance",
]

FHIR_JSON = "application/fhir+json"
JOSE = "application/jose"  # the media type of a file served by location or directly
SALT_EXTENSION = "urn:medledger:extension:salt"
MAX_PLAINTEXT = 64 << 20  # what decrypt inflates at most, as the viewer does
_NONCE = 12
_TAG = 16
# ISO ASTM E1762-95 "Verification Signature", the signature type FHIR's example uses.
_SIGNATURE_TYPE = {
    "system": "urn:iso-astm:E1762-95:2013",
    "code": "1.2.840.10065.1.12.1.5",
    "display": "Verification Signature",
}


@dataclass(frozen=True)
class LinkFile:
    """One file of a link, before encryption."""

    content_type: str
    data: bytes


def ips_from_records(
    records: Sequence[bytes | Mapping[str, Any]],
    *,
    now: datetime,
    document_id: str,
    language: str | None = None,
) -> bytes:
    """The IPS document of all of a patient's record Bundles, as canonical JSON bytes.

    Bundles given as bytes are read strictly, keeping each decimal's digits (prefer them);
    parsed ones are used as they are. The narrative is the records' own (Chinese) beside
    translations: English and the patient's preferred language, or ``language`` alone
    (adapters.ips). A record the IPS cannot be built from raises ShlError naming it.
    """
    if not records:
        raise ShlError("patient", "has no record Bundles to summarise")
    try:
        parsed = [
            loads_bundle(r, f"record {i + 1}") if isinstance(r, bytes) else r
            for i, r in enumerate(records)
        ]
        return dumps(build_ips(parsed, now=now, document_id=document_id, language=language))
    except AdaptError as e:
        raise ShlError("patient", f"cannot summarise the records: {e}") from None


def _receipt_facts(receipt: str) -> tuple[int, str, bytes, str]:
    """(index, time, commit, origin) of the entry a receipt proves."""
    try:
        r = parse_receipt(receipt)
        if r.extra is None:
            raise ShlError("receipt", "carries no entry (extra); take it from Log.receipt")
        entry = parse_entry(r.extra)
        text, _ = split_note(r.checkpoint)
        origin = parse_checkpoint(text).origin
    except (ReceiptError, EntryError, NoteError, CheckpointError) as e:
        raise ShlError("receipt", str(e)) from None
    return entry.index, entry.time, entry.commit, origin


def provenance(target: str, *, receipt: str, salt: bytes) -> dict[str, Any]:
    """The Provenance of design.md's SHL contract, targeting ``target`` (``Bundle/<id>``).

    ``recorded`` is the entry's time and the ledger (by its origin) is the agent; the receipt
    text is ``signature[0].data``, the salt the extension ``urn:medledger:extension:salt``.
    """
    index, time, _, origin = _receipt_facts(receipt)
    who = {"display": f"ledger {origin}"}
    return {
        "resourceType": "Provenance",
        "id": f"ledger-{index}",
        "extension": [
            {"url": SALT_EXTENSION, "valueBase64Binary": base64.b64encode(salt).decode()}
        ],
        "target": [{"reference": target}],
        "recorded": time,
        "agent": [{"who": who}],
        "signature": [
            {
                "type": [_SIGNATURE_TYPE],
                "when": time,
                "who": who,
                "data": base64.b64encode(receipt.encode("utf-8")).decode(),
            }
        ],
    }


def _checked_id(ips: bytes, salt: bytes, receipt: str) -> str:
    """The summary's Bundle.id, once the receipt's entry is known to commit to these bytes
    with this salt: a link never serves a proof the viewer would reject."""
    _, _, commit, _ = _receipt_facts(receipt)
    if commitment(salt, ips) != commit:
        raise ShlError("receipt", "its entry does not commit to this summary with this salt")
    try:
        doc = json.loads(ips)
    except ValueError:
        raise ShlError("ips", "not JSON") from None
    if not isinstance(doc, dict) or doc.get("resourceType") != "Bundle":
        raise ShlError("ips", "not a FHIR Bundle")
    if doc.get("type") != "document" or not isinstance(doc.get("id"), str):
        raise ShlError("ips", "not a document Bundle with an id")
    return str(doc["id"])


def _json(resource: Mapping[str, Any]) -> bytes:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def link_files(ips: bytes, *, salt: bytes, receipt: str) -> list[LinkFile]:
    """The two files of a manifest link: the summary's exact bytes, then its Provenance."""
    doc_id = _checked_id(ips, salt, receipt)
    prov = provenance(f"Bundle/{doc_id}", receipt=receipt, salt=salt)
    return [LinkFile(FHIR_JSON, ips), LinkFile(FHIR_JSON, _json(prov))]


def direct_file(ips: bytes, *, salt: bytes, receipt: str) -> LinkFile:
    """The one file of a ``U`` link: a collection Bundle of a Binary holding the summary's
    exact bytes and the Provenance targeting that Binary."""
    doc_id = _checked_id(ips, salt, receipt)
    space = uuid.uuid5(uuid.NAMESPACE_URL, f"urn:medledger:shl:{doc_id}")
    binary = {
        "resourceType": "Binary",
        "id": doc_id,
        "contentType": FHIR_JSON,
        "data": base64.b64encode(ips).decode(),
    }
    collection = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:uuid:{uuid.uuid5(space, 'summary')}", "resource": binary},
            {
                "fullUrl": f"urn:uuid:{uuid.uuid5(space, 'provenance')}",
                "resource": provenance(f"Binary/{doc_id}", receipt=receipt, salt=salt),
            },
        ],
    }
    return LinkFile(FHIR_JSON, _json(collection))


def encrypt(key: bytes, plaintext: bytes, *, cty: str = FHIR_JSON, deflate: bool = True) -> str:
    """A compact JWE: ``alg dir``, ``enc A256GCM``, ``cty``; ``zip DEF`` when ``deflate``.

    The additional authenticated data is the encoded protected header (RFC 7516 §5.1), the
    nonce 96 random bits: never repeated under one key in practice (2^-32 after 2^32 files).
    """
    if len(key) != KEY_SIZE:
        raise ShlError("key", f"must be {KEY_SIZE} bytes")
    header: dict[str, str] = {"alg": "dir", "enc": "A256GCM", "cty": cty}
    if deflate:
        header["zip"] = "DEF"
        squeeze = zlib.compressobj(6, zlib.DEFLATED, -15)  # raw DEFLATE, no zlib header
        plaintext = squeeze.compress(plaintext) + squeeze.flush()
    protected = b64url(json.dumps(header, separators=(",", ":")).encode())
    nonce = os.urandom(_NONCE)
    sealed = AESGCM(key).encrypt(nonce, plaintext, protected.encode("ascii"))
    ciphertext, tag = sealed[:-_TAG], sealed[-_TAG:]
    return f"{protected}..{b64url(nonce)}.{b64url(ciphertext)}.{b64url(tag)}"


def decrypt(
    key: bytes, token: str, *, max_size: int = MAX_PLAINTEXT
) -> tuple[dict[str, Any], bytes]:
    """Opens a compact JWE of a link: (protected header, plaintext). Only ``dir`` with
    ``A256GCM``, optionally ``zip DEF``; ``crit`` and anything else is refused."""
    parts = token.strip().split(".")
    if len(parts) != 5:
        raise ShlError("file", "not a compact JWE (five parts)")
    protected, encrypted_key, nonce_s, ciphertext_s, tag_s = parts
    try:
        header = json.loads(b64url_decode(protected, "file"))
    except ValueError:
        raise ShlError("file", "the protected header is not JSON") from None
    if not isinstance(header, dict):
        raise ShlError("file", "the protected header is not a JSON object")
    if header.get("alg") != "dir" or header.get("enc") != "A256GCM" or encrypted_key:
        raise ShlError("file", "not alg dir with enc A256GCM")
    if "crit" in header or header.get("zip", "DEF") != "DEF":
        raise ShlError("file", "asks for an extension (crit or zip) this reader lacks")
    nonce = b64url_decode(nonce_s, "file")
    tag = b64url_decode(tag_s, "file")
    if len(nonce) != _NONCE or len(tag) != _TAG or len(key) != KEY_SIZE:
        raise ShlError("file", "nonce, tag or key of the wrong size for A256GCM")
    try:
        plain = AESGCM(key).decrypt(
            nonce, b64url_decode(ciphertext_s, "file") + tag, protected.encode("ascii")
        )
    except InvalidTag:
        raise ShlError("file", "does not decrypt under this key: altered, or another key") from None
    if "zip" in header:
        inflate = zlib.decompressobj(-15)
        try:
            plain = inflate.decompress(plain, max_size)
        except zlib.error:
            raise ShlError("file", "zip DEF content is not raw DEFLATE") from None
        if inflate.unconsumed_tail or not inflate.eof:
            raise ShlError("file", f"inflates beyond {max_size} bytes, or is truncated")
    return header, plain
