"""Per-client token buckets: 429 + Retry-After for the noisy client, the quiet one still served."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm

from exchange.http.ratelimit import RateLimit, TokenBuckets, refilled, retry_after_seconds
from exchange.identity.clients import register_client
from tests.api_helpers import Api, open_api


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


# --- whose bucket: the authenticated client, else the peer ----------------------------------


def _statuses(api: Api, authorizations: list[str]) -> list[int]:
    """Authenticated reads (of a Bundle that does not exist: 404 once admitted)."""
    return [
        api.client.get("/fhir/Bundle/none", headers={"Authorization": a}).status_code
        for a in authorizations
    ]


def test_header_variants_of_one_credential_share_one_bucket(tmp_path: Path) -> None:
    with open_api(tmp_path, rate_limit=RateLimit(rate=0.01, burst=4)) as api:
        token = api.credential()["Authorization"].removeprefix("Bearer ")
        variants = [f"Bearer {token}", f"bearer  {token}", f"BEARER {token}", f"Bearer {token} "]
        assert _statuses(api, [*variants, variants[1]]) == [404, 404, 404, 404, 429]


def _smart_token(api: Api, client_id: str, key: ec.EllipticCurvePrivateKey) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id, "sub": client_id, "aud": "http://testserver/auth/token",
        "exp": now + 120, "jti": str(uuid.uuid4()),
    }  # fmt: skip
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": jwt.encode(claims, key, algorithm="ES384", headers={"kid": "k1"}),
        "scope": "system/Bundle.c",
    }
    answer = api.client.post("/auth/token", data=form)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def test_two_tokens_of_one_smart_client_share_one_bucket(tmp_path: Path) -> None:
    with open_api(tmp_path, rate_limit=RateLimit(rate=0.01, burst=6)) as api:
        key = ec.generate_private_key(ec.SECP384R1())
        jwk = {**json.loads(ECAlgorithm.to_jwk(key.public_key())), "kid": "k1"}
        client, _ = register_client(
            api.services.engine, "engine", "hospital", "hospital-a", json.dumps({"keys": [jwk]})
        )
        first, second = (_smart_token(api, client.client_id, key) for _ in range(2))
        # Each token may do no Bundle read (403): what matters is whose bucket pays.
        answers = _statuses(api, [f"Bearer {t}" for t in [first, second] * 3 + [first]])
        assert answers == [403] * 6 + [429]


def test_unknown_credentials_draw_on_their_peers_bucket(tmp_path: Path) -> None:
    with open_api(tmp_path, rate_limit=RateLimit(rate=0.01, burst=5)) as api:
        known = api.credential()["Authorization"]
        assert _statuses(api, [known]) == [404]
        guesses = [f"Bearer mlt_{secrets.token_urlsafe(32)}" for _ in range(8)]
        # One peer gets its burst of guesses; fresh credentials do not buy fresh buckets.
        assert _statuses(api, guesses) == [401] * 5 + [429] * 3
        assert _statuses(api, [known]) == [404]  # a client it already knows keeps its own
