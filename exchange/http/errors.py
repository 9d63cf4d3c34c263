"""HTTP-level FHIR OperationOutcomes: every error the service answers, whatever raised it.

Domain code raises exchange.errors' kinds; :data:`STATUS` is the one table from kind to HTTP
status (the OperationOutcome's issue code is the error's own `code`). Intake refusals carry
their own status and one issue per problem (exchange.intake.IntakeError). The handlers
installed by :func:`install_handlers` turn those, the ledger's unavailability, FastAPI's own
errors (404, 405, bad query parameters) and any unexpected exception into an
OperationOutcome, so no answer is ever a non-FHIR error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from exchange.errors import (
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    MedledgerError,
    NotAcceptable,
    NotFound,
    PreconditionFailed,
    Throttled,
    Unauthenticated,
    Unavailable,
    Unprocessable,
)
from exchange.intake import IntakeError, Issue
from ledger.errors import LedgerUnavailable

FHIR_JSON = "application/fhir+json"
# What every FHIR answer is labelled: FHIR R4 http.html#mime asks for the charset.
FHIR_JSON_UTF8 = f"{FHIR_JSON}; charset=utf-8"

log = logging.getLogger("medledger.exchange")

# Set in a request's scope when the server cut its body off (exchange.connections): why, for
# the one line the app logs when it finds the body gone.
CUT_OFF = "medledger.cut_off"

# FHIR IssueType codes (http://hl7.org/fhir/issue-type) for HTTP statuses raised by the framework.
_STATUS_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-long",
    415: "not-supported",
    422: "processing",
    429: "throttled",
    500: "exception",
    503: "transient",
}


class FhirJSONResponse(JSONResponse):
    """A FHIR resource as JSON, labelled :data:`FHIR_JSON_UTF8` (the class's media type, the
    one the OpenAPI document shows, stays the bare FHIR one)."""

    media_type = FHIR_JSON

    def __init__(
        self,
        content: Any,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: Any = None,
    ) -> None:
        super().__init__(content, status_code, headers, media_type or FHIR_JSON_UTF8, background)


class OutcomeIssue(BaseModel):
    """OperationOutcome.issue: what went wrong, and where (a FHIRPath expression)."""

    severity: Literal["fatal", "error", "warning", "information"]
    code: str = Field(description="FHIR IssueType code (http://hl7.org/fhir/issue-type)")
    diagnostics: str
    expression: list[str] | None = Field(
        default=None,
        description="FHIRPath of the offending element, e.g. Bundle.entry[3].resource.status",
    )


class OperationOutcome(BaseModel):
    """The FHIR R4 OperationOutcome every error is answered with."""

    resourceType: Literal["OperationOutcome"] = "OperationOutcome"
    issue: list[OutcomeIssue]


# The one table from a domain error's kind to the HTTP status it is answered with (the most
# specific kind an error is wins; IntakeError brings its own status).
STATUS: Mapping[type[MedledgerError], int] = {
    Invalid: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    NotAcceptable: 406,
    Conflict: 409,
    Gone: 410,
    PreconditionFailed: 412,
    Unprocessable: 422,
    Throttled: 429,
    Unavailable: 503,
}


def status_of(err: MedledgerError) -> int:
    """The HTTP status `err` is answered with."""
    if isinstance(err, IntakeError):
        return err.status
    for kind in type(err).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


def headers_of(err: MedledgerError) -> dict[str, str]:
    """What the answer to `err` carries beside its body: when to retry, how to log in."""
    headers: dict[str, str] = {}
    if err.retry_after is not None:
        headers["Retry-After"] = str(err.retry_after)
    if isinstance(err, Unauthenticated):
        challenge = err.challenge_error
        headers["WWW-Authenticate"] = 'Bearer realm="medledger"' + (
            f', error="{challenge}"' if challenge else ""
        )
    return headers


def issue_of(err: MedledgerError) -> Issue:
    return Issue("error", err.code, err.diagnostics, err.expression)


def outcome_body(issues: list[Issue]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.as_fhir() for i in issues]}


def outcome_response(
    status: int, issues: list[Issue], headers: Mapping[str, str] | None = None
) -> FhirJSONResponse:
    return FhirJSONResponse(outcome_body(issues), status_code=status, headers=dict(headers or {}))


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses, each an OperationOutcome."""
    content = {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}}
    return {s: {"description": _REASONS[s], "content": content} for s in statuses}


_REASONS = {
    400: "Bad request: the OperationOutcome names the problem",
    401: "No valid bearer credential (see WWW-Authenticate)",
    403: "The client's role may not do this",
    404: "No such resource (or not visible to this client)",
    406: "Accept or _format asks only for a format other than FHIR JSON",
    409: "Bundle.identifier already names other content",
    410: "The record was erased at the patient's request (the outcome names the erasure entry)",
    412: "If-Match does not name the latest version",
    413: "Body larger than the limit",
    415: "Not FHIR JSON",
    422: "Not an acceptable FHIR R4 Bundle, or an Idempotency-Key reused for other content",
    429: "Too many submissions in flight; retry after Retry-After seconds",
    503: "The ledger cannot be written now; retry later",
}


# --- handlers -----------------------------------------------------------------------------


async def _domain_error(_: Request, exc: Exception) -> FhirJSONResponse:
    assert isinstance(exc, MedledgerError)
    if isinstance(exc, IntakeError):
        return FhirJSONResponse(exc.operation_outcome(), status_code=exc.status)
    return outcome_response(status_of(exc), [issue_of(exc)], headers_of(exc))


async def _http_error(request: Request, exc: Exception) -> FhirJSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    text = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if status in (404, 405):
        text = f"{text}: {request.method} {request.url.path}"
    code = _STATUS_CODES.get(status, "processing" if status < 500 else "exception")
    return outcome_response(status, [Issue("error", code, text)], exc.headers)


async def _validation_error(_: Request, exc: Exception) -> FhirJSONResponse:
    # Query and path parameters are not FHIR elements: the issue names the parameter in words.
    assert isinstance(exc, RequestValidationError)
    issues = [
        Issue(
            "error",
            "invalid",
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}",
        )
        for err in exc.errors()
    ] or [Issue("error", "invalid", "the request is not valid")]
    return outcome_response(400, issues)


async def _unavailable(request: Request, exc: Exception) -> FhirJSONResponse:
    # The database is down, locked past its timeout, or out of space: worth a retry.
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return outcome_response(
        503,
        [Issue("error", "transient", "the database is unavailable: retry later")],
        {"Retry-After": "1"},
    )


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The client hung up before its body was all there (or the server cut it off for being too
    # slow: exchange.connections). Nothing was stored and no one is left to answer: one line.
    why = request.scope.get(CUT_OFF, "the client disconnected mid-body")
    peer = request.client.host if request.client else "-"
    log.warning("%s %s from %s: %s", request.method, request.url.path, peer, why)
    return Response(status_code=400)


async def _unexpected(request: Request, exc: Exception) -> FhirJSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return outcome_response(
        500,
        [Issue("fatal", "exception", "internal error: the server logged it; retry later")],
    )


def document_outcomes(app: FastAPI) -> None:
    """Makes the app's OpenAPI document say what errors really are.

    Adds the OperationOutcome schema the `responses` entries refer to, and drops FastAPI's
    default 422 "HTTPValidationError" answers: a bad parameter is a 400 OperationOutcome here.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for operation in _operations(doc):
                answer = operation.get("responses", {}).get("422", {})
                if "HTTPValidationError" in str(answer):
                    del operation["responses"]["422"]
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            outcome = OperationOutcome.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            schemas.update(outcome.pop("$defs", {}))
            schemas["OperationOutcome"] = outcome
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _operations(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [op for path in doc.get("paths", {}).values() for op in path.values()]


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MedledgerError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(OperationalError, _unavailable)
    app.add_exception_handler(LedgerUnavailable, _unavailable)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
