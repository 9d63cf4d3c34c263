"""One link's state: what a hospital's ``POST /v1/shl`` creates and what every request reads.

    parse_request(body, now=) -> LinkRequest      # POST /v1/shl's JSON, or ShlError
    new_link(request, now=, ...) -> LinkState     # a fresh id and key, the passcode hashed
    LinkState.payload(base) -> Payload            # what goes into the shlink:/ and QR
    hash_passcode(p) / check_passcode(hash, p)    # scrypt (RFC 7914), constant-time compare

Storage. The library keeps no table; whoever wires the routes adds one row per link, named
for instance ``shl_links``, with these columns (one per LinkState field):

    id                  String(43), primary key   base64url of 32 random bytes; the manifest
                                                  URL's secret segment and the handle of
                                                  DELETE /v1/shl/{id} and /v1/shl/{id}/qr.png
    patient             String, indexed           the patient key "system|value" (never in a
                                                  ledger entry: access entries use the
                                                  pseudonym, as everywhere)
    key                 LargeBinary               the files' 32-byte key, sealed at rest like
                                                  Bundle keys (it opens the summary)
    flag                String(3)                 "" or "P" or "U"
    exp                 BigInteger                epoch seconds; 404 from then on
    label               String(80), nullable
    passcode_hash       String, nullable          hash_passcode()'s text
    remaining_attempts  Integer, nullable         wrong passcodes left; 0 = disabled for good;
                                                  updated compare-and-set (manifest.Attempts)
    revoked_at          DateTime(tz), nullable    set by DELETE; 404 from then on
    ips_bundle          String                    the summary's Bundle id in the store (the
    ips_version         Integer                   exact bytes, their salt and ledger index)
    created_by          String                    the creating client's organisation
    created_at          DateTime(tz)

No PHI is in the link's columns but the patient key and the label, which the hospital wrote.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from exchange.shl.errors import ShlError
from exchange.shl.payload import LABEL_MAX, Payload, b64url, new_key, new_link_id

__all__ = [
    "MAX_LIFETIME",
    "PASSCODE_ATTEMPTS",
    "LinkRequest",
    "LinkState",
    "check_passcode",
    "hash_passcode",
    "manifest_url",
    "new_link",
    "parse_request",
]

MAX_LIFETIME = timedelta(days=365)
PASSCODE_ATTEMPTS = 5  # wrong passcodes a link survives, over its whole life (SHL)
PASSCODE_MAX = 64
RECIPIENT_MAX = 200
# scrypt at N=2^14, r=8, p=1 (RFC 7914's interactive-login parameters): 16 MiB and some
# tens of milliseconds per guess, on top of the lifetime attempt count.
_SCRYPT = (2**14, 8, 1)


@dataclass(frozen=True)
class LinkRequest:
    """``POST /v1/shl``'s body, checked: ``{"patient": "system|value", "expires": RFC 3339,
    "label"?, "passcode"?}``."""

    patient: str
    expires: datetime
    label: str | None = None
    passcode: str | None = None


def _text(body: Mapping[str, object], name: str, limit: int, required: bool) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ShlError(name, "required, a non-empty string" if required else "a non-empty string")
    if len(value) > limit:
        raise ShlError(name, f"at most {limit} characters")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
        raise ShlError(name, "contains control characters")
    return value


def parse_request(body: object, *, now: datetime) -> LinkRequest:
    """Checks a link request; ``expires`` must be in the future and at most a year ahead."""
    if not isinstance(body, Mapping):
        raise ShlError("body", "a JSON object is required")
    unknown = sorted(set(body) - {"patient", "expires", "label", "passcode"})
    if unknown:
        raise ShlError(str(unknown[0]), "not a member of a link request")
    patient = _text(body, "patient", 400, True)
    assert patient is not None
    system, bar, value = patient.partition("|")
    if not bar or not system or not value:
        raise ShlError("patient", "must be 'system|value'")
    raw = body.get("expires")
    if not isinstance(raw, str):
        raise ShlError("expires", "required, an RFC 3339 date-time")
    try:
        expires = datetime.fromisoformat(raw)
    except ValueError:
        raise ShlError("expires", "not an RFC 3339 date-time") from None
    if expires.tzinfo is None or "T" not in raw.upper():
        raise ShlError("expires", "needs a date, a time and a time zone offset")
    if expires <= now:
        raise ShlError("expires", "is not in the future")
    if expires - now > MAX_LIFETIME:
        raise ShlError("expires", f"more than {MAX_LIFETIME.days} days ahead")
    label = _text(body, "label", LABEL_MAX, False)
    passcode = _text(body, "passcode", PASSCODE_MAX, False)
    return LinkRequest(patient, expires, label, passcode)


def hash_passcode(passcode: str) -> str:
    """``scrypt$N$r$p$<salt>$<hash>`` (base64url), salt 16 random bytes."""
    n, r, p = _SCRYPT
    salt = os.urandom(16)
    digest = hashlib.scrypt(passcode.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${b64url(salt)}${b64url(digest)}"


def check_passcode(stored: str, passcode: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            raise ValueError(scheme)
        want = base64.urlsafe_b64decode(digest + "==")
        got = hashlib.scrypt(
            passcode.encode("utf-8"),
            salt=base64.urlsafe_b64decode(salt + "=="),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
        )
    except (ValueError, binascii.Error):
        raise ShlError("passcode_hash", "not a stored passcode hash") from None
    return hmac.compare_digest(got, want)


@dataclass(frozen=True)
class LinkState:
    """One link as stored (the columns in this module's doc)."""

    id: str
    patient: str
    key: bytes
    flag: str
    exp: int
    label: str | None
    passcode_hash: str | None
    remaining_attempts: int | None
    revoked_at: datetime | None
    ips_bundle: str
    ips_version: int
    created_by: str
    created_at: datetime

    def inactive_reason(self, now: datetime) -> str | None:
        """Why the link answers 404, or None while it is live."""
        if self.revoked_at is not None:
            return "revoked"
        if now.timestamp() >= self.exp:
            return "expired"
        if self.remaining_attempts is not None and self.remaining_attempts <= 0:
            return "disabled after wrong passcodes"
        return None

    def payload(self, base: str) -> Payload:
        return Payload(
            url=manifest_url(base, self.id, direct="U" in self.flag),
            key=b64url(self.key),
            exp=self.exp,
            flag=self.flag,
            label=self.label,
        )


def manifest_url(base: str, link_id: str, *, direct: bool = False) -> str:
    """``<base>/v1/shl/{id}/manifest`` (POST), or ``…/file`` (GET) for a ``U`` link. With a
    43-character id the public base may be up to 66 characters (SHL: url ≤ 128)."""
    return f"{base.rstrip('/')}/v1/shl/{link_id}/{'file' if direct else 'manifest'}"


def new_link(
    request: LinkRequest,
    *,
    now: datetime,
    created_by: str,
    ips_bundle: str,
    ips_version: int,
    direct: bool = False,
) -> LinkState:
    """A fresh link to a recorded summary: new id and key, passcode hashed (``P``), or the
    single-file ``U`` flag when ``direct`` (which SHL forbids with a passcode)."""
    if direct and request.passcode is not None:
        raise ShlError("passcode", "a direct-file (U) link cannot have a passcode")
    flag = "P" if request.passcode is not None else "U" if direct else ""
    return LinkState(
        id=new_link_id(),
        patient=request.patient,
        key=new_key(),
        flag=flag,
        exp=int(request.expires.timestamp()),
        label=request.label,
        passcode_hash=None if request.passcode is None else hash_passcode(request.passcode),
        remaining_attempts=None if request.passcode is None else PASSCODE_ATTEMPTS,
        revoked_at=None,
        ips_bundle=ips_bundle,
        ips_version=ips_version,
        created_by=created_by,
        created_at=now.astimezone(UTC),
    )
