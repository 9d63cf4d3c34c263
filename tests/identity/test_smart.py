"""SMART Backend Services: discovery, the token endpoint, scopes, and bearer use of tokens.

Keys are generated here (ES384, RS384, Ed25519); assertions are signed for real and sent over
HTTP to the app. Every malformed assertion must get 401 invalid_client and issue nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from sqlalchemy import func, select, update

from exchange.cli.main import main
from exchange.errors import MedledgerError
from exchange.http.errors import status_of
from exchange.identity import smart
from exchange.identity.clients import Client, register_client, require_scope
from exchange.store.tables import smart_jti_table, smart_tokens_table
from tests.api_helpers import Api, is_outcome, observation_bundle, open_api

TOKEN_URL = "http://testserver/auth/token"
Key = Any


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Keys:
    es384: Key
    rs384: Key
    ed25519: Key
    other_es384: Key

    def jwks(self) -> dict[str, Any]:
        return {
            "keys": [
                {**json.loads(ECAlgorithm.to_jwk(self.es384.public_key())), "kid": "ec-1"},
                {**json.loads(RSAAlgorithm.to_jwk(self.rs384.public_key())), "kid": "rsa-1"},
                {**json.loads(OKPAlgorithm.to_jwk(self.ed25519.public_key())), "kid": "ed-1"},
            ]
        }


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        ec.generate_private_key(ec.SECP384R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ed25519.Ed25519PrivateKey.generate(),
        ec.generate_private_key(ec.SECP384R1()),
    )


@dataclass
class Backend:
    api: Api
    client_id: str
    keys: Keys

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        base = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": TOKEN_URL,
            "exp": now + 240,
            "iat": now,
            "jti": str(uuid.uuid4()),
        }
        base.update(overrides)
        return {k: v for k, v in base.items() if v is not None}

    def assertion(
        self, alg: str = "ES384", kid: str | None = None, key: Key = None, **claims: Any
    ) -> str:
        key = key or {"ES384": self.keys.es384, "RS384": self.keys.rs384}.get(
            alg, self.keys.ed25519
        )
        kid = kid or {"ES384": "ec-1", "RS384": "rsa-1", "EdDSA": "ed-1"}.get(alg, "ec-1")
        return jwt.encode(self.claims(**claims), key, algorithm=alg, headers={"kid": kid})

    def token_request(self, assertion: str, scope: str = "system/Bundle.cr", **form: str) -> Any:
        data = {
            "grant_type": "client_credentials",
            "client_assertion_type": smart.ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": scope,
            **form,
        }
        return self.api.client.post("/auth/token", data=data)

    def token(self, scope: str = "system/Bundle.cr", **claims: Any) -> dict[str, Any]:
        r = self.token_request(self.assertion(**claims), scope)
        assert r.status_code == 200, r.text
        return r.json()

    def tokens_stored(self) -> int:
        with self.api.services.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(smart_tokens_table)).scalar())


def _register(api: Api, keys: Keys, role: str = "hospital", org: str | None = "hospital-a") -> str:
    client, _ = register_client(
        api.services.engine, f"backend {role}", role, org, json.dumps(keys.jwks())
    )
    return client.client_id


@pytest.fixture
def backend(tmp_path: Path, keys: Keys) -> Iterator[Backend]:
    with open_api(tmp_path / "data") as api:
        yield Backend(api, _register(api, keys), keys)


@pytest.fixture
def backend_any_db(tmp_path: Path, keys: Keys, db_url: str) -> Iterator[Backend]:
    with open_api(tmp_path / "data", db_url) as api:
        yield Backend(api, _register(api, keys), keys)


# --- discovery ---------------------------------------------------------------------------


def test_smart_configuration_names_the_token_endpoint_and_methods(backend: Backend) -> None:
    r = backend.api.client.get("/.well-known/smart-configuration")
    assert r.status_code == 200
    conf = r.json()
    assert conf["token_endpoint"] == TOKEN_URL
    assert conf["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert {"ES384", "RS384"} <= set(conf["token_endpoint_auth_signing_alg_values_supported"])
    assert "none" not in conf["token_endpoint_auth_signing_alg_values_supported"]
    assert conf["grant_types_supported"] == ["client_credentials"]
    assert "system/Bundle.crus" in conf["scopes_supported"]
    assert "client-confidential-asymmetric" in conf["capabilities"]
    assert "permission-v2" in conf["capabilities"]


def test_capability_statement_declares_smart_security(backend: Backend) -> None:
    security = backend.api.client.get("/fhir/metadata").json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    assert "/auth/token" in security["description"]


# --- happy paths -------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES384", "RS384", "EdDSA"])
def test_each_algorithm_gets_a_token_that_submits_a_bundle(backend: Backend, alg: str) -> None:
    answer = backend.token(alg=alg, scope="system/Bundle.cr")
    assert answer["token_type"] == "bearer"
    assert 0 < answer["expires_in"] <= 300
    assert answer["scope"] == "system/Bundle.cr"
    headers = {"Authorization": f"Bearer {answer['access_token']}"}
    body = observation_bundle()
    r = backend.api.post(body, headers)
    assert r.status_code == 201, r.text
    assert backend.api.entry(r.json()["index"]).sender == "hospital-a"
    bundle_id = r.headers["location"].split("/Bundle/")[1].split("/")[0]
    read = backend.api.client.get(f"/fhir/Binary/{bundle_id}", headers=headers)
    assert read.status_code == 200 and read.content == body


def test_token_and_replay_refusal_on_both_databases(backend_any_db: Backend) -> None:
    b = backend_any_db
    assertion = b.assertion(alg="RS384")
    first = b.token_request(assertion)
    assert first.status_code == 200, first.text
    assert first.headers["cache-control"] == "no-store"
    again = b.token_request(assertion)
    assert again.status_code == 401 and again.json()["error"] == "invalid_client"
    assert "already used" in again.json()["error_description"]
    assert b.tokens_stored() == 1


def test_token_is_stored_only_as_its_hash(tmp_path: Path, keys: Keys) -> None:
    data = tmp_path / "data"
    with open_api(data) as api:
        token = Backend(api, _register(api, keys), keys).token()["access_token"]
    stored = b"".join(p.read_bytes() for p in data.glob("medledger.db*"))
    assert token.encode() not in stored
    assert hashlib.sha256(token.encode()).digest() in stored


def test_granted_scopes_are_the_request_cut_to_the_role(backend: Backend) -> None:
    settlement = ("Claim", "ClaimResponse", "Coverage", "DocumentReference",
                  "ExplanationOfBenefit", "Invoice")  # fmt: skip
    assert backend.token(scope="system/*.cruds")["scope"] == " ".join(
        sorted(
            [
                "system/AuditEvent.s",
                "system/Bundle.crus",
                "system/MeasureReport.s",
                "system/Organization.rs",
                "system/Patient.r",
                "system/VerificationResult.s",
                *(f"system/{t}.rs" for t in settlement),
            ]
        )
    )
    assert backend.token(scope="system/Bundle.read")["scope"] == "system/Bundle.rs"
    mixed = backend.token(scope="system/Bundle.c system/Claim.crud system/Consent.rs")
    assert mixed["scope"] == "system/Bundle.c system/Claim.r"


def test_admin_wildcard_and_insurer_scopes(tmp_path: Path, keys: Keys) -> None:
    with open_api(tmp_path / "data") as api:
        admin = Backend(api, _register(api, keys, "admin", None), keys)
        assert admin.token(scope="system/*.rs")["scope"] == "system/*.rs"
        insurer = Backend(api, _register(api, keys, "insurer", "payer-1"), keys)
        assert insurer.token(scope="system/Claim.rs system/Bundle.c")["scope"] == (
            "system/Claim.rs"
        )


def test_purpose_of_use_is_bound_into_the_token(backend: Backend) -> None:
    token = backend.token(purpose_of_use="TREAT")["access_token"]
    grant = smart.lookup_token(backend.api.services.engine, token)
    assert grant is not None and grant.purpose == "TREAT"
    assert grant.scopes == frozenset({"system/Bundle.cr"})
    assert grant.client_id == backend.client_id and grant.role == "hospital"


# --- scope enforcement and bearer use ----------------------------------------------------


def test_a_token_without_create_scope_cannot_submit(backend: Backend) -> None:
    token = backend.token(scope="system/Bundle.r")["access_token"]
    r = backend.api.post(observation_bundle(), {"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    assert "system/Bundle.c" in is_outcome(r)["issue"][0]["diagnostics"]
    assert backend.api.log_size() == 0


def test_a_token_without_read_scope_cannot_read(backend: Backend) -> None:
    create = backend.token(scope="system/Bundle.c")["access_token"]
    r = backend.api.post(observation_bundle(), {"Authorization": f"Bearer {create}"})
    assert r.status_code == 201
    read = backend.api.client.get(
        r.headers["location"], headers={"Authorization": f"Bearer {create}"}
    )
    assert read.status_code == 403
    assert "system/Bundle.r" in is_outcome(read)["issue"][0]["diagnostics"]


def test_expired_and_unknown_tokens_get_401_with_a_bearer_challenge(backend: Backend) -> None:
    engine = backend.api.services.engine
    expired = backend.token()["access_token"]
    assert smart.lookup_token(engine, expired) is not None
    assert smart.lookup_token(engine, expired, now=time.time() + smart.ACCESS_TOKEN_TTL) is None
    # Five minutes passing, without waiting them out: the stored expiry moves into the past.
    with engine.begin() as conn:
        conn.execute(update(smart_tokens_table).values(expires=int(time.time()) - 1))
    for token in (expired, "mla_" + "A" * 43, "not-a-token"):
        r = backend.api.post(observation_bundle(), {"Authorization": f"Bearer {token}"})
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        is_outcome(r)


def test_require_scope_helper() -> None:
    plain = Client("cl-1", "x", "insurer", "payer-1")
    require_scope(plain, "Claim", "search")  # an mlt_ credential: its role decides
    scoped = Client("cl-1", "x", "insurer", "payer-1", frozenset({"system/Claim.rs"}), "HPAYMT")
    require_scope(scoped, "Claim", "read")
    require_scope(scoped, "Claim", "s")
    with pytest.raises(MedledgerError) as e:
        require_scope(scoped, "Consent", "read")
    assert status_of(e.value) == 403 and "system/Consent.r" in e.value.diagnostics
    require_scope(Client("a", "x", "admin", None, frozenset({"system/*.rs"})), "AuditEvent", "read")


# --- refusals ----------------------------------------------------------------------------


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    h = _b64(json.dumps(header).encode())
    p = _b64(json.dumps(claims).encode())
    return f"{h}.{p}.{_b64(signature)}"


def _hmac_signed(alg: str, kid: str, claims: dict[str, Any], secret: bytes) -> str:
    h = _b64(json.dumps({"alg": alg, "kid": kid, "typ": "JWT"}).encode())
    p = _b64(json.dumps(claims).encode())
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384}[alg]
    sig = hmac.new(secret, f"{h}.{p}".encode(), digest).digest()
    return f"{h}.{p}.{_b64(sig)}"


def _flip_signature(token: str) -> str:
    head, payload, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[5] ^= 0x01
    return f"{head}.{payload}.{_b64(bytes(raw))}"


def _public_pem(key: Key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


Maker = Callable[[Backend], str]
NOW = int(time.time())
MALFORMED: dict[str, Maker] = {
    "alg none": lambda b: _unsigned({"alg": "none", "kid": "ec-1"}, b.claims()),
    "alg none lower-case kid-less": lambda b: _unsigned({"alg": "None"}, b.claims()),
    "HS256 keyed with the public PEM": lambda b: _hmac_signed(
        "HS256", "ec-1", b.claims(), _public_pem(b.keys.es384)
    ),
    "HS384 keyed with the JWKS": lambda b: _hmac_signed(
        "HS384", "rsa-1", b.claims(), json.dumps(b.keys.jwks()).encode()
    ),
    "ES256 not allowed": lambda b: jwt.encode(
        b.claims(), ec.generate_private_key(ec.SECP256R1()), "ES256", headers={"kid": "ec-1"}
    ),
    "RS256 not allowed": lambda b: b.assertion("RS256", kid="rsa-1", key=b.keys.rs384),
    "unknown kid": lambda b: b.assertion(kid="ec-9"),
    "missing kid": lambda b: jwt.encode(b.claims(), b.keys.es384, "ES384"),
    "RS384 header naming the EC key": lambda b: b.assertion("RS384", kid="ec-1"),
    "ES384 header naming the RSA key": lambda b: b.assertion(
        "ES384", kid="rsa-1", key=b.keys.es384
    ),
    "EdDSA header naming the EC key": lambda b: b.assertion("EdDSA", kid="ec-1"),
    "signed by an unregistered key": lambda b: b.assertion(key=b.keys.other_es384),
    "bad signature": lambda b: _flip_signature(b.assertion("RS384")),
    "wrong aud": lambda b: b.assertion(aud="http://testserver/token"),
    "aud as a list": lambda b: b.assertion(aud=[TOKEN_URL]),
    "missing aud": lambda b: b.assertion(aud=None),
    "expired": lambda b: b.assertion(exp=NOW - 120, iat=NOW - 300),
    "not yet valid nbf": lambda b: b.assertion(nbf=int(time.time()) + 200),
    "iat in the future": lambda b: b.assertion(iat=int(time.time()) + 200),
    "exp too far ahead": lambda b: b.assertion(exp=int(time.time()) + 900),
    "exp not a number": lambda b: b.assertion(exp="soon"),
    "missing exp": lambda b: b.assertion(exp=None),
    "missing jti": lambda b: b.assertion(jti=None),
    "jti not a string": lambda b: b.assertion(jti=12345),
    "jti too long": lambda b: b.assertion(jti="j" * 300),
    "missing iss": lambda b: b.assertion(iss=None),
    "missing sub": lambda b: b.assertion(sub=None),
    "iss differs from sub": lambda b: b.assertion(sub="cl-someone-else"),
    "unknown client": lambda b: b.assertion(iss="cl-unknown", sub="cl-unknown"),
    "oversized": lambda b: b.assertion(pad="x" * smart.MAX_ASSERTION_CHARS),
    "embedded jwk header": lambda b: jwt.encode(
        b.claims(),
        b.keys.es384,
        "ES384",
        headers={"kid": "ec-1", "jwk": b.keys.jwks()["keys"][0]},
    ),
    "not a JWT": lambda b: "definitely-not-a-jwt",
    "payload not JSON": lambda b: b.assertion().split(".")[0] + "." + _b64(b"{nope") + ".AA",
    "two segments": lambda b: ".".join(b.assertion().split(".")[:2]),
}


# Why each case is refused: the refusal must be for that reason, not an incidental one.
REASONS = {
    "alg none": "not accepted",
    "alg none lower-case kid-less": "not accepted",
    "HS256 keyed with the public PEM": "not accepted",
    "HS384 keyed with the JWKS": "not accepted",
    "ES256 not allowed": "not accepted",
    "RS256 not allowed": "not accepted",
    "unknown kid": "names no key",
    "missing kid": "needs the kid",
    "RS384 header naming the EC key": "needs another type",
    "ES384 header naming the RSA key": "needs another type",
    "EdDSA header naming the EC key": "needs another type",
    "signed by an unregistered key": "Signature verification failed",
    "bad signature": "Signature verification failed",
    "wrong aud": "Audience",
    "aud as a list": "strict",
    "missing aud": '"aud"',
    "expired": "expired",
    "not yet valid nbf": "(nbf)",
    "iat in the future": "(iat)",
    "exp too far ahead": "five minutes",
    "exp not a number": "(exp)",
    "missing exp": '"exp"',
    "missing jti": '"jti"',
    "jti not a string": "JWT ID",
    "jti too long": "1-256",
    "missing iss": "iss and sub",
    "missing sub": "iss and sub",
    "iss differs from sub": "iss and sub",
    "unknown client": "no client",
    "oversized": "exceeds",
    "embedded jwk header": "jwk",
    "not a JWT": "not a JWS",
    "payload not JSON": "not a JWS",
    "two segments": "not a JWS",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_assertions_are_invalid_client(backend: Backend, case: str) -> None:
    r = backend.token_request(MALFORMED[case](backend))
    assert r.status_code == 401, (case, r.text)
    assert r.json()["error"] == "invalid_client", r.text
    assert REASONS[case] in r.json()["error_description"], r.text
    assert backend.tokens_stored() == 0


def test_enough_malformed_cases() -> None:
    assert len(MALFORMED) >= 25 and REASONS.keys() == MALFORMED.keys()


def test_a_client_without_a_jwks_cannot_get_a_token(backend: Backend) -> None:
    client, _ = register_client(backend.api.services.engine, "plain", "hospital", "hospital-a")
    r = backend.token_request(backend.assertion(iss=client.client_id, sub=client.client_id))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_a_refused_assertion_leaves_its_jti_unused(backend: Backend) -> None:
    jti = str(uuid.uuid4())
    assert (
        backend.token_request(backend.assertion(jti=jti), scope="system/Consent.rs").status_code
        == 400
    )
    assert backend.token_request(backend.assertion(jti=jti)).status_code == 200
    with backend.api.services.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(smart_jti_table)).scalar() == 1


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"grant_type": "authorization_code"}, 400, "unsupported_grant_type"),
        ({"grant_type": ""}, 400, "invalid_request"),
        ({"client_assertion_type": "urn:x"}, 401, "invalid_client"),
        ({"client_assertion": ""}, 401, "invalid_client"),
        ({"scope": ""}, 400, "invalid_scope"),
        ({"scope": "patient/Bundle.r"}, 400, "invalid_scope"),
        ({"scope": "system/Bundle.rc"}, 400, "invalid_scope"),
        ({"scope": "system/Consent.rs"}, 400, "invalid_scope"),
    ],
)
def test_token_request_errors(
    backend: Backend, form: dict[str, str], status: int, error: str
) -> None:
    r = backend.token_request(backend.assertion(), **form)
    assert r.status_code == status, r.text
    assert r.json()["error"] == error


def test_bad_purpose_is_invalid_grant(backend: Backend) -> None:
    r = backend.token_request(backend.assertion(purpose_of_use="SELLDATA"))
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_form_must_be_urlencoded_and_unrepeated(backend: Backend) -> None:
    r = backend.api.client.post("/auth/token", json={"grant_type": "client_credentials"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    body = "grant_type=client_credentials&grant_type=client_credentials"
    r = backend.api.client.post(
        "/auth/token",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400 and "twice" in r.json()["error_description"]
    big = "scope=" + "a" * 20_000
    r = backend.api.client.post(
        "/auth/token", content=big, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


# --- JWKS registration -------------------------------------------------------------------


def _private_jwk(keys: Keys) -> dict[str, Any]:
    return {**json.loads(ECAlgorithm.to_jwk(keys.es384)), "kid": "ec-1"}


def test_jwks_validation_refuses_unusable_keys(keys: Keys) -> None:
    good = keys.jwks()["keys"]
    p256 = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))
    small = json.loads(RSAAlgorithm.to_jwk(rsa.generate_private_key(65537, 1024).public_key()))
    cases = {
        "private": [_private_jwk(keys)],
        "kid": [{k: v for k, v in good[0].items() if k != "kid"}],
        "twice": [good[0], {**good[1], "kid": "ec-1"}],
        "secret": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}],
        "not supported": [{"kty": "oct", "kid": "h"}],
        "P-256": [{**p256, "kid": "p"}],
        "2048": [{**small, "kid": "s"}],
        "does not fit": [{**good[0], "alg": "RS384"}],
        "non-empty": [],
    }
    for expected, key_list in cases.items():
        with pytest.raises(smart.JwksError, match=expected):
            smart.validated_jwks(json.dumps({"keys": key_list}))
    with pytest.raises(smart.JwksError, match="not JSON"):
        smart.validated_jwks("{")
    assert json.loads(smart.validated_jwks(json.dumps(keys.jwks())))["keys"]


def test_cli_registers_a_jwks_and_the_client_gets_a_token(
    tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    bad = tmp_path / "private.json"
    bad.write_text(json.dumps({"keys": [_private_jwk(keys)]}))
    args = [
        "clients",
        "add",
        "--data",
        str(data),
        "--name",
        "svc",
        "--role",
        "hospital",
        "--org",
        "hospital-a",
        "--json",
    ]
    assert main([*args, "--jwks", str(bad)]) == 3  # malformed input
    assert "private" in capsys.readouterr().err
    good = tmp_path / "jwks.json"
    good.write_text(json.dumps(keys.jwks()))
    assert main([*args, "--jwks", str(good)]) == 0
    client_id = json.loads(capsys.readouterr().out)["client_id"]
    with open_api(data) as api:
        answer = Backend(api, client_id, keys).token(alg="EdDSA")
        r = api.post(observation_bundle(), {"Authorization": f"Bearer {answer['access_token']}"})
        assert r.status_code == 201


# --- scope rules for all inputs ----------------------------------------------------------

_TYPES = st.sampled_from(["Bundle", "Claim", "Consent", "AuditEvent", "Patient", "*"])
_PERMS = st.sets(st.sampled_from("cruds"), min_size=1).map(smart._ordered)


@settings(max_examples=200, deadline=None)
@given(
    role=st.sampled_from(list(smart.ROLE_SCOPES)),
    asked=st.lists(st.tuples(_TYPES, _PERMS), min_size=1, max_size=5),
    probe_type=_TYPES.filter(lambda t: t != "*"),
    probe=st.sampled_from("cruds"),
)
def test_granted_scopes_never_exceed_request_or_role(
    role: str, asked: list[tuple[str, str]], probe_type: str, probe: str
) -> None:
    request = " ".join(f"system/{t}.{p}" for t, p in asked)
    try:
        granted = smart.grant_scopes(role, request)
    except smart.TokenError as e:
        assert e.error == "invalid_scope"
        return
    for scope in granted:
        smart.parse_scope(scope)  # well-formed v2 syntax
    if smart.scope_permits(granted, probe_type, probe):
        assert smart.scope_permits(request.split(), probe_type, probe)
        allowed = smart.ROLE_SCOPES[role]
        assert probe in allowed.get(probe_type, "") + allowed.get("*", "")
