"""SMART clients registered by JWKS URL: the fetch, its cache, and its refusals.

The JWKS is served by a real HTTP server (the standard library's) on a loopback port, whose
answers each test sets: keys, Cache-Control, size, delay, status. The fetcher's clock is the
test's, so cache lifetimes are checked without waiting for them. Every failure to get usable
keys must be a 401 invalid_client at the token endpoint that issues nothing, never a 500.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm

from exchange.identity import jwks_url, smart
from exchange.identity.clients import register_client
from exchange.identity.jwks_url import JwksFetcher, checked_url
from exchange.store.tables import smart_tokens_table
from tests.api_helpers import Api, observation_bundle, open_api
from tests.identity.test_credentials import Capture, cli, listed

TOKEN_URL = "http://testserver/auth/token"
Key = Any


def public_jwk(key: Key, kid: str) -> dict[str, Any]:
    return {**json.loads(ECAlgorithm.to_jwk(key.public_key())), "kid": kid}


@dataclass
class Publisher:
    """What the key server answers, and how often it was asked."""

    body: bytes = b""
    cache_control: str | None = None
    status: int = 200
    delay: float = 0.0  # before the headers
    trickle: float = 0.0  # between each byte of the body
    content_length: bool = True
    encoding: str | None = None  # Content-Encoding, sent whatever the request accepts
    fetches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, *keys: dict[str, Any], cache_control: str | None = None) -> None:
        self.body = json.dumps({"keys": list(keys)}).encode()
        self.cache_control = cache_control


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        pub = self.server.publisher
        with pub.lock:
            pub.fetches += 1
        time.sleep(pub.delay)
        self.send_response(pub.status)
        self.send_header("Content-Type", "application/jwk-set+json")
        if pub.cache_control is not None:
            self.send_header("Cache-Control", pub.cache_control)
        if pub.encoding is not None:
            self.send_header("Content-Encoding", pub.encoding)
        if pub.content_length:
            self.send_header("Content-Length", str(len(pub.body)))
        self.end_headers()
        try:
            if pub.trickle:
                for i in range(len(pub.body)):
                    self.wfile.write(pub.body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(pub.trickle)
            else:
                self.wfile.write(pub.body)
        except OSError:
            pass  # the fetcher gave up and closed the connection

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    publisher: Publisher


@pytest.fixture
def publisher() -> Iterator[tuple[Publisher, str]]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.publisher = Publisher()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.publisher, f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class UrlClient:
    api: Api
    client_id: str
    clock: Clock

    def token(self, key: Key, kid: str) -> Any:
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": TOKEN_URL,
                  "exp": now + 240, "jti": str(uuid.uuid4())}  # fmt: skip
        assertion = jwt.encode(claims, key, algorithm="ES384", headers={"kid": kid})
        return self.api.client.post(
            "/auth/token",
            data={"grant_type": "client_credentials", "client_assertion_type":
                  smart.ASSERTION_TYPE, "client_assertion": assertion,
                  "scope": "system/Bundle.cr"},
        )  # fmt: skip

    def refused(self, key: Key, kid: str, says: str) -> None:
        r = self.token(key, kid)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "invalid_client"
        assert says in r.json()["error_description"], r.json()
        assert r.headers["cache-control"] == "no-store"


@contextmanager
def url_client(
    tmp_path: Path, url: str, db_url: str | None = None, **fetcher: Any
) -> Iterator[UrlClient]:
    with open_api(tmp_path / "data", db_url) as api:
        clock = Clock()
        api.services.jwks = JwksFetcher(clock=clock, **fetcher)
        client, _ = register_client(
            api.services.engine, "keys by url", "hospital", "hospital-a", jwks_url=url
        )
        yield UrlClient(api, client.client_id, clock)


@pytest.fixture
def keys() -> tuple[Key, Key]:
    return ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())


def test_a_token_is_issued_with_a_key_from_the_url(
    tmp_path: Path, publisher: tuple[Publisher, str], keys: tuple[Key, Key], db_url: str
) -> None:
    pub, url = publisher
    pub.publish(public_jwk(keys[0], "a"))
    with url_client(tmp_path, url, db_url) as backend:
        r = backend.token(keys[0], "a")
        assert r.status_code == 200, r.text
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        assert backend.api.post(observation_bundle(), headers).status_code == 201
        backend.refused(keys[1], "a", "Signature verification failed")
    assert pub.fetches == 1


def test_cache_control_max_age_is_honoured(
    tmp_path: Path, publisher: tuple[Publisher, str], keys: tuple[Key, Key]
) -> None:
    pub, url = publisher
    pub.publish(public_jwk(keys[0], "a"), cache_control="public, max-age=60")
    with url_client(tmp_path, url) as backend:
        for _ in range(3):
            assert backend.token(keys[0], "a").status_code == 200
        assert pub.fetches == 1
        backend.clock.now += 59
        assert backend.token(keys[0], "a").status_code == 200
        assert pub.fetches == 1  # still within max-age
        backend.clock.now += 2
        assert backend.token(keys[0], "a").status_code == 200
        assert pub.fetches == 2  # stale: fetched again
        # A withdrawn key stops working once the held copy is stale.
        pub.publish(public_jwk(keys[1], "b"), cache_control="max-age=60")
        assert backend.token(keys[0], "a").status_code == 200
        backend.clock.now += 61
        backend.refused(keys[0], "a", "names no key")
        assert pub.fetches == 3


def test_no_store_fetches_each_time_but_not_more_than_the_floor(
    tmp_path: Path, publisher: tuple[Publisher, str], keys: tuple[Key, Key]
) -> None:
    pub, url = publisher
    pub.publish(public_jwk(keys[0], "a"), cache_control="no-store")
    with url_client(tmp_path, url) as backend:
        assert backend.token(keys[0], "a").status_code == 200
        assert backend.token(keys[0], "a").status_code == 200
        assert pub.fetches == 1  # within MIN_REFETCH of the last fetch
        backend.clock.now += jwks_url.MIN_REFETCH
        assert backend.token(keys[0], "a").status_code == 200
        assert pub.fetches == 2


def test_rotation_is_picked_up_on_an_unknown_kid_and_bogus_kids_do_not_hammer(
    tmp_path: Path, publisher: tuple[Publisher, str], keys: tuple[Key, Key]
) -> None:
    pub, url = publisher
    pub.publish(public_jwk(keys[0], "a"), cache_control="max-age=3600")
    with url_client(tmp_path, url) as backend:
        assert backend.token(keys[0], "a").status_code == 200
        backend.clock.now += jwks_url.MIN_REFETCH
        both = public_jwk(keys[0], "a"), public_jwk(keys[1], "b")
        pub.publish(*both, cache_control="max-age=3600")
        r = backend.token(keys[1], "b")  # b is new: fetched at once, well within max-age
        assert r.status_code == 200, r.text
        assert pub.fetches == 2
        for i in range(30):  # made-up kids, right after a fetch: answered from memory
            backend.refused(keys[1], f"bogus-{i}", "names no key")
        assert pub.fetches == 2
        backend.clock.now += jwks_url.MIN_REFETCH
        for i in range(30):  # later: one fetch for all of them
            backend.refused(keys[1], f"later-{i}", "names no key")
        assert pub.fetches == 3
        assert backend.token(keys[0], "a").status_code == 200
        assert pub.fetches == 3


def test_an_oversize_jwks_is_refused(
    tmp_path: Path, publisher: tuple[Publisher, str], keys: tuple[Key, Key]
) -> None:
    pub, url = publisher
    padding = "x" * jwks_url.MAX_BYTES
    pub.body = json.dumps({"keys": [public_jwk(keys[0], "a")], "pad": padding}).encode()
    with url_client(tmp_path, url, min_refetch=0) as backend:
        backend.refused(keys[0], "a", f"exceeds {jwks_url.MAX_BYTES} bytes")
        pub.content_length = False  # the cap holds while reading, too
        backend.refused(keys[0], "a", f"exceeds {jwks_url.MAX_BYTES} bytes")
        # A small gzip that would unpack past the cap is not unpacked at all.
        pub.body, pub.encoding = gzip.compress(b" " * 10 * jwks_url.MAX_BYTES), "gzip"
        backend.refused(keys[0], "a", "compressed")
        pub.publish(public_jwk(keys[0], "a"))
        pub.encoding = None
        assert backend.token(keys[0], "a").status_code == 200
    assert pub.fetches == 4


def test_a_slow_jwks_is_refused_within_the_timeout(
    tmp_path: Path, publisher: tuple[Publisher, str], keys: tuple[Key, Key]
) -> None:
    pub, url = publisher
    pub.publish(public_jwk(keys[0], "a"))
    with url_client(tmp_path, url, timeout=0.5, min_refetch=0) as backend:
        pub.delay = 2.0  # no headers in time
        started = time.monotonic()
        backend.refused(keys[0], "a", "took over 0.5 s")
        pub.delay, pub.trickle = 0.0, 0.01  # headers at once, then a byte now and then
        backend.refused(keys[0], "a", "took over 0.5 s")
        assert time.monotonic() - started < 3.0
        pub.trickle = 0.0
        assert backend.token(keys[0], "a").status_code == 200


def test_a_url_that_is_down_or_wrong_is_invalid_client_and_not_hammered(
    tmp_path: Path, publisher: tuple[Publisher, str], keys: tuple[Key, Key]
) -> None:
    pub, url = publisher
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/jwks.json"  # nothing listens here
    with url_client(tmp_path, closed) as backend:
        backend.refused(keys[0], "a", "cannot be reached")
        backend.refused(keys[0], "a", "tried again at most every")
    with url_client(tmp_path / "2", url) as backend:
        pub.status, pub.body = 404, b"not here"
        backend.refused(keys[0], "a", "HTTP 404")
        backend.refused(keys[0], "a", "HTTP 404")
        assert pub.fetches == 1  # the failure is remembered for MIN_REFETCH
        backend.clock.now += jwks_url.MIN_REFETCH
        pub.status = 200
        pub.publish(json.loads(ECAlgorithm.to_jwk(keys[0])) | {"kid": "a"})  # a private key
        backend.refused(keys[0], "a", "private")
        backend.clock.now += jwks_url.MIN_REFETCH
        pub.body = b"<html>"
        backend.refused(keys[0], "a", "not JSON")
        with backend.api.services.engine.connect() as conn:
            assert conn.execute(smart_tokens_table.select()).first() is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://keys.example.org/jwks.json", "must be https"),
        ("ftp://127.0.0.1/jwks.json", "not an absolute https URL"),
        ("/jwks.json", "not an absolute https URL"),
        ("https://user:pw@keys.example.org/jwks", "credentials"),
        ("https://keys.example.org/jwks#x", "fragment"),
        ("https://keys.example.org:99999/jwks", "not a URL"),
        ("https://keys.example.org/" + "a" * 2048, "exceeds"),
        ("https://exa mple.org/jwks", "spaces, control or non-ASCII"),
        ("https://keys.example.org/\x00", "spaces, control or non-ASCII"),
        ("https://clés.example.org/jwks", "spaces, control or non-ASCII"),
        ("https://[::1/jwks", "not a URL"),
    ],
)
def test_urls_that_cannot_be_registered(url: str, says: str) -> None:
    with pytest.raises(smart.JwksError, match=says):
        checked_url(url)


@pytest.mark.parametrize("host", ["a..b", "xn--"])
def test_a_host_only_the_request_finds_malformed_is_unavailable(host: str) -> None:
    with pytest.raises(smart.JwksUnavailable, match="cannot be reached"):
        JwksFetcher().keys(checked_url(f"https://{host}/jwks"), "a")


@pytest.mark.parametrize(
    "url",
    [
        "https://keys.example.org/.well-known/jwks.json",
        "http://127.0.0.1:8080/jwks.json",
        "http://127.9.9.9/jwks",
        "http://[::1]:8080/jwks",
        "http://localhost/jwks",
    ],
)
def test_https_and_loopback_http_urls_are_registered(url: str) -> None:
    assert checked_url(url) == url


@given(st.integers(min_value=0, max_value=10**9))
def test_max_age_is_taken_within_the_ceiling(seconds: int) -> None:
    assert jwks_url.max_age(f"max-age={seconds}") == min(seconds, jwks_url.MAX_MAX_AGE)
    assert jwks_url.max_age(f"private, max-age={seconds}, no-store") == 0


def test_max_age_without_a_usable_header() -> None:
    assert jwks_url.max_age(None) == jwks_url.DEFAULT_MAX_AGE
    assert jwks_url.max_age("public") == jwks_url.DEFAULT_MAX_AGE
    assert jwks_url.max_age("max-age=soon") == 0
    assert jwks_url.max_age("no-cache") == 0


# --- the command line ----------------------------------------------------------------------


def test_clients_add_and_rotate_with_a_jwks_url(
    tmp_path: Path, capsys: Capture, publisher: tuple[Publisher, str], keys: tuple[Key, Key]
) -> None:
    pub, url = publisher
    pub.publish(public_jwk(keys[0], "a"))
    data = tmp_path / "data"
    code, out, err = cli(capsys, "clients", "add", "--data", str(data), "--name", "svc",
                         "--role", "hospital", "--org", "hospital-a", "--jwks-url", url,
                         "--json")  # fmt: skip
    assert code == 0, err
    info = json.loads(out)
    assert info["jwks_url"] == url and listed(capsys, data)[info["client_id"]]["smart"]
    with open_api(data) as api:
        backend = UrlClient(api, info["client_id"], Clock())
        old = backend.token(keys[0], "a")
        assert old.status_code == 200, old.text
        jwks = tmp_path / "b.json"
        jwks.write_text(json.dumps({"keys": [public_jwk(keys[1], "b")]}))
        code, _, err = cli(capsys, "clients", "rotate", info["client_id"], "--data", str(data),
                           "--jwks", str(jwks))  # fmt: skip
        assert code == 0, err
        bearer = {"Authorization": f"Bearer {old.json()['access_token']}"}
        assert api.post(observation_bundle(), bearer).status_code == 401
        backend.refused(keys[0], "a", "names no key")
        assert backend.token(keys[1], "b").status_code == 200
        code, _, err = cli(capsys, "clients", "rotate", info["client_id"], "--data", str(data),
                           "--jwks-url", url)  # fmt: skip
        assert code == 0, err
        assert backend.token(keys[0], "a").status_code == 200


@pytest.mark.parametrize(
    ("extra", "code", "says"),
    [
        (["--jwks", "k.json", "--jwks-url", "https://keys.example.org/j"], 1, "not allowed"),
        (["--jwks-url", "http://keys.example.org/jwks"], 3, "must be https"),
        (["--jwks-url", "keys.example.org/jwks"], 3, "not an absolute https URL"),
    ],
)
def test_clients_add_refuses_a_bad_jwks_url(
    tmp_path: Path, capsys: Capture, extra: list[str], code: int, says: str
) -> None:
    data = tmp_path / "data"
    got, out, err = cli(capsys, "clients", "add", "--data", str(data), "--name", "svc",
                        "--role", "hospital", "--org", "hospital-a", *extra)  # fmt: skip
    assert (got, out) == (code, "") and says in err, err
    if data.exists():
        assert listed(capsys, data) == {}
