"""Per-client token buckets: 429 + Retry-After for the noisy client, the quiet one still served."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.ratelimit import RateLimit, TokenBuckets, refilled, retry_after_seconds
from tests.api_helpers import open_api


class Clock:
    """A settable monotonic clock, so refill is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_grants_its_burst_then_refuses_until_refilled() -> None:
    clock = Clock()
    buckets = TokenBuckets(RateLimit(rate=2.0, burst=3), clock)
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == 1  # 0.5 s to the next token, rounded up to whole seconds
    clock.now += 0.5
    assert buckets.take("a") == 0
    assert buckets.take("a") >= 1


def test_one_clients_flood_does_not_drain_anothers_bucket() -> None:
    buckets = TokenBuckets(RateLimit(rate=1.0, burst=2), Clock())
    for _ in range(50):
        buckets.take("noisy")
    assert buckets.take("quiet") == 0
    assert buckets.take("quiet") == 0


@pytest.mark.parametrize("rate,burst", [(0.0, 1), (-1.0, 1), (float("inf"), 1), (1.0, 0)])
def test_nonsense_limits_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        RateLimit(rate, burst)


@given(
    rate=st.floats(0.01, 1e4),
    burst=st.integers(1, 1000),
    gaps=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=60),
)
def test_granted_requests_never_exceed_burst_plus_rate_times_time(
    rate: float, burst: int, gaps: list[float]
) -> None:
    """The token-bucket bound: in any run, grants <= burst + rate * elapsed."""
    clock = Clock()
    buckets = TokenBuckets(RateLimit(rate, burst), clock)
    start, granted = clock.now, 0
    for gap in gaps:
        clock.now += gap
        wait = buckets.take("c")
        assert wait >= 0
        granted += wait == 0
    assert granted <= burst + rate * (clock.now - start) + 1e-6


@given(tokens=st.floats(0.0, 0.999), rate=st.floats(0.01, 1e4))
def test_retry_after_is_enough_to_earn_a_token(tokens: float, rate: float) -> None:
    limit = RateLimit(rate, 1)
    wait = retry_after_seconds(tokens, limit)
    assert wait >= 1
    assert refilled(tokens, wait, limit) >= 1.0 - 1e-9


def test_the_service_throttles_the_noisy_client_only(tmp_path: Path) -> None:
    with open_api(tmp_path, rate_limit=RateLimit(rate=0.5, burst=5)) as api:
        noisy, quiet = api.credential(), api.credential()
        answers = [api.client.get("/v1/log/key", headers=noisy) for _ in range(12)]
        statuses = [a.status_code for a in answers]
        assert statuses[:5] == [200] * 5
        assert statuses.count(429) >= 6
        refused = next(a for a in answers if a.status_code == 429)
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["content-type"].startswith("application/fhir+json")
        assert int(refused.headers["content-length"]) == len(refused.content)
        body = refused.json()
        assert f"retry after {refused.headers['Retry-After']} s" in body["issue"][0]["diagnostics"]
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["code"] == "throttled"
        assert api.client.get("/v1/log/key", headers=quiet).status_code == 200


def test_no_limit_configured_means_no_throttling(tmp_path: Path) -> None:
    with open_api(tmp_path) as api:
        h = api.credential()
        assert {api.client.get("/v1/log/key", headers=h).status_code for _ in range(30)} == {200}
