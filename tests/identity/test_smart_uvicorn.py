"""SMART Backend Services through a real `medledger serve` process: discovery, token, submit."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tests.api_helpers import observation_bundle
from tests.http.test_serve_uvicorn import cli, serving


def test_backend_service_gets_a_token_and_submits_over_http(tmp_path: Path) -> None:
    data = tmp_path / "data"
    key = ec.generate_private_key(ec.SECP384R1())
    jwks = tmp_path / "jwks.json"
    public = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwks.write_text(json.dumps({"keys": [{**public, "kid": "k1"}]}))
    added = cli(
        "clients",
        "add",
        "--data",
        str(data),
        "--name",
        "svc",
        "--role",
        "hospital",
        "--org",
        "hospital-b",
        "--jwks",
        str(jwks),
        "--json",
    )
    assert added.returncode == 0, added.stderr
    client_id = json.loads(added.stdout)["client_id"]

    with (
        serving(data, "--intake-workers", "0") as (base, _),
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        token_url = http.get("/.well-known/smart-configuration").json()["token_endpoint"]
        assert token_url == f"{base}/auth/token"
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": token_url,
            "exp": now + 120,
            "jti": str(uuid.uuid4()),
            "purpose_of_use": "TREAT",
        }
        assertion = jwt.encode(claims, key, algorithm="ES384", headers={"kid": "k1"})
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
            "scope": "system/Bundle.c",
        }
        r = http.post("/auth/token", data=form)
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        assert http.post("/auth/token", data=form).json()["error"] == "invalid_client"  # replay
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
        submitted = http.post("/fhir/Bundle", content=observation_bundle(), headers=headers)
        assert submitted.status_code == 201, submitted.text
        read = http.get(submitted.headers["location"], headers=headers)
        assert read.status_code == 403 and "system/Bundle.r" in read.text
