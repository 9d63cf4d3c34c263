"""What a link's public routes answer, as functions of the link's state and the request.

Three requests reach a link without authentication (HL7 SHL):

    POST <base>/v1/shl/{id}/manifest          answer_manifest(link, body, ...)
    GET  <base>/v1/shl/{id}/files/{ticket}    answer_location(link, ticket, ...)
    GET  <base>/v1/shl/{id}/file?recipient=   answer_direct(link, recipient, ...)   (flag U)

Each returns an :class:`Answer`: the status and body to send, the :class:`Access` to append to
the patient's accounting (naming the recipient string, whatever the outcome, once a request
names one), and for a wrong passcode the :class:`Attempts` update to store. The route stays
thin: load the link by id (None when unknown), call, store ``attempts`` compare-and-set,
record ``access``, send.

Wrong passcodes are counted over the link's life (SHL: 401 with ``remainingAttempts``; at 0
the link is dead and answers 404). Parallel guesses must not each see the same count: the
update names the count it was computed from, and the route applies it as ``UPDATE … SET
remaining_attempts = :remaining WHERE id = :id AND remaining_attempts = :expected``; when no
row changed, another request got there first and the route answers again from the fresh
state. A request without a passcode is refused with 401 and counts nothing.

Unknown, expired, revoked and disabled links all answer the same 404, so the answer tells a
stranger nothing; the access entry says which. Files are encrypted anew for every answer
(fresh nonce); ``files`` is called only when they will leave. A file longer than the
client's ``embeddedLengthMax`` goes by ``location``: a ticket sealed with a server secret
(AES-256-GCM, bound to the link id) naming the file, the recipient and an expiry at most an
hour ahead (SHL); its GET checks the link again and is an access entry of its own.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from exchange.shl.errors import ShlError
from exchange.shl.files import JOSE, LinkFile, encrypt
from exchange.shl.link import RECIPIENT_MAX, LinkState, check_passcode
from exchange.shl.payload import b64url

__all__ = [
    "Access",
    "Answer",
    "Attempts",
    "Locations",
    "answer_direct",
    "answer_location",
    "answer_manifest",
]

Files = Callable[[], Sequence[LinkFile]]


@dataclass(frozen=True)
class Access:
    """One entry for the patient's accounting (exchange.access): ``action`` ``read`` with
    outcome ``0`` when files (or the manifest) left, ``denied`` with ``4`` when refused."""

    link_id: str
    patient: str
    recipient: str
    action: str
    outcome: str
    detail: str


@dataclass(frozen=True)
class Attempts:
    """Store ``remaining`` for the link if it still holds ``expected`` (compare-and-set)."""

    expected: int
    remaining: int


@dataclass(frozen=True)
class Answer:
    status: int
    body: Mapping[str, Any] | str  # JSON, or a compact JWE (application/jose)
    access: Access | None = None
    attempts: Attempts | None = None

    @property
    def media_type(self) -> str:
        return JOSE if isinstance(self.body, str) else "application/json"


def _outcome(status: int, code: str, field: str | None, text: str) -> Answer:
    """A 4xx with a FHIR OperationOutcome saying what and where."""
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": text}
    if field is not None:
        issue["expression"] = [field]
    return Answer(status, {"resourceType": "OperationOutcome", "issue": [issue]})


_GONE = "no such active link (unknown, expired, revoked or disabled)"


def _not_found(link: LinkState | None, recipient: str | None, reason: str) -> Answer:
    answer = _outcome(404, "not-found", None, _GONE)
    if link is None or recipient is None:
        return answer
    access = Access(link.id, link.patient, recipient, "denied", "4", f"SHL link {reason}")
    return Answer(answer.status, answer.body, access)


def _recipient(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ShlError("recipient", "required, a non-empty string naming who opens the link")
    if len(value) > RECIPIENT_MAX:
        raise ShlError("recipient", f"at most {RECIPIENT_MAX} characters")
    return value


def _invalid(e: ShlError) -> Answer:
    return _outcome(400, "invalid", e.field, e.reason)


@dataclass(frozen=True)
class _ManifestRequest:
    recipient: str
    passcode: str | None
    embedded_max: int | None


def _manifest_request(body: object) -> _ManifestRequest:
    if not isinstance(body, Mapping):
        raise ShlError("body", "a JSON object is required")
    recipient = _recipient(body.get("recipient"))
    passcode = body.get("passcode")
    if passcode is not None and not isinstance(passcode, str):
        raise ShlError("passcode", "must be a string")
    limit = body.get("embeddedLengthMax")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ShlError("embeddedLengthMax", "must be a non-negative integer")
    return _ManifestRequest(recipient, passcode, limit)


def answer_manifest(
    link: LinkState | None,
    body: object,
    *,
    now: datetime,
    files: Files,
    locations: Locations,
) -> Answer:
    """SHL "Manifest Request": ``body`` is the parsed JSON (``recipient``, ``passcode`` for
    ``P`` links, ``embeddedLengthMax``)."""
    try:
        req = _manifest_request(body)
    except ShlError as e:
        return _invalid(e)
    if link is None:
        return _not_found(None, req.recipient, "unknown")
    if "U" in link.flag:
        return _not_found(link, req.recipient, "is a direct-file (U) link: no manifest")
    reason = link.inactive_reason(now)
    if reason is not None:
        return _not_found(link, req.recipient, reason)
    if link.passcode_hash is not None:
        remaining = link.remaining_attempts or 0
        if req.passcode is None:
            access = Access(
                link.id, link.patient, req.recipient, "denied", "4", "SHL manifest: no passcode"
            )
            return Answer(401, {"remainingAttempts": remaining}, access)
        if not check_passcode(link.passcode_hash, req.passcode):
            left = remaining - 1
            detail = f"SHL manifest: wrong passcode, {left} attempts left"
            if left == 0:
                detail += "; link disabled"
            access = Access(link.id, link.patient, req.recipient, "denied", "4", detail)
            return Answer(401, {"remainingAttempts": left}, access, Attempts(remaining, left))
    entries: list[dict[str, str]] = []
    embedded = 0
    for i, f in enumerate(files()):
        token = encrypt(link.key, f.data, cty=f.content_type)
        if req.embedded_max is None or len(token) <= req.embedded_max:
            entries.append({"contentType": f.content_type, "embedded": token})
            embedded += 1
        else:
            url = locations.issue(link.id, i, req.recipient, now)
            entries.append({"contentType": f.content_type, "location": url})
    detail = (
        f"SHL manifest: {len(entries)} files, {embedded} embedded, "
        f"{len(entries) - embedded} by location"
    )
    access = Access(link.id, link.patient, req.recipient, "read", "0", detail)
    return Answer(200, {"files": entries}, access)


def answer_location(
    link: LinkState | None, ticket: str, *, now: datetime, files: Files, locations: Locations
) -> Answer:
    """SHL ``.files.location``: the file a manifest named, while its ticket and the link
    are both alive."""
    if link is None:
        return _not_found(None, None, "unknown")
    try:
        index, recipient = locations.open(link.id, ticket, now)
    except ShlError:
        return _not_found(None, None, "ticket refused")
    reason = link.inactive_reason(now)
    if reason is not None:
        return _not_found(link, recipient, reason)
    shared = files()
    if index >= len(shared):
        return _not_found(link, recipient, "file no longer in the link")
    f = shared[index]
    access = Access(
        link.id, link.patient, recipient, "read", "0", f"SHL file {index + 1} by location"
    )
    return Answer(200, encrypt(link.key, f.data, cty=f.content_type), access)


def answer_direct(
    link: LinkState | None,
    recipient: str | None,
    *,
    now: datetime,
    file: Callable[[], LinkFile],
) -> Answer:
    """SHL "Direct File Request" (flag ``U``): ``GET url?recipient=…``, the one file."""
    try:
        who = _recipient(recipient)
    except ShlError as e:
        return _invalid(e)
    if link is None:
        return _not_found(None, who, "unknown")
    if "U" not in link.flag:
        return _not_found(link, who, "has a manifest: no direct file")
    reason = link.inactive_reason(now)
    if reason is not None:
        return _not_found(link, who, reason)
    f = file()
    access = Access(link.id, link.patient, who, "read", "0", "SHL direct file")
    return Answer(200, encrypt(link.key, f.data, cty=f.content_type), access)


class Locations:
    """Tickets for ``.files.location`` URLs, sealed under a server secret.

    The secret is the server's, never the link's key: whoever holds a link (and so its
    key) but not its passcode must not be able to mint a ticket. A ticket lives at most an
    hour (SHL); it can be fetched more than once in that time.
    """

    MAX_LIFETIME = timedelta(hours=1)

    def __init__(self, secret: bytes, base: str, lifetime: timedelta = timedelta(minutes=10)):
        if len(secret) != 32:
            raise ShlError("secret", "must be 32 bytes")
        if not timedelta(0) < lifetime <= self.MAX_LIFETIME:
            raise ShlError("lifetime", "must be positive and at most an hour")
        self._aead = AESGCM(secret)
        self._base = base.rstrip("/")
        self._lifetime = lifetime

    def issue(self, link_id: str, index: int, recipient: str, now: datetime) -> str:
        until = int((now + self._lifetime).timestamp())
        plain = json.dumps({"f": index, "r": recipient, "e": until}).encode()
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plain, link_id.encode())
        return f"{self._base}/v1/shl/{link_id}/files/{b64url(nonce + sealed)}"

    def open(self, link_id: str, ticket: str, now: datetime) -> tuple[int, str]:
        """(file index, recipient) of a live ticket for this link, else ShlError."""
        try:
            raw = base64.urlsafe_b64decode(ticket + "=" * (-len(ticket) % 4))
            plain = self._aead.decrypt(raw[:12], raw[12:], link_id.encode())
            obj = json.loads(plain)
            index, recipient, until = obj["f"], obj["r"], obj["e"]
        except (binascii.Error, ValueError, InvalidTag, KeyError, TypeError):
            raise ShlError("ticket", "not a ticket of this link") from None
        if not isinstance(index, int) or not isinstance(recipient, str):
            raise ShlError("ticket", "not a ticket of this link")
        if now.timestamp() >= until:
            raise ShlError("ticket", "expired")
        return index, recipient
