"""The SHL payload: what a link carries, and its ``shlink:/`` and viewer-URL forms.

A SMART Health Link (HL7 SHL, "Construct a SMART Health Link Payload") is a JSON object with
the manifest ``url``, the files' ``key`` (32 random bytes, base64url: 43 characters) and
optionally ``exp`` (epoch seconds), ``flag`` (``L`` long-term, ``P`` passcode, ``U`` direct
file; in alphabetical order; never ``U`` with ``P``), ``label`` (at most 80 characters) and
``v`` (1). Minified, base64url-encoded and prefixed with ``shlink:/`` it is the link; behind
``<base>/shl/view#`` it opens in the viewer, the fragment never reaching a server.

    new_link_id() -> str          # 256 bits, base64url: the manifest URL's secret segment
    new_key() -> bytes            # 32 random bytes: the files' AES-256-GCM key
    Payload(...)                  # validated on construction
    encode(payload) -> str        # "shlink:/..."
    decode(text) -> Payload       # bare or behind a viewer URL; unknown members ignored
    viewer_url(base, payload) -> str

Every refusal is a :class:`ShlError` naming the payload member.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from exchange.shl.errors import ShlError

__all__ = [
    "FLAGS",
    "KEY_SIZE",
    "LABEL_MAX",
    "PREFIX",
    "URL_MAX",
    "VIEWER_PATH",
    "Payload",
    "decode",
    "encode",
    "new_key",
    "new_link_id",
    "viewer_url",
]

PREFIX = "shlink:/"
VIEWER_PATH = "/shl/view"
FLAGS = "LPU"
KEY_SIZE = 32
LABEL_MAX = 80
URL_MAX = 128  # SHL: the payload's url SHALL NOT exceed 128 characters


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, field: str) -> bytes:
    if not text.isascii() or "=" in text or len(text) % 4 == 1:
        raise ShlError(field, "not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ShlError(field, "not unpadded base64url") from None


def new_link_id() -> str:
    """A link id: 32 random bytes as base64url (43 characters), as SHL suggests for the
    manifest URL's path segment (at least 256 bits of entropy)."""
    return b64url(secrets.token_bytes(32))


def new_key() -> bytes:
    return secrets.token_bytes(KEY_SIZE)


@dataclass(frozen=True)
class Payload:
    """One link's payload; the constructor refuses what the specification forbids."""

    url: str
    key: str
    exp: int | None = None
    flag: str = ""
    label: str | None = None
    v: int | None = 1

    def __post_init__(self) -> None:
        _check_url(self.url)
        if len(self.key) != 43 or len(b64url_decode(self.key, "key")) != KEY_SIZE:
            raise ShlError("key", "must be 32 bytes as base64url (43 characters)")
        if self.exp is not None and (
            isinstance(self.exp, bool) or not isinstance(self.exp, int) or self.exp < 0
        ):
            raise ShlError("exp", "must be a non-negative integer of epoch seconds")
        if any(f not in FLAGS for f in self.flag) or "".join(sorted(set(self.flag))) != self.flag:
            raise ShlError("flag", f"letters of {FLAGS!r}, each once, in alphabetical order")
        if "U" in self.flag and "P" in self.flag:
            raise ShlError("flag", "U (direct file) cannot be combined with P (passcode)")
        if self.label is not None and len(self.label) > LABEL_MAX:
            raise ShlError("label", f"at most {LABEL_MAX} characters")
        if self.v is not None and (isinstance(self.v, bool) or self.v != 1):
            raise ShlError("v", "this server speaks SHL version 1")

    @property
    def key_bytes(self) -> bytes:
        return b64url_decode(self.key, "key")

    def to_json(self) -> dict[str, Any]:
        """The payload object, members in the specification's example order, absent ones
        omitted (``v`` too when it is None; 1 is the default)."""
        out: dict[str, Any] = {"url": self.url}
        if self.flag:
            out["flag"] = self.flag
        out["key"] = self.key
        if self.exp is not None:
            out["exp"] = self.exp
        if self.label is not None:
            out["label"] = self.label
        if self.v is not None:
            out["v"] = self.v
        return out


def _check_url(url: object) -> None:
    if not isinstance(url, str):
        raise ShlError("url", "must be a string")
    if len(url) > URL_MAX:
        raise ShlError("url", f"{len(url)} characters; SHL allows at most {URL_MAX}")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ShlError("url", "not a URL") from None
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ShlError("url", "must be an absolute http(s) URL")


def encode(payload: Payload) -> str:
    """The ``shlink:/`` link: the payload minified, UTF-8, base64url without padding."""
    raw = json.dumps(payload.to_json(), separators=(",", ":"), ensure_ascii=False)
    return PREFIX + b64url(raw.encode("utf-8"))


def decode(text: str) -> Payload:
    """Reads a link, bare (``shlink:/…``) or behind a viewer URL (``…#shlink:/…``).

    Members the specification does not define are ignored, as it requires of receivers; so
    are flags other than L, P and U. ``exp`` is read as the viewer reads it: a number of
    epoch seconds, or, as in the specification's own example, a string of epoch milliseconds.
    """
    _, hash_mark, fragment = text.strip().rpartition("#")
    link = fragment if hash_mark else text.strip()
    if not link.startswith(PREFIX):
        raise ShlError("shlink", f"does not start with {PREFIX!r}")
    raw = b64url_decode(link[len(PREFIX) :], "shlink")
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ShlError("shlink", "the payload is not UTF-8 JSON") from None
    if not isinstance(obj, dict):
        raise ShlError("shlink", "the payload is not a JSON object")
    for name in ("url", "key"):
        if not isinstance(obj.get(name), str):
            raise ShlError(name, "required, a string")
    flag = obj.get("flag", "")
    label = obj.get("label")
    if not isinstance(flag, str):
        raise ShlError("flag", "must be a string")
    if label is not None and not isinstance(label, str):
        raise ShlError("label", "must be a string")
    return Payload(
        url=obj["url"],
        key=obj["key"],
        exp=_read_exp(obj.get("exp")),
        flag="".join(f for f in FLAGS if f in flag),
        label=label,
        v=obj.get("v"),
    )


def _read_exp(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        n: object = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, float) and math.isfinite(value):
        n = int(value)
    else:
        raise ShlError("exp", "must be a number of epoch seconds")
    assert isinstance(n, int)
    return n // 1000 if n >= 10**11 else n


def viewer_url(base: str, payload: Payload | str) -> str:
    """``<base>/shl/view#shlink:/…``: the link opened in this server's viewer."""
    link = payload if isinstance(payload, str) else encode(payload)
    if not link.startswith(PREFIX):
        raise ShlError("shlink", f"does not start with {PREFIX!r}")
    return f"{base.rstrip('/')}{VIEWER_PATH}#{link}"
