"""The retry schedule, for all inputs: non-decreasing waits, the cap, the deadline, 1 s first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.delivery.backoff import DEFAULT_POLICY, Policy, delay, next_attempt

T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
seeds = st.binary(max_size=16)
attempts = st.integers(min_value=1, max_value=10_000)
policies = st.builds(
    Policy,
    base=st.integers(1, 10_000).map(lambda ms: timedelta(milliseconds=ms)),
    cap=st.integers(10_000, 10_000_000).map(lambda ms: timedelta(milliseconds=ms)),
    deadline=st.integers(1, 7 * 24 * 3600).map(lambda s: timedelta(seconds=s)),
    jitter=st.floats(0.0, 0.99),
)


@given(seeds, st.integers(1, 200), policies)
def test_waits_never_shrink_and_never_pass_the_cap(seed: bytes, n: int, policy: Policy) -> None:
    waits = [delay(k, policy=policy, seed=seed) for k in range(n, n + 3)]
    assert waits == sorted(waits)
    assert all(w <= policy.cap for w in waits)
    assert all(w >= min(policy.base, policy.cap) for w in waits)


@given(seeds)
def test_the_first_retry_is_about_a_second(seed: bytes) -> None:
    wait = delay(1, seed=seed)
    assert timedelta(seconds=1) <= wait < timedelta(seconds=1.5)


@given(seeds, attempts)
def test_the_default_cap_is_an_hour(seed: bytes, n: int) -> None:
    assert delay(n, seed=seed) <= timedelta(hours=1)
    if n >= 13:  # 2**12 s is past an hour: every wait from here is the cap
        assert delay(n, seed=seed) == timedelta(hours=1)


@given(
    seeds,
    attempts,
    st.integers(0, 48 * 3600).map(lambda s: timedelta(seconds=s)),
    st.none() | st.integers(0, 10**6).map(lambda s: timedelta(seconds=s)),
)
def test_never_beyond_the_deadline(
    seed: bytes, n: int, elapsed: timedelta, retry_after: timedelta | None
) -> None:
    now = T0 + elapsed
    at = next_attempt(n, T0, now, seed=seed, retry_after=retry_after)
    if elapsed >= timedelta(hours=24):
        assert at is None
    else:
        assert at is not None and now < at <= T0 + timedelta(hours=24)
        if retry_after is not None and now + retry_after <= T0 + timedelta(hours=24):
            assert at >= now + retry_after


def test_a_full_schedule_gives_up_after_24_hours() -> None:
    now, n, waits = T0, 0, []
    while True:
        n += 1
        at = next_attempt(n, T0, now, seed=b"delivery-7")
        if at is None:
            break
        waits.append(at - now)
        now = at
    assert now == T0 + timedelta(hours=24)  # the last attempt is made at the deadline
    assert waits[0] < timedelta(seconds=1.5) and max(waits) == timedelta(hours=1)
    assert 30 < n < 40  # about 12 doubling steps, then hourly


def test_jitter_spreads_deliveries_but_each_is_reproducible() -> None:
    a = [delay(k, seed=b"a") for k in range(1, 10)]
    assert a == [delay(k, seed=b"a") for k in range(1, 10)]
    assert a != [delay(k, seed=b"b") for k in range(1, 10)]


@pytest.mark.parametrize(
    "kw",
    [
        {"base": timedelta(0)},
        {"cap": timedelta(milliseconds=1)},
        {"deadline": timedelta(0)},
        {"jitter": 1.0},
        {"jitter": -0.1},
    ],
)
def test_bad_policies_are_refused(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="backoff"):
        Policy(**kw)  # type: ignore[arg-type]


def test_no_wait_before_any_attempt() -> None:
    with pytest.raises(ValueError):
        delay(0, policy=DEFAULT_POLICY)
