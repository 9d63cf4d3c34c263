"""`POST /auth/token` answers every request with 200 or an RFC 6749 error, never a 500.

The assertions are signed for real (ES384) over headers and claims hypothesis chooses: any
JSON value where a string, a number or a list is expected, so every check of the endpoint is
reached with values of the wrong type. The form fields are arbitrary text.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm

from exchange.identity import smart
from exchange.identity.clients import register_client
from tests.api_helpers import Api, open_api

TOKEN_URL = "http://testserver/auth/token"
ERRORS = {
    400: {"invalid_request", "invalid_scope", "invalid_grant", "unsupported_grant_type"},
    401: {"invalid_client"},
}
CLAIMS = ("iss", "sub", "aud", "exp", "nbf", "iat", "jti", "purpose_of_use")
HEADER_MEMBERS = ("alg", "kid", "typ", "crit", "jku", "jwk", "x5u")
_GONE = object()  # a member left out of the header or the claims

# JSON values as a JWT library reads them back: NaN and the infinities included, which
# Python's json module writes and reads although RFC 8259 has no such numbers.
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Signer:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.key = ec.generate_private_key(ec.SECP384R1())
        jwk = {**json.loads(ECAlgorithm.to_jwk(self.key.public_key())), "kid": "ec-1"}
        client, _ = register_client(
            api.services.engine, "fuzzed", "insurer", "payer-1", json.dumps({"keys": [jwk]})
        )
        self.client_id = client.client_id

    def assertion(self, header: dict[str, Any], claims: dict[str, Any]) -> str:
        """A JWS signed with the registered ES384 key, whatever the header says."""
        h = _b64(json.dumps(header).encode())
        p = _b64(json.dumps(claims).encode())
        der = self.key.sign(f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA384()))
        return f"{h}.{p}.{_b64(_der_to_raw(der))}"

    def good_claims(self) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": TOKEN_URL,
            "exp": now + 240,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "purpose_of_use": "HPAYMT",
        }

    def post(self, form: dict[str, str]) -> Any:
        return self.api.client.post("/auth/token", data=form)


def _der_to_raw(der: bytes) -> bytes:
    # JWS ES384 signatures are r || s, 48 bytes each (RFC 7518 section 3.4), not DER.
    r, s = decode_dss_signature(der)
    return r.to_bytes(48, "big") + s.to_bytes(48, "big")


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Signer]:
    data: Path = tmp_path_factory.mktemp("token-properties") / "data"
    with open_api(data, None) as api:
        yield Signer(api)


def _form(assertion: str, **fields: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": smart.ASSERTION_TYPE,
        "client_assertion": assertion,
        "scope": "system/Claim.rs",
        **fields,
    }


def _is_oauth_answer(r: Any) -> None:
    assert r.status_code in (200, 400, 401), (r.status_code, r.text)
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    if r.status_code == 200:
        assert body["access_token"].startswith(smart.ACCESS_TOKEN_PREFIX)
    else:
        assert body["error"] in ERRORS[r.status_code], body
        assert isinstance(body["error_description"], str)


def test_a_valid_assertion_gets_a_token(signer: Signer) -> None:
    header = {"alg": "ES384", "kid": "ec-1", "typ": "JWT"}
    r = signer.post(_form(signer.assertion(header, signer.good_claims())))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("value", [["HPAYMT"], {"code": "HPAYMT"}, 7, True, 1.5, None])
def test_purpose_of_use_that_is_not_a_code_is_invalid_request(signer: Signer, value: Any) -> None:
    header = {"alg": "ES384", "kid": "ec-1", "typ": "JWT"}
    claims = {**signer.good_claims(), "purpose_of_use": value}
    r = signer.post(_form(signer.assertion(header, claims)))
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request"
    assert "purpose_of_use" in r.json()["error_description"]


_MEMBER_VALUE = JSONISH | st.just(_GONE)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    header_changes=st.dictionaries(st.sampled_from(HEADER_MEMBERS), _MEMBER_VALUE, max_size=3),
    claim_changes=st.dictionaries(st.sampled_from(CLAIMS), _MEMBER_VALUE, max_size=3),
)
def test_no_claim_or_header_value_gets_a_500(
    signer: Signer, header_changes: dict[str, Any], claim_changes: dict[str, Any]
) -> None:
    header: dict[str, Any] = {"alg": "ES384", "kid": "ec-1", "typ": "JWT"}
    claims = signer.good_claims()
    for target, changes in ((header, header_changes), (claims, claim_changes)):
        for name, value in changes.items():
            if value is _GONE:
                target.pop(name, None)
            else:
                target[name] = value
    _is_oauth_answer(signer.post(_form(signer.assertion(header, claims))))


_FIELD = st.text(max_size=40) | st.sampled_from(
    ["client_credentials", smart.ASSERTION_TYPE, "system/Claim.rs", "system/*.rs"]
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    fields=st.dictionaries(
        st.sampled_from(["grant_type", "client_assertion_type", "scope", "client_assertion"])
        | st.text(max_size=8),
        _FIELD,
        max_size=4,
    ),
    dropped=st.sets(st.sampled_from(["grant_type", "client_assertion_type", "scope"])),
)
def test_no_form_field_value_gets_a_500(
    signer: Signer, fields: dict[str, str], dropped: set[str]
) -> None:
    header = {"alg": "ES384", "kid": "ec-1", "typ": "JWT"}
    form = _form(signer.assertion(header, signer.good_claims()), **fields)
    for name in dropped:
        form.pop(name, None)
    _is_oauth_answer(signer.post(form))
