"""Client JWKS registered by URL: the URL rule, and the fetch with its cache.

A SMART backend client may register where its keys are published (`medledger clients add
--jwks-url URL`) instead of the keys themselves, and rotate them there without telling anyone.
The server fetches the JWKS when it needs it: with a short timeout, a size cap, no redirects
and no proxy from the environment, and holds it as long as the answer's `Cache-Control` says
(max-age; `no-store` and `no-cache` as max-age=0), within a floor and a ceiling. An assertion
naming a kid the held keys lack makes it fetch again at once, but at most once every
MIN_REFETCH seconds per URL, so a flood of made-up kids cannot make the server hammer the URL;
a failed fetch is remembered for as long, and answered from memory.

The URL is https, except on a loopback host (127.0.0.0/8, ::1, localhost), where http serves
a key publisher on the same machine. The registration is an administrator's act: the URL is
theirs to choose, and the fetch never follows a redirect elsewhere.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from exchange.identity.smart import JwksError, JwksUnavailable, validated_jwks

MAX_URL_CHARS = 2048
TIMEOUT = 3.0  # seconds for the whole fetch, connect to last byte
MAX_BYTES = 64 * 1024  # MAX_JWKS_KEYS RSA-4096 keys are about 20 KiB
DEFAULT_MAX_AGE = 300  # without a Cache-Control max-age
MAX_MAX_AGE = 3600  # a key the client withdrew is trusted at most this long
MIN_REFETCH = 10.0  # at most one fetch per URL in this many seconds, whatever asks for it

# Uncompressed only, so the size cap is the size held in memory.
_HEADERS = {"Accept": "application/jwk-set+json, application/json", "Accept-Encoding": "identity"}
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def checked_url(url: str) -> str:
    """The URL, if it may be registered: absolute https (http on a loopback host), with a host,
    no credentials and no fragment. JwksError says what is wrong."""
    if len(url) > MAX_URL_CHARS:
        raise JwksError(f"the JWKS URL exceeds {MAX_URL_CHARS} characters")
    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        raise JwksError(
            f"the JWKS URL {url!r} holds spaces, control or non-ASCII characters "
            "(percent-encode them; a host in punycode)"
        )
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises on a malformed port)
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as e:
        raise JwksError(f"the JWKS URL {url!r} is not a URL: {e}") from None
    if parts.scheme not in ("https", "http") or not host:
        raise JwksError(f"the JWKS URL {url!r} is not an absolute https URL")
    if parts.username is not None or parts.password is not None:
        raise JwksError("the JWKS URL may not carry credentials")
    if parts.fragment:
        raise JwksError("the JWKS URL may not carry a fragment")
    if parts.scheme == "http" and not _loopback(host):
        raise JwksError(
            f"the JWKS URL {url!r} must be https: plain http is accepted only on a loopback host"
        )
    return url


def _loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def max_age(cache_control: str | None) -> int:
    """How long an answer may be held, in seconds, from its Cache-Control header."""
    seconds = DEFAULT_MAX_AGE
    for directive in (cache_control or "").lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name in ("no-store", "no-cache"):
            return 0
        if name == "max-age":
            value = value.strip().strip('"')
            seconds = int(value) if value.isdigit() else 0  # RFC 9111 §4.2.1: invalid is stale
    return min(seconds, MAX_MAX_AGE)


@dataclass
class _Held:
    """What is known of one URL: its keys while they may be used, the last fetch's outcome."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    keys: list[dict[str, Any]] | None = None
    fresh_until: float = 0.0
    fetched: float | None = None  # when the last fetch started (monotonic)
    error: str | None = None  # why the last fetch failed; None: it did not


class JwksFetcher:
    """The JWKS at registered URLs, fetched and cached per process (smart.RemoteKeys).

    Thread-safe; one fetch per URL at a time, the others waiting for its answer.
    """

    def __init__(
        self,
        *,
        timeout: float = TIMEOUT,
        max_bytes: int = MAX_BYTES,
        min_refetch: float = MIN_REFETCH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.min_refetch = min_refetch
        self.clock = clock
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()

    def keys(self, url: str, kid: str) -> list[dict[str, Any]]:
        """The keys at `url`, fetched unless held keys are fresh and include `kid`.

        Raises JwksUnavailable when the URL cannot give a usable JWKS. Within MIN_REFETCH of
        the last fetch nothing is fetched: the held keys are answered (they may lack `kid`),
        or that fetch's failure.
        """
        with self._lock:
            held = self._held.setdefault(url, _Held())
        with held.lock:
            now = self.clock()
            if held.keys is not None and now < held.fresh_until and _has(held.keys, kid):
                return held.keys
            if held.fetched is not None and now < held.fetched + self.min_refetch:
                if held.error is not None:
                    raise JwksUnavailable(url, f"{held.error} (tried again at most every "
                                          f"{self.min_refetch:g} s)")  # fmt: skip
                return held.keys or []
            held.fetched = now
            try:
                keys, seconds = self._fetch(url)
            except JwksUnavailable as e:
                held.error = e.why
                raise
            held.keys, held.fresh_until, held.error = keys, now + seconds, None
            return keys

    def _fetch(self, url: str) -> tuple[list[dict[str, Any]], int]:
        try:
            checked_url(url)
        except JwksError as e:
            raise JwksUnavailable(url, str(e)) from None
        deadline = time.monotonic() + self.timeout
        body = bytearray()
        http = httpx.Client(timeout=self.timeout, follow_redirects=False, trust_env=False)
        try:
            with http, http.stream("GET", url, headers=_HEADERS) as r:
                if r.status_code != 200:
                    raise JwksUnavailable(url, f"it answered HTTP {r.status_code}")
                if r.headers.get("content-encoding", "identity").lower() != "identity":
                    raise JwksUnavailable(url, "it answered compressed, though asked not to")
                length = r.headers.get("content-length")
                if length is not None and length.isdigit() and int(length) > self.max_bytes:
                    raise JwksUnavailable(url, f"its JWKS exceeds {self.max_bytes} bytes")
                for chunk in r.iter_raw():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise JwksUnavailable(url, f"its JWKS exceeds {self.max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise JwksUnavailable(url, f"it took over {self.timeout:g} s to answer")
                cache_control = r.headers.get("cache-control")
        except httpx.TimeoutException:
            raise JwksUnavailable(url, f"it took over {self.timeout:g} s to answer") from None
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, ValueError) as e:
            # ValueError: a host IDNA cannot encode (a label empty or malformed) is found
            # only when the request is made.
            raise JwksUnavailable(url, f"it cannot be reached: {type(e).__name__} {e}") from None
        try:
            text = bytes(body).decode("utf-8")
            keys = json.loads(validated_jwks(text))["keys"]
        except (UnicodeDecodeError, JwksError) as e:
            raise JwksUnavailable(url, f"its JWKS is not usable: {e}") from None
        return list(keys), max_age(cache_control)


def _has(keys: list[dict[str, Any]], kid: str) -> bool:
    return any(k.get("kid") == kid for k in keys)
