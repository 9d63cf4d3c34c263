"""SMART discovery as SMART App Launch 2.x "Conformance" describes it, and as a SMART client
nobody here wrote uses it.

`/.well-known/smart-configuration` is served at the server's root and at the FHIR base, with
only scopes some route checks, no `issuer` (no sso-openid-connect) and no response type (no
authorization endpoint, no implicit flow). fhirclient, the SMART Python client, reads the
CapabilityStatement of a `medledger serve` process, finds the token endpoint in its
`oauth-uris` extension by itself, gets a token with a signed assertion and reads with it.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from fhirclient import client as smart_client
from fhirclient.models.bundle import Bundle as FhirclientBundle
from jwt.algorithms import ECAlgorithm

from exchange.identity import smart
from tests.api_helpers import BASE, observation_bundle, open_api
from tests.http.test_serve_uvicorn import cli, serving

PATHS = ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration")


def test_discovery_is_served_at_the_root_and_the_fhir_base(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        answers = [api.client.get(path) for path in PATHS]
    assert all(r.status_code == 200 for r in answers)
    assert all(r.headers["content-type"] == "application/json" for r in answers)
    conf = answers[0].json()
    assert answers[1].json() == conf
    assert conf["token_endpoint"] == f"{BASE}/auth/token"
    assert conf["grant_types_supported"] == ["client_credentials"]
    assert conf["capabilities"] == ["client-confidential-asymmetric", "permission-v2"]
    assert conf["code_challenge_methods_supported"] == ["S256"]
    # Only with sso-openid-connect; no authorization endpoint, so no response type at all.
    assert "sso-openid-connect" not in conf["capabilities"]
    assert not {"issuer", "jwks_uri", "authorization_endpoint", "response_types_supported"} & set(
        conf
    )


def test_every_scope_offered_is_one_some_role_is_granted(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        offered = api.client.get(PATHS[1]).json()["scopes_supported"]
    assert "system/Bundle.crus" in offered and "system/*.rs" in offered
    assert len(offered) == len(set(offered))
    for scope in offered:
        rtype, perms = smart.parse_scope(scope)
        granted = set()
        for role in smart.ROLE_SCOPES:
            try:
                granted |= {smart.parse_scope(g)[1] for g in smart.grant_scopes(role, scope)}
            except smart.TokenError:
                continue
        letters = set("".join(granted))
        assert set(perms) <= letters, f"{scope}: no role is granted {set(perms) - letters}"


def _jwks_client(tmp_path: Path, data: Path) -> tuple[str, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP384R1())
    jwks = tmp_path / "jwks.json"
    public = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwks.write_text(json.dumps({"keys": [{**public, "kid": "k1"}]}))
    added = cli("clients", "add", "--data", str(data), "--name", "svc", "--role", "hospital",
                "--org", "hospital-a", "--jwks", str(jwks), "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    return json.loads(added.stdout)["client_id"], key


def test_fhirclient_finds_the_token_endpoint_in_the_capability_statement(tmp_path: Path) -> None:
    data = tmp_path / "data"
    client_id, key = _jwks_client(tmp_path, data)
    with serving(data, "--intake-workers", "0") as (base, _):
        now = int(time.time())
        claims = {"iss": client_id, "sub": client_id, "aud": f"{base}/auth/token",
                  "exp": now + 120, "jti": str(uuid.uuid4())}  # fmt: skip
        assertion = jwt.encode(claims, key, algorithm="ES384", headers={"kid": "k1"})
        settings = {"app_id": client_id, "api_base": f"{base}/fhir/", "jwt_token": assertion,
                    "scope": "system/Bundle.cr"}  # fmt: skip
        fhir = smart_client.FHIRClient(settings=settings)
        fhir.wants_patient = False  # a backend service: no patient launch scope

        assert fhir.prepare() is False  # the statement read, no token yet
        assert fhir.server.auth._token_uri == f"{base}/auth/token"  # from oauth-uris
        fhir.authorize()  # client_credentials with the assertion, at the discovered URL
        assert fhir.ready

        token = fhir.server.auth.access_token
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
        submitted = httpx.post(f"{base}/fhir/Bundle", content=observation_bundle(),
                               headers=headers, timeout=30)  # fmt: skip
        assert submitted.status_code == 201, submitted.text
        bundle_id = submitted.json()["id"]
        read = FhirclientBundle.read_from(f"Bundle/{bundle_id}", fhir.server)
        assert read.id == bundle_id and read.meta.versionId == "1"
