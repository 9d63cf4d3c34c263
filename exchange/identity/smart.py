"""SMART Backend Services: client assertions, access tokens and SMART v2 system scopes.

A backend client registers a public JWKS (`medledger clients add --jwks FILE`), or the URL it
is published at (`--jwks-url URL`, fetched and cached by exchange.identity.jwks_url), signs a short
JWT with its private key (SMART App Launch 2.x, Backend Services, "Authenticating to the token
endpoint"; RFC 7523 §3), and trades it at `POST /auth/token` for an opaque access token of at
most five minutes, bound to the granted scopes and to the `purpose_of_use` the assertion names.
The database keeps each token's SHA-256 only, and every accepted `jti` until it expires, so an
assertion cannot be replayed.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
from sqlalchemy import Engine, Select, delete, insert, select
from sqlalchemy.exc import IntegrityError

from exchange.store.tables import (
    clients_table,
    smart_jti_table,
    smart_jwks_table,
    smart_tokens_table,
)
from ledger import store

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
GRANT_TYPE = "client_credentials"
TOKEN_PATH = "/auth/token"
ACCESS_TOKEN_PREFIX = "mla_"
ACCESS_TOKEN_TTL = 300  # SMART Backend Services: access tokens SHOULD live <= 5 minutes
MAX_ASSERTION_LIFETIME = 300  # spec: exp no more than five minutes in the future
LEEWAY = 30  # seconds of clock skew tolerated on exp / nbf / iat
MAX_ASSERTION_CHARS = 8192  # an RS384 assertion with a 4096-bit key is ~1 KiB
MAX_JTI_CHARS = 256
MAX_JWKS_KEYS = 20

# The key type each allowed algorithm must be used with (RFC 7518 §3.1, RFC 8037 §3.1).
# ES384 and RS384 are required by SMART Backend Services; EdDSA is optional.
KEY_TYPES: Mapping[str, tuple[str, str | None]] = {
    "ES384": ("EC", "P-384"),
    "RS384": ("RSA", None),
    "EdDSA": ("OKP", "Ed25519"),
}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_MIN_RSA_BITS = 2048

# v3-ActReason purpose-of-use codes a client may bind into its token
# (terminology.hl7.org CodeSystem-v3-ActReason, _PurposeOfUse).
PURPOSES = frozenset(
    {
        "TREAT",
        "ETREAT",
        "CAREMGT",
        "POPHLTH",
        "HPAYMT",
        "CLMATTCH",
        "COVAUTH",
        "COVERAGE",
        "ELIGDET",
        "ELIGVER",
        "ENROLLM",
        "HOPERAT",
        "HSYSADMIN",
        "HRESCH",
        "CLINTRCH",
        "PUBHLTH",
        "HLEGAL",
        "HCOMPL",
        "HACCRED",
        "HQUALIMP",
        "PATRQT",
        "FAMRQT",
        "PWATRNY",
        "SUPNWK",
        "TRAIN",
        "HMARKT",
        "HDIRECT",
        "PATADMIN",
        "PATSFTY",
        "PTR",
        "TREATDS",
    }
)

# SMART v2 permissions, in their required order (SMART App Launch 2.x, "Scopes for requesting
# FHIR resources": c, r, u, d, s).
PERMISSIONS = "cruds"
INTERACTIONS = {"create": "c", "read": "r", "update": "u", "delete": "d", "search": "s"}
_V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"system/(\*|[A-Z][A-Za-z]{0,63})\.([a-z*]{1,5})")

# What each role may be granted: resource type (or "*") -> permissions. Exactly what the
# routes each role may call need (each route's RoleGuard declares its scope; the access
# matrix test holds the two together, and docs/smart.md shows both).
_SETTLEMENT = ("Claim", "ClaimResponse", "Coverage", "DocumentReference", "ExplanationOfBenefit",
               "Invoice")  # fmt: skip
_REGISTRY = {"Organization": "rs", "MeasureReport": "s", "VerificationResult": "s"}
ROLE_SCOPES: Mapping[str, Mapping[str, str]] = {
    "hospital": {
        "Bundle": "crus",  # submit, replace, read, and the recall search (/v1/trace)
        "Patient": "r",  # Patient/$summary, and SMART Health Links to the summary
        "AuditEvent": "s",  # the accounting of disclosures
        # its own settlement resources: searched, and exported (read)
        **{t: "rs" for t in _SETTLEMENT},
        **_REGISTRY,
    },
    "insurer": {**{t: "rs" for t in _SETTLEMENT}, **_REGISTRY},
    "auditor": dict(_REGISTRY),
    # recall counts and dispensing events (search), the RWD export of one product and a
    # Bundle's ICSR (read, under research consent), and the registry it supervises
    "regulator": {"Bundle": "rs", **_REGISTRY},
    "mediator": {"Bundle": "r"},  # a patient's case package (POST /v1/cases)
    "admin": {"*": "rs"},
}


class TokenError(Exception):
    """A refusal at the token endpoint, as RFC 6749 §5.2 `error` and `error_description`."""

    status_by_error = {"invalid_client": 401}

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = self.status_by_error.get(error, 400)


class JwksError(ValueError):
    """A JWKS that cannot be registered (private keys, missing or repeated kid, unknown kty)."""


class JwksUnavailable(Exception):
    """The JWKS at a client's registered URL cannot be had: unreachable, too slow, too large,
    not 200, or not a usable JWKS (`why`)."""

    def __init__(self, url: str, why: str) -> None:
        super().__init__(f"the JWKS at {url} cannot be used: {why}")
        self.url = url
        self.why = why


class RemoteKeys(Protocol):
    """Where the keys of a client registered by JWKS URL come from (jwks_url.JwksFetcher)."""

    def keys(self, url: str, kid: str) -> list[dict[str, Any]]:
        """The keys at `url`, fresh enough to look for `kid` in; JwksUnavailable if none."""
        ...


def invalid_client(description: str) -> TokenError:
    return TokenError("invalid_client", description)


# --- scopes ------------------------------------------------------------------------------


def parse_scope(scope: str) -> tuple[str, str]:
    """`system/Claim.rs` -> ("Claim", "rs"); v1 `.read`/`.write` map to their v2 letters.

    Raises TokenError(invalid_scope) for anything else (patient/ and user/ scopes included:
    a backend service acts for no user or patient).
    """
    m = _SCOPE.fullmatch(scope)
    if m is None:
        raise TokenError("invalid_scope", f"{scope!r} is not a system/<Type>.<cruds> scope")
    rtype, perms = m.groups()
    if perms in _V1_PERMISSIONS:
        return rtype, _V1_PERMISSIONS[perms]
    if perms != _ordered(perms):  # unknown letters, repeats and disorder all differ
        raise TokenError(
            "invalid_scope", f"{scope!r}: permissions must be a subset of 'cruds', in that order"
        )
    return rtype, perms


def _ordered(perms: Iterable[str]) -> str:
    wanted = set(perms)
    return "".join(p for p in PERMISSIONS if p in wanted)


def grant_scopes(role: str, requested: str) -> list[str]:
    """The requested scopes cut down to what the role allows, in SMART v2 syntax.

    A wildcard request (`system/*.rs`) becomes one scope per type the role may read; a role
    allowed `*` keeps the wildcard. Raises invalid_scope when nothing remains.
    """
    allowed = ROLE_SCOPES.get(role, {})
    granted: dict[str, set[str]] = {}
    for scope in requested.split():
        rtype, perms = parse_scope(scope)
        targets = allowed.keys() if rtype == "*" else [rtype]
        for target in targets:
            may = set(allowed.get(target, "")) | set(allowed.get("*", ""))
            got = set(perms) & may
            if got:
                granted.setdefault(target, set()).update(got)
    if not granted:
        raise TokenError(
            "invalid_scope",
            f"none of the requested scopes is allowed for a {role} client; it may ask for "
            + " ".join(f"system/{t}.{p}" for t, p in allowed.items()),
        )
    return [f"system/{t}.{_ordered(p)}" for t, p in sorted(granted.items())]


def scope_permits(scopes: Iterable[str], resource_type: str, interaction: str) -> bool:
    """Whether any granted scope allows this interaction on this resource type."""
    letter = INTERACTIONS.get(interaction, interaction)
    for scope in scopes:
        m = _SCOPE.fullmatch(scope)
        if m and m.group(1) in (resource_type, "*") and letter in m.group(2):
            return True
    return False


def needed_scope(resource_type: str, interaction: str) -> str:
    return f"system/{resource_type}.{INTERACTIONS.get(interaction, interaction)}"


def all_scopes() -> list[str]:
    """Every scope some role may be granted (for scopes_supported)."""
    return sorted({f"system/{t}.{p}" for perms in ROLE_SCOPES.values() for t, p in perms.items()})


# --- JWKS --------------------------------------------------------------------------------


def validated_jwks(text: str) -> str:
    """The JWKS as compact JSON, if it holds only usable public signing keys.

    Each key needs a unique `kid` (the assertion header names it), a kty/crv this server
    verifies (EC P-384, RSA >= 2048 bits, OKP Ed25519), and no private members (RFC 7517 §4,
    RFC 7518 §6): a private key here would be a secret the server must not hold.
    """
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise JwksError(f"the JWKS is not JSON: {e}") from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list) or not keys:
        raise JwksError('a JWKS is an object with a non-empty "keys" array')
    if len(keys) > MAX_JWKS_KEYS:
        raise JwksError(f"the JWKS has {len(keys)} keys; at most {MAX_JWKS_KEYS}")
    seen: set[str] = set()
    for i, key in enumerate(keys):
        where = f"keys[{i}]"
        if not isinstance(key, dict):
            raise JwksError(f"{where} is not an object")
        kid = key.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > 256:
            raise JwksError(f"{where} needs a kid (1-256 characters)")
        if kid in seen:
            raise JwksError(f"{where}: kid {kid!r} appears twice")
        seen.add(kid)
        private = sorted(_PRIVATE_MEMBERS & key.keys())
        if private:
            raise JwksError(
                f"{where} ({kid}) holds private or secret key members {private}: "
                "register the public key only"
            )
        _check_key(key, where)
    return json.dumps({"keys": keys}, separators=(",", ":"), sort_keys=True)


def _check_key(key: dict[str, Any], where: str) -> None:
    kty, crv = key.get("kty"), key.get("crv")
    kinds = {(k, c) for k, c in KEY_TYPES.values()}
    if not any(kty == k and (c is None or crv == c) for k, c in kinds):
        raise JwksError(
            f"{where}: kty {kty!r} crv {crv!r} is not supported; use EC P-384 (ES384), "
            "RSA (RS384) or OKP Ed25519 (EdDSA)"
        )
    if key.get("use", "sig") != "sig":
        raise JwksError(f"{where}: use must be 'sig'")
    alg = key.get("alg")
    if alg is not None and (alg not in KEY_TYPES or KEY_TYPES[alg][0] != kty):
        raise JwksError(f"{where}: alg {alg!r} does not fit kty {kty!r}")
    try:
        parsed = jwt.PyJWK(key, algorithm=alg or _alg_for(str(kty)))
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as e:
        raise JwksError(f"{where}: not a usable key: {e}") from None
    if kty == "RSA" and parsed.key.key_size < _MIN_RSA_BITS:
        raise JwksError(f"{where}: RSA keys need at least {_MIN_RSA_BITS} bits")


def _alg_for(kty: str) -> str:
    return next(alg for alg, (k, _) in KEY_TYPES.items() if k == kty)


def key_fits_alg(key: Mapping[str, Any], alg: str) -> bool:
    """RFC 7518 §3.1: the JWK's kty (and crv) must be those the algorithm is defined for."""
    kty, crv = KEY_TYPES[alg]
    return (
        key.get("kty") == kty
        and (crv is None or key.get("crv") == crv)
        and key.get("alg", alg) == alg
    )


# --- assertions --------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredClient:
    """A client's registered keys: a JWKS, or the URL it is published at (one of the two).
    As stored: a token is issued only while they are still the client's registration."""

    client_id: str
    role: str
    jwks: str | None
    jwks_url: str | None = None

    def keys(self, remote: RemoteKeys, kid: str) -> list[dict[str, Any]]:
        if self.jwks_url is not None:
            return remote.keys(self.jwks_url, kid)
        return list(json.loads(self.jwks or '{"keys":[]}')["keys"])


def _registered(client_id: str) -> Select[tuple[str, str, str | None, str | None]]:
    """The client's row with its JWKS or JWKS URL, if it has one and is not revoked."""
    c, j = clients_table.c, smart_jwks_table.c
    return (
        select(c.client_id, c.role, j.jwks, j.jwks_url)
        .join(smart_jwks_table, j.client_id == c.client_id)
        .where(c.client_id == client_id, c.revoked.is_(None))
    )


def load_client(engine: Engine, client_id: str) -> RegisteredClient | None:
    with engine.connect() as conn:
        row = conn.execute(_registered(client_id)).first()
    if row is None:
        return None
    return RegisteredClient(row.client_id, row.role, row.jwks, row.jwks_url)


@dataclass(frozen=True)
class Assertion:
    client: RegisteredClient
    jti: str
    exp: int
    purpose: str | None


def verify_assertion(
    engine: Engine, assertion: str, token_url: str, remote: RemoteKeys
) -> Assertion:
    """Checks a client assertion (SMART Backend Services, "Protocol details"; RFC 7523 §3).

    Every failure is `invalid_client`, a JWKS URL that cannot be fetched too. The jti is not
    recorded here: see consume_jti.
    """
    now = time.time()
    if len(assertion) > MAX_ASSERTION_CHARS:
        raise invalid_client(f"the client assertion exceeds {MAX_ASSERTION_CHARS} characters")
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError as e:
        raise invalid_client(f"the client assertion is not a JWS: {e}") from None
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or alg not in KEY_TYPES:
        raise invalid_client(f"alg {alg!r} is not accepted; use one of {', '.join(KEY_TYPES)}")
    if not isinstance(kid, str) or not kid:
        raise invalid_client("the assertion header needs the kid of a registered key")
    if "crit" in header or "jku" in header or "jwk" in header or "x5u" in header:
        # Keys come from the registration, never from the token itself.
        raise invalid_client("the assertion header may not carry crit, jku, jwk or x5u")
    iss = unverified.get("iss")
    if not isinstance(iss, str) or iss != unverified.get("sub"):
        raise invalid_client("iss and sub must both be the client_id")
    client = load_client(engine, iss)
    if client is None:
        raise invalid_client("no client with a registered JWKS has this client_id")
    try:
        keys = client.keys(remote, kid)
    except JwksUnavailable as e:
        raise invalid_client(
            f"the client's registered JWKS URL gave no usable keys: {e.why}"
        ) from None
    key = next((k for k in keys if k.get("kid") == kid), None)
    if key is None:
        raise invalid_client(f"kid {kid!r} names no key registered for this client")
    if not key_fits_alg(key, alg):
        raise invalid_client(f"key {kid!r} is a {key.get('kty')} key; {alg} needs another type")
    try:
        claims = jwt.decode(
            assertion,
            jwt.PyJWK(key, algorithm=alg).key,
            algorithms=[alg],
            audience=token_url,
            issuer=client.client_id,
            leeway=LEEWAY,
            options={"require": ["iss", "sub", "aud", "exp", "jti"], "strict_aud": True},
        )
    except jwt.PyJWTError as e:
        raise invalid_client(f"the client assertion is not valid: {e}") from None
    exp, jti = claims["exp"], claims["jti"]
    if not isinstance(exp, int) or exp > now + MAX_ASSERTION_LIFETIME + LEEWAY:
        raise invalid_client("exp must be at most five minutes from now")
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS:
        raise invalid_client(f"jti must be a string of 1-{MAX_JTI_CHARS} characters")
    purpose = claims.get("purpose_of_use")
    if "purpose_of_use" in claims and not isinstance(purpose, str):
        raise TokenError(
            "invalid_request",
            f"purpose_of_use must be one v3-ActReason code as a string, not {_json_type(purpose)}",
        )
    if purpose is not None and purpose not in PURPOSES:
        raise TokenError(
            "invalid_grant",
            f"purpose_of_use {purpose!r} is not a v3-ActReason purpose-of-use code "
            "(e.g. TREAT, HPAYMT, CLMATTCH, COVAUTH)",
        )
    return Assertion(client, jti, exp, purpose)


def _json_type(value: object) -> str:
    """The JSON type of a decoded value, for error messages that must not echo it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def consume_jti(engine: Engine, client_id: str, jti: str, exp: int, now: float) -> None:
    """Records the jti; a second use within its lifetime is a replay (RFC 7523 §3, item 7).

    Rows are pruned once their assertion can no longer pass the exp check anyway.
    """
    try:
        with store.write_transaction(engine) as conn:
            conn.execute(delete(smart_jti_table).where(smart_jti_table.c.expires < int(now)))
            conn.execute(
                insert(smart_jti_table).values(client_id=client_id, jti=jti, expires=exp + LEEWAY)
            )
    except IntegrityError:
        raise invalid_client("this jti was already used: assertions are single-use") from None


# --- access tokens -----------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    scopes: list[str]
    expires_in: int

    def as_json(self) -> dict[str, Any]:
        """The RFC 6749 §5.1 success body."""
        return {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "scope": " ".join(self.scopes),
        }


def hash_access_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def issue_token(
    engine: Engine, assertion: str, scope: str, token_url: str, remote: RemoteKeys
) -> IssuedToken:
    """Verifies the assertion (keys registered by URL from `remote`), grants scopes, and
    stores the new token's hash."""
    now = time.time()
    checked = verify_assertion(engine, assertion, token_url, remote)
    scopes = grant_scopes(checked.client.role, scope)
    consume_jti(engine, checked.client.client_id, checked.jti, checked.exp, now)
    token = ACCESS_TOKEN_PREFIX + secrets.token_urlsafe(32)
    t = smart_tokens_table
    with store.write_transaction(engine) as conn:
        # The client may have been revoked, or its JWKS replaced, since the assertion was
        # checked: the token is stored only if not (the row lock waits for such a change).
        current = conn.execute(
            _registered(checked.client.client_id).with_for_update(of=clients_table)
        ).first()
        registered = (checked.client.jwks, checked.client.jwks_url)
        if current is None or (current.jwks, current.jwks_url) != registered:
            raise invalid_client("the client was revoked or its keys replaced meanwhile")
        conn.execute(delete(t).where(t.c.expires < int(now)))
        conn.execute(
            insert(t).values(
                token_hash=hash_access_token(token),
                client_id=checked.client.client_id,
                scopes=" ".join(scopes),
                purpose=checked.purpose,
                expires=int(now) + ACCESS_TOKEN_TTL,
            )
        )
    return IssuedToken(token, scopes, ACCESS_TOKEN_TTL)


@dataclass(frozen=True)
class TokenGrant:
    client_id: str
    name: str
    role: str
    org: str | None
    scopes: frozenset[str]
    purpose: str | None


def lookup_token(engine: Engine, token: str, now: float | None = None) -> TokenGrant | None:
    """The live grant behind an access token, or None when unknown or expired."""
    now = time.time() if now is None else now
    if len(token) > 256:
        return None
    t, c = smart_tokens_table.c, clients_table.c
    with engine.connect() as conn:
        row = conn.execute(
            select(c.client_id, c.name, c.role, c.org, t.scopes, t.purpose, t.expires)
            .join(clients_table, c.client_id == t.client_id)
            .where(t.token_hash == hash_access_token(token), c.revoked.is_(None))
        ).first()
    if row is None or row[6] <= now:
        return None
    return TokenGrant(row[0], row[1], row[2], row[3], frozenset(row[4].split()), row[5])
