"""Absolute URLs come from the configured public base URL, never from what a request claims.

A client controls `Host` and `X-Forwarded-*`. Were the token endpoint's `aud` taken from them,
an assertion minted for another server would be accepted here; were a manifest's or a link's
URL taken from them, a reader could be sent to a host of the sender's choosing.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from exchange.http.public import (
    SCOPE_KEY,
    ForwardedHeaders,
    PublicBase,
    PublicUrlError,
    parse_proxies,
    parse_public_url,
)
from exchange.identity.clients import register_client
from tests.api_helpers import Api, open_api
from tests.http.test_serve_uvicorn import serving
from tests.settlement.test_bulk_export import KIM, kickoff, wait_done
from tests.settlement.test_settlement_index import consent_bundle, settlement_bundle
from tests.settlement.test_settlement_search import insurer, pid, recipient, search, submit

# What a hostile client (or a misconfigured proxy) may put in front of any request.
SPOOFED = {
    "Host": "evil.example",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Prefix": "/elsewhere",
}


def _assertion(api: Api, aud: str) -> tuple[str, str]:
    """(client_id, a signed client assertion for `aud`) of a new SMART hospital client."""
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = {**json.loads(ECAlgorithm.to_jwk(key.public_key())), "kid": "k1"}
    client, _ = register_client(
        api.services.engine, "engine", "hospital", "hospital-a", json.dumps({"keys": [jwk]})
    )
    now = int(time.time())
    claims = {
        "iss": client.client_id, "sub": client.client_id, "aud": aud,
        "exp": now + 120, "jti": str(uuid.uuid4()),
    }  # fmt: skip
    return client.client_id, jwt.encode(claims, key, algorithm="ES384", headers={"kid": "k1"})


def _token_request(api: Api, assertion: str, headers: dict[str, str]) -> Any:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
        "scope": "system/Bundle.c",
    }
    return api.client.post("/auth/token", data=form, headers=headers)


def test_smart_discovery_and_token_audience_ignore_the_host(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        conf = api.client.get("/.well-known/smart-configuration", headers=SPOOFED).json()
        assert "issuer" not in conf  # no sso-openid-connect
        assert conf["token_endpoint"] == "http://testserver/auth/token"
        # An assertion minted for the host the request names is not one for this server.
        _, foreign = _assertion(api, "https://evil.example/elsewhere/auth/token")
        refused = _token_request(api, foreign, SPOOFED)
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
        _, own = _assertion(api, "http://testserver/auth/token")
        assert _token_request(api, own, SPOOFED).status_code == 200


def test_a_configured_public_url_with_a_path_is_the_base_of_every_url(tmp_path: Path) -> None:
    public = "https://ledger.example/medledger"
    with open_api(tmp_path / "data", public_url=public + "/") as api:
        conf = api.client.get("/.well-known/smart-configuration", headers=SPOOFED).json()
        assert "issuer" not in conf
        assert conf["token_endpoint"] == f"{public}/auth/token"
        _, own = _assertion(api, f"{public}/auth/token")
        assert _token_request(api, own, SPOOFED).status_code == 200


def test_export_and_search_urls_ignore_the_host(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        submit(api, settlement_bundle(KIM, "insurer-a"), hospital)
        submit(api, consent_bundle(KIM, "insurer-a"), hospital)
        recipient(api, "insurer-a")
        ins = {**insurer(api), "X-Purpose-Of-Use": "HPAYMT"}

        started = kickoff(api, {**ins, **SPOOFED}, _type="Claim")
        assert started.status_code == 202, started.text
        status_url = started.headers["Content-Location"]
        assert status_url.startswith("http://testserver/fhir/$export-status/")
        done = wait_done(api, status_url, ins)
        manifest = api.client.get(urlsplit(status_url).path, headers={**ins, **SPOOFED}).json()
        assert done.status_code == 200
        assert manifest["request"] == "http://testserver/fhir/$export?_type=Claim"
        assert manifest["output"] and all(
            o["url"].startswith("http://testserver/fhir/$export-status/")
            for o in manifest["output"]
        )

        found = search(api, "Claim", {**ins, **SPOOFED}, **{"patient.identifier": pid(KIM)})
        assert found.status_code == 200, found.text
        links = found.json()["link"]
        assert links and all(
            link["url"].startswith("http://testserver/fhir/Claim?") for link in links
        )


def _discovered(base: str, headers: dict[str, str]) -> str:
    conf = httpx.get(f"{base}/.well-known/smart-configuration", headers=headers, timeout=30)
    assert conf.status_code == 200, conf.text
    return str(conf.json()["token_endpoint"])


def _throttled_after_another(base: str) -> int:
    """Drains the anonymous bucket of a client relayed for 10.0.0.1, then answers what a
    read relayed for 10.0.0.2 gets."""

    def read(ip: str) -> int:
        headers = {"X-Forwarded-For": ip}
        return httpx.get(f"{base}/v1/log/key", headers=headers, timeout=30).status_code

    assert 429 in [read("10.0.0.1") for _ in range(10)]
    return read("10.0.0.2")


def test_serve_takes_forwarded_headers_only_with_trust_proxy(tmp_path: Path) -> None:
    data = tmp_path / "data"
    limits = ("--intake-workers", "0", "--rate-limit", "0.01", "--burst", "5")
    with serving(data, *limits) as (base, _):
        # The default public URL is http://HOST:PORT, whatever the request says.
        assert _discovered(base, SPOOFED) == f"{base}/auth/token"
        # Anonymous reads are limited by the peer's address, not one it claims to relay.
        assert _throttled_after_another(base) == 429

    public = ("--public-url", "https://ledger.example")
    with serving(data, *limits, *public) as (base, _):
        assert _discovered(base, SPOOFED) == "https://ledger.example/auth/token"

    with serving(data, *limits, *public, "--trust-proxy") as (base, _):
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.hospital.example"}
        assert _discovered(base, forwarded) == "https://api.hospital.example/auth/token"
        assert _discovered(base, {}) == "https://ledger.example/auth/token"
        assert _throttled_after_another(base) == 200


@pytest.mark.parametrize(
    "url",
    ["ftp://ledger.example", "ledger.example", "https://", "https://x.example/?a=1",
     "https://user:pw@x.example", "https://x.example:99999"],
)  # fmt: skip
def test_unusable_public_urls_are_refused(url: str) -> None:
    with pytest.raises(PublicUrlError):
        parse_public_url(url)


def _forwarded(peer: str, headers: dict[str, str]) -> dict[str, Any]:
    """The scope the app behind ForwardedHeaders sees for one request."""
    public = PublicBase("https://ledger.example/ml", parse_proxies("10.0.0.0/24,::1"))
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "client": (peer, 5000), "headers": raw}
    asyncio.run(ForwardedHeaders(app, public)(scope, None, None))  # type: ignore[arg-type]
    return seen


def test_forwarded_headers_count_only_from_a_trusted_proxy() -> None:
    chain = {"X-Forwarded-For": "203.0.113.9, 198.51.100.7, 10.0.0.3",
             "X-Forwarded-Proto": "http", "X-Forwarded-Host": "api.example:8443"}  # fmt: skip
    # From the proxy: the nearest hop no trusted proxy holds, and the scheme and host it names.
    via = _forwarded("10.0.0.2", chain)
    assert via["client"] == ("198.51.100.7", 0)
    assert via[SCOPE_KEY] == "http://api.example:8443/ml"
    # From anyone else: untouched.
    direct = _forwarded("198.51.100.7", chain)
    assert direct["client"] == ("198.51.100.7", 5000) and SCOPE_KEY not in direct
    # A host that is not one, or a scheme that is neither http nor https, is not taken.
    odd = _forwarded(
        "::1", {"X-Forwarded-Host": "evil.example/path", "X-Forwarded-Proto": "gopher"}
    )
    assert SCOPE_KEY not in odd
