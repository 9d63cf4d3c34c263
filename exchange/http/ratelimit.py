"""Per-client rate limits: a token bucket per client, so one noisy engine cannot starve others.

Each authenticated client owns a bucket of `burst` tokens refilled at `rate` tokens per
second; anonymous callers share their peer address's. A request takes one token; with none
left it is answered 429 with `Retry-After` set to the whole seconds until a token is back
(RFC 9110 §10.2.3, RFC 6585 §4), as a FHIR OperationOutcome with IssueType `throttled`.

A bucket belongs to the client, not to the header: `Bearer x` and `bearer  x`, or two access
tokens of one SMART client, draw on the same one. The limiter remembers which client each
credential it has seen valid belongs to (by digest), so a known client's request, and its
refusal, cost a hash and two lookups. A credential it does not know yet is first checked
against its peer's bucket, then resolved (one database read at most); a bad one is charged to
the peer, so a flood of invented credentials buys no fresh buckets and, once the peer's bucket
is empty, no database work.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Receive, Scope, Send

from exchange.http.errors import outcome_response
from exchange.http.guards import bearer_token
from exchange.intake.outcome import Issue
from ledger.errors import LedgerUnavailable

log = logging.getLogger("medledger.exchange")

# Enough distinct clients for any deployment; beyond it the least recently seen bucket is
# dropped (it would have refilled to full anyway unless it was hit within the last burst/rate s).
MAX_BUCKETS = 10_000
MAX_REFUSALS = 64
# How long a credential seen valid is taken for its client without asking again. A revoked
# credential keeps drawing on its former client's bucket this long (and is refused 401).
KNOWN_FOR = 60.0


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

    def waiting(self, key: str) -> int:
        """Seconds until `key`'s bucket holds a token (0: it holds one now); takes none."""
        now = self._clock()
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                return 0
            tokens = refilled(b.tokens, now - b.stamp, self.limit)
            return 0 if tokens >= 1.0 else retry_after_seconds(tokens, self.limit)


def peer_key(scope: Scope) -> str:
    peer = scope.get("client")
    return f"peer:{peer[0] if peer else '-'}"


def credential(scope: Scope) -> str | None:
    """The bearer credential of a request, read as authentication reads it."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return bearer_token(value.decode("latin-1"))
    return None


# Resolves a credential to the id of its client, or None when it is not valid.
Identify = Callable[[str], Awaitable[str | None]]


class RateLimitMiddleware:
    """ASGI middleware applying `TokenBuckets` to every HTTP request under the given prefixes.

    A refusal is answered from bytes made once per distinct Retry-After: a flood of refused
    requests is exactly when the server has the least time to spare for them.
    """

    def __init__(
        self,
        app: ASGIApp,
        buckets: TokenBuckets,
        identify: Identify,
        prefixes: tuple[str, ...] = ("/",),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.buckets = buckets
        self.identify = identify
        self.prefixes = prefixes
        self._clock = clock
        self._refusals: dict[int, tuple[list[tuple[bytes, bytes]], bytes]] = {}
        # credential digest -> (client id, until when that is taken as known)
        self._known: OrderedDict[bytes, tuple[str, float]] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        token = credential(scope)
        if token is None:
            key = peer_key(scope)
        else:
            digest = hashlib.sha256(token.encode()).digest()
            key = self._known_client(digest) or await self._resolve(scope, token, digest)
        wait = self.buckets.take(key)
        if wait == 0:
            await self.app(scope, receive, send)
            return
        await self._refuse(send, wait)

    def _known_client(self, digest: bytes) -> str | None:
        found = self._known.get(digest)
        if found is None or found[1] < self._clock():
            return None
        return found[0]

    async def _resolve(self, scope: Scope, token: str, digest: bytes) -> str:
        """The bucket of a credential not (or no longer) known: its client's when valid, else
        its peer's. Asked only while the peer's bucket holds a token (see the module doc)."""
        peer = peer_key(scope)
        if self.buckets.waiting(peer):
            return peer
        try:
            client_id = await self.identify(token)
        except (SQLAlchemyError, LedgerUnavailable) as e:
            log.warning("rate limit: cannot resolve a credential: %s", e)
            return peer  # the request itself meets the same failure, answered 503
        if client_id is None:
            return peer
        key = "client:" + client_id
        self._known[digest] = (key, self._clock() + KNOWN_FOR)
        self._known.move_to_end(digest)
        if len(self._known) > MAX_BUCKETS:
            self._known.popitem(last=False)
        return key

    async def _refuse(self, send: Send, wait: int) -> None:
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
