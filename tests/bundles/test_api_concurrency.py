"""Concurrent submissions: identical retries collapse into one entry; distinct ones all land."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.api_helpers import Api, observation_bundle, open_api

N = 64


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with open_api(tmp_path / "data") as a:
        yield a


def post_together(api: Api, bodies: list[bytes], headers: dict[str, str]) -> list[httpx.Response]:
    """POSTs every body from its own thread, all released at once."""
    barrier = threading.Barrier(len(bodies))

    def one(body: bytes) -> httpx.Response:
        barrier.wait()
        return api.post(body, headers)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


def test_64_identical_posts_make_one_entry(api: Api) -> None:
    body = observation_bundle(identifier="urn:uuid:c0c0c0c0-0000-4000-8000-000000000064")
    answers = post_together(api, [body] * N, api.credential())
    assert Counter(a.status_code for a in answers) == {201: 1, 200: N - 1}
    assert len({a.headers["location"] for a in answers}) == 1
    assert len({a.json()["index"] for a in answers}) == 1
    assert len({a.json()["salt"] for a in answers}) == 1
    assert api.log_size() == 1 and api.bundle_rows() == 1
    created = next(a for a in answers if a.status_code == 201)
    api.check_receipt(created.json(), body)


def test_64_identical_posts_with_an_idempotency_key(api: Api) -> None:
    headers = {**api.credential(), "Idempotency-Key": "batch-7"}
    answers = post_together(api, [observation_bundle()] * N, headers)
    assert Counter(a.status_code for a in answers) == {201: 1, 200: N - 1}
    assert len({a.headers["location"] for a in answers}) == 1
    assert api.log_size() == 1


def test_64_distinct_posts_each_get_their_own_entry(api: Api) -> None:
    bodies = [observation_bundle(f"{i}.00") for i in range(N)]
    answers = post_together(api, bodies, api.credential())
    assert all(a.status_code == 201 for a in answers)
    assert sorted(a.json()["index"] for a in answers) == list(range(N))
    assert api.log_size() == N and api.bundle_rows() == N
    for answer, body in zip(answers, bodies, strict=True):
        api.check_receipt(answer.json(), body)
