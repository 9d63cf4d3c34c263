"""SMART Backend Services endpoints: discovery and the client_credentials token endpoint.

SMART App Launch 2.x, "Backend Services" and "Conformance" (/.well-known/smart-configuration,
at the server's root and at the FHIR base);
token errors are RFC 6749 §5.2 JSON, not OperationOutcomes, because OAuth clients parse them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from exchange.http.deps import ServicesDep, public_url
from exchange.http.guards import offered_scopes, public
from exchange.identity import smart

router = APIRouter(tags=["smart"])

# A form with an 8 KiB assertion, a scope list and the fixed parameters fits well within this.
MAX_FORM_BYTES = 16 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class SmartConfiguration(BaseModel):
    """SMART App Launch 2.x, "Conformance": the metadata of a Backend Services server.

    No `issuer` or `jwks_uri` (required only with `sso-openid-connect`, which is not offered),
    no `authorization_endpoint` and no `response_types_supported`: no grant here goes through
    an authorization endpoint, the implicit flow's `token` least of all. The specification
    requires `code_challenge_methods_supported` of every server, `S256` in it and `plain` not.
    """

    token_endpoint: str
    token_endpoint_auth_methods_supported: list[str]
    token_endpoint_auth_signing_alg_values_supported: list[str]
    grant_types_supported: list[str]
    scopes_supported: list[str]
    code_challenge_methods_supported: list[str]
    capabilities: list[str]


class TokenResponse(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    scope: str


class OAuthError(BaseModel):
    """RFC 6749 §5.2: what OAuth clients parse when a token request is refused."""

    error: str
    error_description: str | None = None


_OAUTH_ERRORS = {
    400: {
        "model": OAuthError,
        "description": "invalid_request, invalid_scope, invalid_grant or unsupported_grant_type",
    },
    401: {"model": OAuthError, "description": "invalid_client: the assertion was refused"},
}


def token_url(request: Request) -> str:
    """The token endpoint's absolute URL: the `aud` every client assertion must carry. From
    the configured public URL, never from the request's Host (exchange.public)."""
    return public_url(request) + smart.TOKEN_PATH


@router.get(
    "/.well-known/smart-configuration",
    summary="SMART discovery: token endpoint, auth methods, algorithms, scopes",
    response_model=SmartConfiguration,
)
@router.get(
    "/fhir/.well-known/smart-configuration",
    summary="SMART discovery at the FHIR base, where SMART clients look first",
    response_model=SmartConfiguration,
)
@public
def smart_configuration(request: Request) -> SmartConfiguration:
    return SmartConfiguration(
        token_endpoint=token_url(request),
        token_endpoint_auth_methods_supported=["private_key_jwt"],
        token_endpoint_auth_signing_alg_values_supported=list(smart.KEY_TYPES),
        grant_types_supported=[smart.GRANT_TYPE],
        scopes_supported=offered_scopes(request.app.routes),
        code_challenge_methods_supported=["S256"],
        capabilities=["client-confidential-asymmetric", "permission-v2"],
    )


def _error(e: smart.TokenError) -> JSONResponse:
    return JSONResponse(
        {"error": e.error, "error_description": e.description},
        status_code=e.status,
        headers=_NO_STORE,
    )


async def _form(request: Request) -> dict[str, str]:
    """The urlencoded body; RFC 6749 §3.2: no parameter may appear twice."""
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise smart.TokenError(
            "invalid_request", "send the parameters as application/x-www-form-urlencoded"
        )
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise smart.TokenError("invalid_request", f"the form exceeds {MAX_FORM_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise smart.TokenError("invalid_request", "the form is not urlencoded ASCII") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise smart.TokenError("invalid_request", f"parameter {name!r} appears twice")
        form[name] = value
    return form


def _checked_parameters(form: dict[str, str]) -> tuple[str, str]:
    """(client_assertion, scope) once grant type and assertion type are the SMART ones."""
    grant = form.get("grant_type")
    if not grant:
        raise smart.TokenError("invalid_request", "grant_type is missing")
    if grant != smart.GRANT_TYPE:
        raise smart.TokenError(
            "unsupported_grant_type", f"grant_type must be {smart.GRANT_TYPE}, not {grant!r}"
        )
    if form.get("client_assertion_type") != smart.ASSERTION_TYPE:
        raise smart.invalid_client(f"client_assertion_type must be {smart.ASSERTION_TYPE}")
    assertion = form.get("client_assertion")
    if not assertion:
        raise smart.invalid_client("client_assertion is missing")
    scope = form.get("scope", "").strip()
    if not scope:
        raise smart.TokenError("invalid_scope", "scope is missing: ask for system/ scopes")
    return assertion, scope


_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["grant_type", "client_assertion_type", "client_assertion", "scope"],
    "properties": {
        "grant_type": {"type": "string", "enum": [smart.GRANT_TYPE]},
        "client_assertion_type": {"type": "string", "enum": [smart.ASSERTION_TYPE]},
        "client_assertion": {"type": "string", "maxLength": smart.MAX_ASSERTION_CHARS},
        "scope": {"type": "string", "example": "system/Bundle.cr"},
    },
}


@router.post(
    smart.TOKEN_PATH,
    summary="Trade a signed client assertion for an access token (client_credentials)",
    response_model=TokenResponse,
    responses=_OAUTH_ERRORS,  # type: ignore[arg-type]
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": _FORM_SCHEMA}},
        }
    },
)
@public
async def token(request: Request, services: ServicesDep) -> JSONResponse:
    """SMART Backend Services token request (client_credentials with a private_key_jwt).

    200: RFC 6749 §5.1 JSON. Refusals are RFC 6749 §5.2 JSON `{"error", "error_description"}`,
    not OperationOutcomes, because OAuth clients parse them: 401 `invalid_client` (the
    assertion was refused), 400 `invalid_request`, `invalid_scope`, `invalid_grant` (unknown
    purpose_of_use) or `unsupported_grant_type`.
    """
    try:
        assertion, scope = _checked_parameters(await _form(request))
        issued = await run_in_threadpool(
            smart.issue_token,
            services.engine,
            assertion,
            scope,
            token_url(request),
            services.jwks,
        )
    except smart.TokenError as e:
        return _error(e)
    return JSONResponse(issued.as_json(), headers=_NO_STORE)
