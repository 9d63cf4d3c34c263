"""Pushing a document Bundle to a FHIR R4 server: conditional create, answers classified.

The request is ``POST [base]/Bundle`` with the document's exact bytes,
``Content-Type: application/fhir+json`` and ``If-None-Exist: identifier=<system>|<value>``
(FHIR R4 http.html#ccreate): a server that already holds a Bundle with that identifier
answers 200 and creates nothing, so a retry after a lost answer never makes a second copy.
In the header's search value the FHIR search escapes (``\\``, ``|``, ``,``, ``$``) are applied
to system and value, and the whole is percent-encoded as a URL query value.

Answers, and what they mean (:class:`PushResult`):

- 201 Created: delivered; ``location`` is the new resource.
- 200 OK: delivered earlier; the server found it by the identifier (``existing``).
- 408, 425, 429, 5xx, and no answer at all (connect, TLS, timeout, reset): retry, after the
  server's ``Retry-After`` when it gave one.
- 401 with SMART credentials: the cached token is dropped and the push made once more with a
  fresh one; a second 401 is final.
- 3xx: permanent. Redirects are not followed: a document is never re-sent, with its
  credentials, to a URL the recipient's registration does not name.
- Any other 4xx: permanent, with the OperationOutcome's text in ``reason``.

Answers are read up to a size cap; TLS certificates are verified (:func:`new_client`).
"""

from __future__ import annotations

import email.utils
import json
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from exchange.delivery._http import Answer, request
from exchange.delivery.endpoints import BearerToken, FhirEndpoint, SmartCredentials
from exchange.delivery.result import Outcome
from exchange.delivery.smart_client import TokenCache, TokenError

__all__ = ["MAX_ANSWER", "PushResult", "if_none_exist", "new_client", "push_document"]

MAX_ANSWER = 1024 * 1024
FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class PushResult:
    """The verdict on one push and what the server said (for the delivery's ledger entry)."""

    outcome: Outcome
    status: int | None  # None: no HTTP answer arrived
    location: str | None = None
    existing: bool = False  # 200: the server already held a Bundle with this identifier
    retry_after: timedelta | None = None
    reason: str = ""  # why it was not delivered, for the operator
    body: bytes = field(default=b"", repr=False)  # the answer's body, up to the cap


def new_client(*, verify: bool | ssl.SSLContext = True) -> httpx.AsyncClient:
    """An HTTP client for pushes: TLS verified, redirects not followed, no proxy from env."""
    return httpx.AsyncClient(verify=verify, follow_redirects=False, trust_env=False)


def if_none_exist(system: str, value: str) -> str:
    """The ``If-None-Exist`` header value that matches a Bundle by ``identifier``."""
    token = f"{_search_escape(system)}|{_search_escape(value)}"
    return "identifier=" + quote(token, safe=":/@")


async def push_document(
    endpoint: FhirEndpoint,
    bundle: bytes,
    identifier: tuple[str, str],
    *,
    client: httpx.AsyncClient,
    timeout: float = 30.0,
    tokens: TokenCache | None = None,
    max_answer: int = MAX_ANSWER,
) -> PushResult:
    """``POST [base]/Bundle`` the document ``bundle`` (its exact bytes) once, conditionally.

    ``identifier`` is the document's Bundle.identifier (system, value). ``tokens`` caches SMART
    access tokens between pushes (one cache for the process); without one a token is fetched
    for this push alone. Never raises for anything the network or the server does.
    """
    system, value = identifier
    if not system or not value:
        raise ValueError("a conditional create needs the identifier's system and value")
    cache = tokens if tokens is not None else TokenCache()
    creds = endpoint.credentials
    result = await _attempt(endpoint, bundle, system, value, client, timeout, cache, max_answer)
    if result.status == 401 and isinstance(creds, SmartCredentials):
        # The token may have been revoked or expired early: one more try with a fresh one.
        cache.forget(endpoint.base, creds)
        result = await _attempt(endpoint, bundle, system, value, client, timeout, cache, max_answer)
    return result


async def _attempt(
    endpoint: FhirEndpoint,
    bundle: bytes,
    system: str,
    value: str,
    client: httpx.AsyncClient,
    timeout: float,
    tokens: TokenCache,
    max_answer: int,
) -> PushResult:
    headers = {
        "Content-Type": FHIR_JSON,
        "Accept": FHIR_JSON,
        "If-None-Exist": if_none_exist(system, value),
    }
    creds = endpoint.credentials
    try:
        if isinstance(creds, BearerToken):
            headers["Authorization"] = f"Bearer {creds.token}"
        elif isinstance(creds, SmartCredentials):
            token = await tokens.token(client, endpoint.base, creds, timeout=timeout)
            headers["Authorization"] = f"Bearer {token}"
    except TokenError as e:
        return PushResult(
            Outcome.RETRY if e.retryable else Outcome.PERMANENT,
            None,
            reason=f"no access token: {e.reason}",
        )
    url = f"{endpoint.base}/Bundle"
    try:
        answer = await request(
            client,
            "POST",
            url,
            headers=headers,
            content=bundle,
            timeout=timeout,
            max_body=max_answer,
        )
    except httpx.HTTPError as e:
        return PushResult(Outcome.RETRY, None, reason=f"no answer from {url}: {_describe(e)}")
    return classify(answer, endpoint.base)


def classify(answer: Answer, base: str) -> PushResult:
    """What the server's answer to a conditional create means for the delivery."""
    status = answer.status
    location = answer.headers.get("Location") or answer.headers.get("Content-Location")
    if status in (200, 201):
        if location is None and status == 200:
            location = _resource_location(answer.body, base)
        return PushResult(
            Outcome.DELIVERED, status, location, existing=status == 200, body=answer.body
        )
    if status in (408, 425, 429) or status >= 500:
        return PushResult(
            Outcome.RETRY,
            status,
            location,
            retry_after=_retry_after(answer.headers.get("Retry-After")),
            reason=f"{status}: {_outcome_text(answer.body)}",
            body=answer.body,
        )
    if 300 <= status < 400:
        reason = f"{status}: redirected to {location!r}; redirects are not followed"
    elif 200 < status < 300:
        reason = f"{status}: not an answer to a create (201) or a match (200)"
    else:
        reason = f"{status}: {_outcome_text(answer.body)}"
    return PushResult(Outcome.PERMANENT, status, location, reason=reason, body=answer.body)


def _search_escape(text: str) -> str:
    # FHIR R4 search.html#escaping: \ first, then the separators.
    for ch in ("\\", "|", ",", "$"):
        text = text.replace(ch, "\\" + ch)
    return text


def _retry_after(value: str | None) -> timedelta | None:
    """RFC 9110 §10.2.3: delay-seconds or an HTTP-date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(timedelta(0), when - datetime.now(UTC))


def _outcome_text(body: bytes) -> str:
    """The issues of an OperationOutcome, else the start of the body."""
    doc = _json_object(body)
    if doc is not None and doc.get("resourceType") == "OperationOutcome":
        texts = []
        for issue in doc.get("issue") or []:
            if not isinstance(issue, dict):
                continue
            details = issue.get("details")
            text = issue.get("diagnostics") or (
                details.get("text") if isinstance(details, dict) else None
            )
            where = issue.get("expression") or issue.get("location") or []
            part = f"{issue.get('severity', '')} {issue.get('code', '')}".strip()
            if text:
                part += f": {text}"
            if isinstance(where, list) and where:
                part += f" (at {', '.join(str(w) for w in where)})"
            texts.append(part)
        if texts:
            return "; ".join(texts)
    snippet = body[:300].decode("utf-8", "replace").strip()
    return snippet or "(no body)"


def _resource_location(body: bytes, base: str) -> str | None:
    doc = _json_object(body)
    if doc is not None and isinstance(doc.get("id"), str):
        return f"{base}/{doc.get('resourceType', 'Bundle')}/{doc['id']}"
    return None


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _describe(e: httpx.HTTPError) -> str:
    text = str(e) or type(e).__name__
    return f"{type(e).__name__}: {text}"
