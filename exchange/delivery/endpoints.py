"""Where a recipient receives deliveries, and how we prove who we are to it.

An endpoint URL is one of two kinds:

- ``https://host[:port]/path``: a FHIR R4 base; the document goes to ``[base]/Bundle``. Plain
  ``http://`` is accepted only for a loopback host (a receiver on the same machine): patient
  data never crosses a network in clear text.
- ``mllp://host:port``: an HL7 v2 receiver speaking MLLP; it takes one of the messages in
  :data:`MLLP_MESSAGES` (``ORU_R01`` unless told otherwise).

A FHIR endpoint authenticates us with a static bearer token (:class:`BearerToken`) or by SMART
Backend Services (:class:`SmartCredentials`: a client id and a private key whose public half
the receiver has registered). An MLLP endpoint takes no credentials: MLLP has none.

:func:`parse_endpoint` checks all of it at once and raises :class:`EndpointError` naming the
field at fault (``endpoint``, ``endpoint_token``, ``endpoint_client_id``, ``endpoint_key``,
``endpoint_key_id`` or ``message``) and why; the CLI prints it against the matching option.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

__all__ = [
    "MLLP_MESSAGES",
    "BearerToken",
    "EndpointError",
    "FhirEndpoint",
    "MllpEndpoint",
    "SmartCredentials",
    "is_loopback",
    "jwk_thumbprint",
    "parse_endpoint",
]

# The HL7 v2.5.1 messages an MLLP recipient may ask for (adapters.hl7v2 builds them).
MLLP_MESSAGES = ("ORU_R01", "MDM_T02", "ADT_A08")

# RFC 6750 §2.1 b64token: what a bearer token may hold.
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
_CLIENT_ID = re.compile(r"^[\x21-\x7e]{1,255}$")
_KEY_ID = re.compile(r"^[\x21-\x7e]{1,255}$")


class EndpointError(ValueError):
    """An endpoint setting that cannot be used: ``field`` names it, ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class BearerToken:
    """A static access token sent as ``Authorization: Bearer <token>``."""

    token: str = field(repr=False)


@dataclass(frozen=True)
class SmartCredentials:
    """SMART Backend Services: a client assertion signed with ``key`` buys an access token.

    ``alg`` is RS384 for an RSA key, ES384 for a P-384 key (the two SMART v2 requires servers
    to accept). ``key_id`` is the JWT header ``kid``: the key's RFC 7638 thumbprint unless the
    receiver registered it under another id.
    """

    client_id: str
    key_pem: bytes = field(repr=False)
    key_id: str
    alg: Literal["RS384", "ES384"]
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = field(repr=False, compare=False)


Credentials = BearerToken | SmartCredentials


@dataclass(frozen=True)
class FhirEndpoint:
    """A FHIR R4 base URL (no trailing slash) and how to authenticate to it."""

    base: str
    credentials: Credentials | None = None

    @property
    def transport(self) -> Literal["fhir"]:
        return "fhir"

    @property
    def url(self) -> str:
        return self.base


@dataclass(frozen=True)
class MllpEndpoint:
    """An HL7 v2 receiver and the message it takes."""

    host: str
    port: int
    message: str = "ORU_R01"

    @property
    def transport(self) -> Literal["mllp"]:
        return "mllp"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mllp://{host}:{self.port}"


Endpoint = FhirEndpoint | MllpEndpoint


def parse_endpoint(
    url: str,
    *,
    token: str | None = None,
    client_id: str | None = None,
    key_pem: bytes | None = None,
    key_id: str | None = None,
    message: str | None = None,
) -> Endpoint:
    """Check an endpoint URL and the settings that go with it; raise :class:`EndpointError`."""
    if not isinstance(url, str) or not url.strip():
        raise EndpointError("endpoint", "empty: give https://…/fhir or mllp://host:port")
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        raise EndpointError("endpoint", "a URL holds no spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise EndpointError("endpoint", f"not a URL: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "mllp"):
        raise EndpointError(
            "endpoint",
            f"scheme {parts.scheme or '(none)'!r}: use https://…/fhir (a FHIR R4 base) "
            "or mllp://host:port (an HL7 v2 receiver)",
        )
    if parts.username is not None or parts.password is not None:
        raise EndpointError(
            "endpoint", "credentials do not go in the URL: give them as endpoint options"
        )
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise EndpointError("endpoint", "a base URL has no query or fragment")
    host = parts.hostname
    if not host:
        raise EndpointError("endpoint", "no host")
    if scheme == "mllp":
        return _mllp(host, port, parts.path, token, client_id, key_pem, key_id, message)
    if message is not None:
        raise EndpointError("message", "only an mllp:// endpoint takes an HL7 v2 message type")
    if scheme == "http" and not is_loopback(host):
        raise EndpointError(
            "endpoint",
            f"plain http:// to {host}: patient data travels only over TLS (https://); "
            "http:// is accepted for a loopback host alone",
        )
    netloc = parts.netloc.lower() if port is None else f"{_bracket(host)}:{port}"
    base = f"{scheme}://{netloc}{parts.path.rstrip('/')}"
    return FhirEndpoint(base, _credentials(token, client_id, key_pem, key_id))


def _mllp(
    host: str,
    port: int | None,
    path: str,
    token: str | None,
    client_id: str | None,
    key_pem: bytes | None,
    key_id: str | None,
    message: str | None,
) -> MllpEndpoint:
    if port is None or port == 0:
        raise EndpointError("endpoint", "an mllp:// endpoint needs a port: mllp://host:port")
    if path not in ("", "/"):
        raise EndpointError("endpoint", f"an mllp:// endpoint has no path (got {path!r})")
    for name, value in (
        ("endpoint_token", token),
        ("endpoint_client_id", client_id),
        ("endpoint_key", key_pem),
        ("endpoint_key_id", key_id),
    ):
        if value is not None:
            raise EndpointError(name, "an mllp:// endpoint takes no credentials (MLLP has none)")
    name = (message or "ORU_R01").replace("^", "_").upper()
    if name not in MLLP_MESSAGES:
        raise EndpointError(
            "message", f"{message!r}: an MLLP recipient takes {', '.join(MLLP_MESSAGES)}"
        )
    return MllpEndpoint(host, port, name)


def _credentials(
    token: str | None, client_id: str | None, key_pem: bytes | None, key_id: str | None
) -> Credentials | None:
    smart = client_id is not None or key_pem is not None or key_id is not None
    if token is not None and smart:
        raise EndpointError(
            "endpoint_token", "give a bearer token or SMART client credentials, not both"
        )
    if token is not None:
        if not _B64TOKEN.match(token):
            raise EndpointError(
                "endpoint_token", "not a bearer token (RFC 6750: letters, digits, -._~+/ then =)"
            )
        return BearerToken(token)
    if not smart:
        return None
    if client_id is None:
        raise EndpointError("endpoint_client_id", "SMART Backend Services needs the client id")
    if not _CLIENT_ID.match(client_id):
        raise EndpointError("endpoint_client_id", "1-255 printable ASCII characters")
    if key_pem is None:
        raise EndpointError("endpoint_key", "SMART Backend Services needs the private key (PEM)")
    key, alg = _private_key(key_pem)
    if key_id is not None and not _KEY_ID.match(key_id):
        raise EndpointError("endpoint_key_id", "1-255 printable ASCII characters")
    return SmartCredentials(client_id, key_pem, key_id or jwk_thumbprint(key), alg, key)


def _private_key(
    pem: bytes,
) -> tuple[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, Literal["RS384", "ES384"]]:
    try:
        key = load_pem_private_key(pem, password=None)
    except TypeError:
        raise EndpointError("endpoint_key", "the key is encrypted: give it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise EndpointError("endpoint_key", f"not a PEM private key: {e}") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise EndpointError("endpoint_key", f"an RSA key of {key.key_size} bits: use 2048+")
        return key, "RS384"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return key, "ES384"
    raise EndpointError(
        "endpoint_key", "SMART v2 signs with RS384 or ES384: give an RSA or a P-384 EC key"
    )


def jwk_thumbprint(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    """The RFC 7638 SHA-256 thumbprint of the key's public JWK, base64url without padding."""
    public = key.public_key()
    members: dict[str, str]
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        members = {"e": _b64_int(numbers.e), "kty": "RSA", "n": _b64_int(numbers.n)}
    else:
        point = public.public_numbers()
        size = (public.curve.key_size + 7) // 8
        members = {
            "crv": "P-384",
            "kty": "EC",
            "x": _b64(point.x.to_bytes(size, "big")),
            "y": _b64(point.y.to_bytes(size, "big")),
        }
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode("ascii")
    return _b64(hashlib.sha256(canonical).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_int(n: int) -> str:
    return _b64(n.to_bytes((n.bit_length() + 7) // 8 or 1, "big"))


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
