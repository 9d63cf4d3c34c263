"""The log entry (leaf): canonical JSON that commits to a submission without holding it.

See docs/ledger-format.md. An entry carries no personal data: the submission is committed
by a salted hash and the patient, if any, by a keyed pseudonym.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from .encoding import b64
from .jcs import canonicalize
from .untrusted import InputRejected, read_base64, read_json

FORMAT_VERSION = 1
SALT_SIZE = 32
MAX_ENTRY_BYTES = 1 << 16
"""Longer bytes are refused unread; a well-formed entry is a few hundred bytes."""

_KIND = re.compile(r"[a-z][a-z0-9-]{0,31}")
_SENDER = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # a FHIR id
_MEDIA = re.compile(r"[a-z]+/[a-z0-9.+\-]{1,64}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
_REQUIRED = {"v", "index", "prev", "time", "kind", "sender", "commit", "media"}
_OPTIONAL = {"subject"}


class EntryError(ValueError):
    """The entry bytes are not a well-formed, canonical version-1 entry."""


@dataclass(frozen=True)
class Entry:
    index: int
    prev: bytes  # leaf hash of entry index-1; b"" for index 0
    time: str  # RFC 3339 UTC with milliseconds
    kind: str
    sender: str
    commit: bytes  # SHA-256(salt || submitted bytes)
    media: str
    subject: bytes | None = None  # HMAC pseudonym of the patient

    def to_bytes(self) -> bytes:
        """The canonical (RFC 8785) UTF-8 bytes that are hashed as the leaf.

        Built directly: once _check_fields has passed, every string is printable ASCII
        without `"` or `\\` (base64, the token patterns), so RFC 8785 section 3.2.2.2 needs
        no escaping, and the members are written in its section 3.2.3 order (sorted by
        UTF-16 code units). `canonical_bytes` is the general reference it must equal.
        """
        _check_fields(self)
        subject = "" if self.subject is None else f',"subject":"{b64(self.subject)}"'
        return (
            f'{{"commit":"{b64(self.commit)}","index":{self.index},"kind":"{self.kind}",'
            f'"media":"{self.media}","prev":"{b64(self.prev)}","sender":"{self.sender}"'
            f'{subject},"time":"{self.time}","v":{FORMAT_VERSION}}}'
        ).encode("ascii")

    def canonical_bytes(self) -> bytes:
        """The same bytes through the general RFC 8785 canonicaliser (the reference form)."""
        obj: dict[str, object] = {
            "v": FORMAT_VERSION,
            "index": self.index,
            "prev": b64(self.prev),
            "time": self.time,
            "kind": self.kind,
            "sender": self.sender,
            "commit": b64(self.commit),
            "media": self.media,
        }
        if self.subject is not None:
            obj["subject"] = b64(self.subject)
        _check_fields(self)
        return canonicalize(obj)


def commitment(salt: bytes, data: bytes) -> bytes:
    """SHA-256(salt || data): binds an entry to exact bytes without revealing them."""
    if len(salt) != SALT_SIZE:
        raise EntryError(f"salt must be {SALT_SIZE} bytes")
    return hashlib.sha256(salt + data).digest()


def format_time(t: datetime) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-28T09:30:00.123Z."""
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _check_fields(e: Entry) -> None:
    if not isinstance(e.index, int) or not 0 <= e.index < 2**53:
        raise EntryError("index must be an integer in [0, 2^53)")
    if (e.index == 0) != (e.prev == b"") or (e.prev and len(e.prev) != 32):
        raise EntryError("prev must be empty at index 0 and a 32-byte hash after")
    if not _TIME.fullmatch(e.time):
        raise EntryError(f"time {e.time!r} is not RFC 3339 UTC with milliseconds")
    if not _KIND.fullmatch(e.kind):
        raise EntryError(f"kind {e.kind!r} is not a lower-case token")
    if not _SENDER.fullmatch(e.sender):
        raise EntryError(f"sender {e.sender!r} is not an organisation id")
    if len(e.commit) != 32:
        raise EntryError("commit must be a 32-byte hash")
    if not _MEDIA.fullmatch(e.media):
        raise EntryError(f"media {e.media!r} is not a media type")
    if e.subject is not None and len(e.subject) != 32:
        raise EntryError("subject must be a 32-byte pseudonym")


def _hash_field(obj: dict[str, object], name: str, allow_empty: bool = False) -> bytes:
    try:
        return read_base64(obj[name], name, size=32, empty=allow_empty)
    except InputRejected as e:
        raise EntryError(str(e)) from None


def parse_entry(data: bytes) -> Entry:
    """Parses entry bytes and insists they are exactly the canonical form."""
    try:
        obj = read_json(data, MAX_ENTRY_BYTES)
    except InputRejected as e:
        raise EntryError(f"entry is not strict JSON: {e}") from None
    if not isinstance(obj, dict):
        raise EntryError("entry is not a JSON object")
    keys = set(obj)
    if not _REQUIRED <= keys or keys - _REQUIRED - _OPTIONAL:
        raise EntryError(f"entry fields {sorted(keys)} are not the version-1 set")
    if obj["v"] != FORMAT_VERSION or type(obj["v"]) is not int:
        raise EntryError(f"unknown entry format version {obj['v']!r}")
    for name in ("time", "kind", "sender", "media"):
        if not isinstance(obj[name], str):
            raise EntryError(f"{name} must be a string")
    if type(obj["index"]) is not int:
        raise EntryError("index must be an integer")
    entry = Entry(
        index=obj["index"],
        prev=_hash_field(obj, "prev", allow_empty=True),
        time=obj["time"],
        kind=obj["kind"],
        sender=obj["sender"],
        commit=_hash_field(obj, "commit"),
        media=obj["media"],
        subject=_hash_field(obj, "subject") if "subject" in obj else None,
    )
    if entry.to_bytes() != data:
        raise EntryError("entry bytes are not in canonical form")
    return entry
