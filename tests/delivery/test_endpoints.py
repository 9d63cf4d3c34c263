"""Endpoint URLs and credentials: what is accepted, and the field and reason of each refusal."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from exchange.delivery.endpoints import (
    BearerToken,
    EndpointError,
    FhirEndpoint,
    MllpEndpoint,
    SmartCredentials,
    jwk_thumbprint,
    parse_endpoint,
)


def pem(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("https://fhir.example.kr/fhir", "https://fhir.example.kr/fhir"),
        ("https://fhir.example.kr/fhir/", "https://fhir.example.kr/fhir"),
        ("HTTPS://FHIR.Example.KR:8443/r4", "https://fhir.example.kr:8443/r4"),
        ("http://127.0.0.1:8080/fhir", "http://127.0.0.1:8080/fhir"),
        ("http://localhost/fhir", "http://localhost/fhir"),
        ("http://[::1]:9000/fhir", "http://[::1]:9000/fhir"),
    ],
)
def test_fhir_bases(url: str, base: str) -> None:
    endpoint = parse_endpoint(url, token="abc.def-ghi")
    assert isinstance(endpoint, FhirEndpoint) and endpoint.base == base
    assert endpoint.transport == "fhir" and endpoint.credentials == BearerToken("abc.def-ghi")


def test_mllp_endpoint_and_its_message() -> None:
    endpoint = parse_endpoint("mllp://his.example.kr:2575")
    assert endpoint == MllpEndpoint("his.example.kr", 2575, "ORU_R01")
    assert endpoint.transport == "mllp" and endpoint.url == "mllp://his.example.kr:2575"
    assert parse_endpoint("mllp://[::1]:2575/", message="MDM^T02") == MllpEndpoint(
        "::1", 2575, "MDM_T02"
    )
    assert parse_endpoint("mllp://[::1]:2575").url == "mllp://[::1]:2575"


@pytest.mark.parametrize(
    ("url", "kw", "field", "why"),
    [
        ("", {}, "endpoint", "empty"),
        ("ftp://x/fhir", {}, "endpoint", "scheme 'ftp'"),
        ("fhir.example.kr/fhir", {}, "endpoint", "scheme '(none)'"),
        ("https://user:pw@x/fhir", {}, "endpoint", "credentials do not go in the URL"),
        ("https://x/fhir?_format=json", {}, "endpoint", "no query or fragment"),
        ("https://x/fhir#top", {}, "endpoint", "no query or fragment"),
        ("https://x/fh ir", {}, "endpoint", "no spaces"),
        ("https:///fhir", {}, "endpoint", "no host"),
        ("https://x:99999/fhir", {}, "endpoint", "not a URL"),
        ("http://fhir.example.kr/fhir", {}, "endpoint", "only over TLS"),
        ("http://10.0.0.5/fhir", {}, "endpoint", "only over TLS"),
        ("mllp://his.example.kr", {}, "endpoint", "needs a port"),
        ("mllp://his.example.kr:2575/path", {}, "endpoint", "no path"),
        ("mllp://his:2575", {"token": "t"}, "endpoint_token", "no credentials"),
        ("mllp://his:2575", {"client_id": "c"}, "endpoint_client_id", "no credentials"),
        ("mllp://his:2575", {"message": "RDS_O13"}, "message", "ORU_R01, MDM_T02, ADT_A08"),
        ("https://x/fhir", {"message": "ORU_R01"}, "message", "only an mllp://"),
        ("https://x/fhir", {"token": "has space"}, "endpoint_token", "RFC 6750"),
        ("https://x/fhir", {"token": "t", "client_id": "c"}, "endpoint_token", "not both"),
        ("https://x/fhir", {"key_pem": b"x"}, "endpoint_client_id", "needs the client id"),
        ("https://x/fhir", {"client_id": "c"}, "endpoint_key", "needs the private key"),
        ("https://x/fhir", {"client_id": "c", "key_pem": b"junk"}, "endpoint_key", "not a PEM"),
        ("https://x/fhir", {"client_id": "c i", "key_pem": b"x"}, "endpoint_client_id", "ASCII"),
    ],
)
def test_refusals_name_the_field_and_why(
    url: str, kw: dict[str, object], field: str, why: str
) -> None:
    with pytest.raises(EndpointError) as caught:
        parse_endpoint(url, **kw)  # type: ignore[arg-type]
    assert caught.value.field == field, caught.value
    assert why in caught.value.reason, caught.value
    assert str(caught.value).startswith(f"{field}: ")


def test_smart_credentials_from_rsa_and_p384_keys() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    endpoint = parse_endpoint("https://x/fhir", client_id="medledger", key_pem=pem(rsa_key))
    assert isinstance(endpoint, FhirEndpoint)
    creds = endpoint.credentials
    assert isinstance(creds, SmartCredentials) and creds.alg == "RS384"
    # The kid is the RFC 7638 thumbprint of the public JWK that PyJWT writes.
    jwk = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    assert creds.key_id == thumbprint({k: jwk[k] for k in ("e", "kty", "n")})
    ec_key = ec.generate_private_key(ec.SECP384R1())
    creds = parse_endpoint(
        "https://x/fhir", client_id="m", key_pem=pem(ec_key), key_id="k1"
    ).credentials  # type: ignore[union-attr]
    assert isinstance(creds, SmartCredentials) and (creds.alg, creds.key_id) == ("ES384", "k1")
    assert "BEGIN" not in repr(creds)  # the key never shows in logs


def test_thumbprint_matches_rfc_7638_example() -> None:
    """RFC 7638 §3.1: the example RSA key's thumbprint."""
    n = int.from_bytes(
        base64.urlsafe_b64decode(
            b"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tS"
            b"oc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65Y"
            b"GjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrd"
            b"kt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnq"
            b"DKgw=="
        ),
        "big",
    )
    key = rsa.RSAPublicNumbers(65537, n).public_key()

    class Holder:
        def public_key(self) -> rsa.RSAPublicKey:
            return key

    assert jwk_thumbprint(Holder()) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["rsa1024", "p256", "ed25519"])
def test_keys_smart_v2_does_not_sign_with_are_refused(kind: str) -> None:
    key: object = {
        "rsa1024": lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),
        "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
    }[kind]()
    with pytest.raises(EndpointError) as caught:
        parse_endpoint("https://x/fhir", client_id="c", key_pem=pem(key))
    assert caught.value.field == "endpoint_key"


def test_an_encrypted_key_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    locked = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(EndpointError, match="encrypted"):
        parse_endpoint("https://x/fhir", client_id="c", key_pem=locked)


def test_ec_thumbprint_agrees_with_pyjwt_jwk() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    assert jwk_thumbprint(key) == thumbprint({k: jwk[k] for k in ("crv", "kty", "x", "y")})


def thumbprint(members: dict[str, str]) -> str:
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
