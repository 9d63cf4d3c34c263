"""SMART Backend Services, the client side: a signed client assertion buys an access token.

The flow is SMART App Launch v2 "Backend Services" (RFC 7523 ``private_key_jwt`` under the
OAuth 2.0 client credentials grant):

1. Discovery: ``GET [base]/.well-known/smart-configuration`` names the ``token_endpoint``.
   It must be https (http only when the FHIR base itself is plain http on loopback), and when
   the server lists the signing algorithms or authentication methods it accepts, ours must be
   among them.
2. The client assertion: a JWT signed with the client's private key (RS384 or ES384, header
   ``kid`` and ``typ: JWT``) with ``iss`` = ``sub`` = the client id, ``aud`` = the token URL,
   a fresh ``jti``, and ``exp`` four minutes ahead (SMART allows five at most).
3. ``POST`` the token URL: ``grant_type=client_credentials``, ``scope=system/Bundle.c``,
   ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``,
   ``client_assertion``. The answer's ``access_token`` is used as a bearer token; whatever
   scope the server granted is accepted, the FHIR answer says whether it was enough.

A :class:`TokenCache` keeps each token until 30 seconds before its ``expires_in`` runs out, and
each discovered token URL for as long as the process runs; the caller keeps one cache for all
deliveries and calls :meth:`TokenCache.forget` when the FHIR server answers 401, so the next
request fetches a new token. Refusals by the token endpoint (400, 401, 403) are
:class:`TokenError` with ``retryable`` false: the credentials need an operator. Anything else
that fails - no answer, a 5xx, a 429 - is retryable.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from exchange.delivery._http import Answer, request
from exchange.delivery.endpoints import SmartCredentials, is_loopback

__all__ = ["SCOPE", "TokenCache", "TokenError", "client_assertion"]

SCOPE = "system/Bundle.c"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 240  # seconds; SMART: exp no more than five minutes in the future
_EARLY = 30.0  # seconds before expiry a cached token is no longer used
_MAX_BODY = 64 * 1024


class TokenError(Exception):
    """No access token: ``reason`` says why, ``retryable`` whether trying later may help."""

    def __init__(self, reason: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.status = status


@dataclass
class _Token:
    value: str
    expires: float  # on the cache's clock


def client_assertion(creds: SmartCredentials, token_url: str, *, now: float | None = None) -> str:
    """The signed JWT that authenticates ``creds`` to ``token_url``."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": creds.client_id,
        "sub": creds.client_id,
        "aud": token_url,
        "exp": issued + ASSERTION_LIFETIME,
        "iat": issued,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(
        claims, creds.key, algorithm=creds.alg, headers={"kid": creds.key_id, "typ": "JWT"}
    )


class TokenCache:
    """Access tokens per (FHIR base, client id) and token URLs per FHIR base."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._token_urls: dict[str, str] = {}

    def forget(self, base: str, creds: SmartCredentials) -> None:
        """Drop the cached token (the server refused it)."""
        self._tokens.pop((base, creds.client_id), None)

    async def token(
        self, client: httpx.AsyncClient, base: str, creds: SmartCredentials, *, timeout: float
    ) -> str:
        """A valid access token for ``creds`` at ``base``: the cached one, or a new one."""
        key = (base, creds.client_id)
        cached = self._tokens.get(key)
        if cached is not None and self._clock() < cached.expires:
            return cached.value
        token_url = await self._token_url(client, base, creds, timeout)
        form = {
            "grant_type": "client_credentials",
            "scope": SCOPE,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(creds, token_url),
        }
        answer = await _ask(
            client, "POST", token_url, timeout, data=form, what="the token endpoint"
        )
        if answer.status != 200:
            raise TokenError(
                f"the token endpoint answered {answer.status}: {_oauth_error(answer.body)}",
                retryable=_retryable(answer.status),
                status=answer.status,
            )
        doc = _json(answer.body, "the token endpoint's answer")
        value = doc.get("access_token")
        if not isinstance(value, str) or not value:
            raise TokenError("the token endpoint's answer has no access_token", retryable=True)
        if str(doc.get("token_type", "")).lower() != "bearer":
            raise TokenError(
                f"the token endpoint issued a {doc.get('token_type')!r} token, not a bearer one",
                retryable=False,
            )
        lifetime = doc.get("expires_in")
        seconds = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else 300
        self._tokens[key] = _Token(value, self._clock() + max(0.0, seconds - _EARLY))
        return value

    async def _token_url(
        self, client: httpx.AsyncClient, base: str, creds: SmartCredentials, timeout: float
    ) -> str:
        known = self._token_urls.get(base)
        if known is not None:
            return known
        url = f"{base}/.well-known/smart-configuration"
        answer = await _ask(client, "GET", url, timeout, what="SMART discovery")
        if answer.status != 200:
            raise TokenError(
                f"SMART discovery at {url} answered {answer.status}",
                retryable=_retryable(answer.status),
                status=answer.status,
            )
        doc = _json(answer.body, f"SMART discovery at {url}")
        token_url = doc.get("token_endpoint")
        if not isinstance(token_url, str):
            raise TokenError(f"SMART discovery at {url} names no token_endpoint", retryable=False)
        _check_token_url(token_url, base)
        _check_supported(doc, "token_endpoint_auth_methods_supported", "private_key_jwt")
        _check_supported(doc, "token_endpoint_auth_signing_alg_values_supported", creds.alg)
        self._token_urls[base] = token_url
        return token_url


async def _ask(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    timeout: float,
    *,
    what: str,
    data: dict[str, str] | None = None,
) -> Answer:
    try:
        return await request(
            client,
            method,
            url,
            headers={"Accept": "application/json"},
            timeout=timeout,
            max_body=_MAX_BODY,
            data=data,
        )
    except httpx.HTTPError as e:
        raise TokenError(f"{what} at {url}: {type(e).__name__}: {e}", retryable=True) from None


def _check_token_url(token_url: str, base: str) -> None:
    parts = urlsplit(token_url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and urlsplit(base).scheme == "http":
        if is_loopback(parts.hostname):
            return
    raise TokenError(
        f"token_endpoint {token_url!r}: a token is fetched over https only", retryable=False
    )


def _check_supported(doc: dict[str, Any], name: str, ours: str) -> None:
    listed = doc.get(name)
    if isinstance(listed, list) and ours not in listed:
        raise TokenError(f"SMART discovery: {name} lists {listed}, not {ours!r}", retryable=False)


def _retryable(status: int) -> bool:
    return status in (408, 425, 429) or status >= 500


def _json(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        raise TokenError(f"{what} is not JSON", retryable=True) from None
    if not isinstance(doc, dict):
        raise TokenError(f"{what} is not a JSON object", retryable=True)
    return doc


def _oauth_error(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(doc, dict):
        parts = [str(doc.get(k)) for k in ("error", "error_description") if doc.get(k)]
        if parts:
            return ": ".join(parts)
    return body[:200].decode("utf-8", "replace")
