"""When to try a delivery again: exponential backoff from 1 s to 1 h, with jitter, for 24 h.

:func:`next_attempt` is a pure function of the number of attempts made, the time of the first
one and now: the outbox stores those and nothing else, so the schedule survives a restart
unchanged. After attempt n the wait is ``base * 2**(n-1)`` (1 s, 2 s, 4 s, ...) stretched by
up to ``jitter`` (50 %) and then capped at ``cap`` (1 h). Stretching, not shrinking, keeps the
waits non-decreasing: the longest wait after attempt n, 1.5 times its base, is shorter than
the shortest after attempt n+1, twice it. The jitter is drawn from a hash of a per-delivery
``seed`` and the attempt number, so deliveries that failed together spread apart while each
one's schedule stays reproducible.

A peer's ``Retry-After`` moves the next attempt later, never earlier. No attempt is scheduled
past ``first + deadline``; once that moment has passed the answer is ``None``: give up.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["DEFAULT_POLICY", "Policy", "delay", "next_attempt"]


@dataclass(frozen=True)
class Policy:
    """The shape of the schedule; the defaults are the service's."""

    base: timedelta = timedelta(seconds=1)
    cap: timedelta = timedelta(hours=1)
    deadline: timedelta = timedelta(hours=24)
    jitter: float = 0.5  # the wait is stretched by a factor in [1, 1 + jitter)

    def __post_init__(self) -> None:
        if self.base <= timedelta(0) or self.cap < self.base:
            raise ValueError("backoff: 0 < base <= cap")
        if self.deadline <= timedelta(0):
            raise ValueError("backoff: the deadline must be positive")
        if not 0.0 <= self.jitter < 1.0:
            # Under 1 the waits stay non-decreasing (see the module comment).
            raise ValueError("backoff: jitter in [0, 1)")


DEFAULT_POLICY = Policy()


def delay(attempts: int, *, policy: Policy = DEFAULT_POLICY, seed: bytes = b"") -> timedelta:
    """The wait after ``attempts`` failed attempts (1 or more), jitter included."""
    if attempts < 1:
        raise ValueError("backoff: the wait comes after at least one attempt")
    # Past 2**64 times the base every wait is the cap; the float stays finite.
    exponent = min(attempts - 1, 64)
    base_s = policy.base.total_seconds() * 2.0**exponent
    stretched = base_s * (1.0 + policy.jitter * _unit(seed, attempts))
    return timedelta(seconds=min(policy.cap.total_seconds(), stretched))


def next_attempt(
    attempts: int,
    first: datetime,
    now: datetime,
    *,
    policy: Policy = DEFAULT_POLICY,
    seed: bytes = b"",
    retry_after: timedelta | None = None,
) -> datetime | None:
    """When to make attempt ``attempts + 1``, or None to give up.

    ``first`` is when the first attempt was made and ``now`` when the last one failed (both
    timezone-aware); ``retry_after`` is the peer's own ask, if it made one.
    """
    deadline = first + policy.deadline
    if now >= deadline:
        return None
    at = now + delay(attempts, policy=policy, seed=seed)
    if retry_after is not None and retry_after > timedelta(0):
        at = max(at, now + retry_after)
    return min(at, deadline)


def _unit(seed: bytes, attempts: int) -> float:
    """A number in [0, 1) fixed by the seed and the attempt number."""
    digest = hashlib.sha256(seed + b"\x00" + str(attempts).encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64
