"""Per-client rate limits: a token bucket per credential, so one noisy engine cannot starve others.

Each client (keyed by a digest of its bearer credential; anonymous callers by peer address)
owns a bucket of `burst` tokens refilled at `rate` tokens per second. A request takes one
token; with none left it is answered 429 with `Retry-After` set to the whole seconds until a
token is back (RFC 9110 §10.2.3, RFC 6585 §4), as a FHIR OperationOutcome with IssueType
`throttled`. The limit is applied before authentication so that a flood of bad credentials
costs no database work.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from exchange.intake.outcome import Issue
from exchange.outcome import outcome_response

# Enough distinct clients for any deployment; beyond it the least recently seen bucket is
# dropped (it would have refilled to full anyway unless it was hit within the last burst/rate s).
MAX_BUCKETS = 10_000
MAX_REFUSALS = 64


@dataclass(frozen=True)
class RateLimit:
    """`rate` requests per second sustained, `burst` at once, per client."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"rate must be a positive number of requests per second: {self.rate}")
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1: {self.burst}")


@dataclass
class _Bucket:
    tokens: float
    stamp: float


def refilled(tokens: float, elapsed: float, limit: RateLimit) -> float:
    """Tokens after `elapsed` seconds of refill, capped at the burst."""
    return min(float(limit.burst), tokens + max(0.0, elapsed) * limit.rate)


def retry_after_seconds(tokens: float, limit: RateLimit) -> int:
    """Whole seconds until one token is available (Retry-After is delta-seconds, at least 1)."""
    return max(1, math.ceil((1.0 - tokens) / limit.rate))


class TokenBuckets:
    """The buckets of all clients; thread-safe (sync endpoints run in a thread pool)."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> int:
        """Takes one token of `key`'s bucket: 0 when granted, else seconds to wait."""
        now = self._clock()
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                b = _Bucket(float(self.limit.burst), now)
                self._buckets[key] = b
                if len(self._buckets) > MAX_BUCKETS:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
                b.tokens = refilled(b.tokens, now - b.stamp, self.limit)
                b.stamp = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return 0
            return retry_after_seconds(b.tokens, self.limit)


def client_key(scope: Scope) -> str:
    """Whose bucket a request draws on: its credential's digest, else its peer address.

    The digest, not the credential, is kept so that the table holds no secrets.
    """
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return "cred:" + hashlib.sha256(value).hexdigest()
    peer = scope.get("client")
    return f"peer:{peer[0] if peer else '-'}"


class RateLimitMiddleware:
    """ASGI middleware applying `TokenBuckets` to every HTTP request under the given prefixes.

    A refusal is answered from bytes made once per distinct Retry-After: a flood of refused
    requests is exactly when the server has the least time to spare for them.
    """

    def __init__(
        self, app: ASGIApp, buckets: TokenBuckets, prefixes: tuple[str, ...] = ("/",)
    ) -> None:
        self.app = app
        self.buckets = buckets
        self.prefixes = prefixes
        self._refusals: dict[int, tuple[list[tuple[bytes, bytes]], bytes]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(client_key(scope))
        if wait == 0:
            await self.app(scope, receive, send)
            return
        headers, body = self._refusal(wait)
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _refusal(self, wait: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
        found = self._refusals.get(wait)
        if found is None:
            limit = self.buckets.limit
            issue = Issue(
                "error",
                "throttled",
                f"this client exceeded its rate limit of {limit.rate:g} requests/s "
                f"(burst {limit.burst}): retry after {wait} s",
            )
            response = outcome_response(429, [issue], {"Retry-After": str(wait)})
            found = (list(response.raw_headers), bytes(response.body))
            if len(self._refusals) < MAX_REFUSALS:  # Retry-After values are few and small
                self._refusals[wait] = found
        return found
