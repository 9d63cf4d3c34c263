"""/fhir/Bundle: submit a Bundle (one ledger entry) and read it back; /fhir/Binary: the exact
bytes submitted.

A read answers as FHIR R4 asks (http.html#read): the Bundle with the server's `id`,
`meta.versionId` and `meta.lastUpdated`, whatever the client put there, spliced into the
submitted bytes (exchange.bundles.read.as_read). The receipt commits to the submitted bytes
themselves, which `GET /fhir/Binary/{id}` serves unchanged, under the same rule of who may read
and the same access entry as the Bundle read.

Retries are safe: the same sender with the same Idempotency-Key, or with the same
Bundle.identifier and the same bytes, is answered 200 with the original submission. A new
version of a Bundle (same identifier, other content) is asked for with
`If-Match: W/"<latest version>"`, the ETag the latest version was answered with.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from exchange.bootstrap import Services
from exchange.bundles.read import BundleRow, as_read, bundle_by_id, bundle_patients
from exchange.bundles.submit import Stored, SubmitRequest, submit
from exchange.errors import Invalid, NotFound
from exchange.http.deps import ServicesDep, public_url
from exchange.http.errors import (
    FHIR_JSON,
    FHIR_JSON_UTF8,
    FhirJSONResponse,
    error_responses,
    outcome_body,
)
from exchange.http.guards import endpoint_scopes, require_role
from exchange.identity.clients import Client, require_scope
from exchange.intake import IntakeError, Issue, check_media_type
from exchange.privacy.access import record_access_per_patient_blocking
from exchange.registry.admission import FLAGS_HEADER
from exchange.vault import Erased

router = APIRouter(prefix="/fhir", tags=["Bundle"])

# Where the receipt and salt go in the OperationOutcome a submission may be answered with.
RECEIPT_EXTENSION = "urn:medledger:extension:receipt"
SALT_EXTENSION = "urn:medledger:extension:salt"

# The flag a submission with unlicensed performers adds to FLAGS_HEADER.
UNLICENSED_FLAG = "performer-unlicensed"

FHIR_ID = r"^[A-Za-z0-9\-.]{1,64}$"
_WEAK_ETAG = re.compile(r'(?:W/)?"([1-9][0-9]{0,8})"')


class IntakeWarning(BaseModel):
    """An accepted submission's warning, as its OperationOutcome issue says it."""

    diagnostics: str
    expression: str | None = Field(None, description="FHIRPath to the element it concerns")


class SubmissionResult(BaseModel):
    """The answer to a submission: where the Bundle is kept and the log's receipt for it."""

    id: str = Field(description="the Bundle's id on this server (Location: /fhir/Bundle/{id})")
    index: int = Field(description="the ledger entry's index")
    kind: Literal["record", "consent", "rwd", "settlement"]
    receipt: str = Field(description="c2sp.org/tlog-proof@v1 text, verifiable offline")
    salt: str = Field(description="base64 of the 32-byte salt: commit = SHA-256(salt || bytes)")
    warnings: list[IntakeWarning] | None = Field(
        None,
        description="what was accepted but is noteworthy (a Procedure performer without a "
        "valid licence); absent when nothing is",
    )


_BUNDLE_BODY = {
    "required": True,
    "description": "a FHIR R4 Bundle (JSON, UTF-8 without BOM); stored byte for byte",
    "content": {
        FHIR_JSON: {"schema": {"type": "object", "description": "FHIR R4 Bundle"}},
        "application/json": {"schema": {"type": "object", "description": "FHIR R4 Bundle"}},
    },
}
_SUBMIT_HEADERS = {
    "Location": {
        "description": "[base]/fhir/Bundle/{id}/_history/{version} (absolute)",
        "schema": {"type": "string"},
    },
    "ETag": {"description": 'W/"<version>"', "schema": {"type": "string"}},
    "Last-Modified": {
        "description": "when the log took the version (its meta.lastUpdated)",
        "schema": {"type": "string"},
    },
    "X-Ledger-Index": {"description": "the ledger entry's index", "schema": {"type": "integer"}},
    "X-Ledger-Salt": {"description": "base64 of the salt", "schema": {"type": "string"}},
}
_READ_HEADERS = {k: _SUBMIT_HEADERS[k] for k in ("ETag", "Last-Modified", "X-Ledger-Index")}
_BUNDLE_CONTENT = {FHIR_JSON: {"schema": {"type": "object", "description": "FHIR R4 Bundle"}}}
_SUBMIT_ALTERNATIVES = {
    FHIR_JSON: {
        "schema": {
            "type": "object",
            "description": "with Prefer: return=representation the Bundle as a read answers "
            "it; with return=OperationOutcome an OperationOutcome carrying the receipt and salt "
            f"in the extensions {RECEIPT_EXTENSION} and {SALT_EXTENSION}",
        }
    }
}
_ORIGINAL_CONTENT = {
    FHIR_JSON: {"schema": {"type": "object", "description": "the Bundle as submitted"}},
    "application/json": {"schema": {"type": "object", "description": "the Bundle as submitted"}},
}
# A submission creates a Bundle; with If-Match it replaces the latest version (a FHIR update).
_SUBMIT_SCOPES = endpoint_scopes(
    "`system/Bundle.c`; `system/Bundle.u` with If-Match", "Bundle.c", "Bundle.u"
)
Reader = Annotated[Client, Depends(require_role("hospital", "admin", scope="Bundle.r"))]


@router.post(
    "/Bundle",
    summary="Submit a Bundle",
    status_code=201,
    response_model=SubmissionResult,
    response_class=JSONResponse,
    responses={
        201: {"headers": _SUBMIT_HEADERS, "content": _SUBMIT_ALTERNATIVES},
        200: {
            "model": SubmissionResult,
            "description": "a retry: the original submission",
            "headers": _SUBMIT_HEADERS,
            "content": _SUBMIT_ALTERNATIVES,
        },
        **error_responses(400, 401, 403, 409, 412, 413, 415, 422, 429, 503),
    },
    openapi_extra={"requestBody": _BUNDLE_BODY},
)
async def create_bundle(
    request: Request,
    client: Annotated[Client, Depends(require_role("hospital", scope=_SUBMIT_SCOPES))],
    services: ServicesDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=256,
            description="retrying with the same key and bytes returns the original (200)",
        ),
    ] = None,
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description='W/"<version>": submit a new version of the Bundle with this '
            "Bundle.identifier, replacing that (latest) version",
        ),
    ] = None,
    prefer: Annotated[
        str | None,
        Header(
            alias="Prefer",
            description="return=minimal | return=representation | return=OperationOutcome",
        ),
    ] = None,
) -> Response:
    """Validates a Bundle, stores its bytes, and commits them to the log with a fresh salt.

    201 with Location, ETag (`W/"<version>"`), Last-Modified, X-Ledger-Index, X-Ledger-Salt and
    the receipt (application/json: the answer is not a FHIR resource); 200 with the same for a
    retry of an earlier submission.
    """
    # A new version of an existing Bundle (If-Match) is a FHIR update, not a create.
    require_scope(client, "Bundle", "create" if if_match is None else "update")
    content_type = request.headers.get("content-type")
    check_media_type(content_type)
    base_version = _parse_if_match(if_match)
    # The registry may bar this sender (expired licence, blacklist) before anything is stored.
    flags = await services.senders.admit(client.org, datetime.now(UTC).date())
    # Slots are shared per hospital, whichever of its credentials it submits with.
    with services.admission.enter(client.org or client.client_id):
        body = await _read_body(request, services.limits.max_bytes)
        checked = await services.intake.check(body, content_type)
        # Performers without a valid licence: warnings, or a 422 in strict deployments.
        warnings = await services.senders.performers(client.org, checked.performers)
        # Deliveries to home hospitals are queued in the Bundle's own transaction.
        deliveries = await services.outbox.plan(client, checked)
        req = SubmitRequest(client, body, checked, idempotency_key, base_version, deliveries)
        stored = await submit(services.log, services.vault, req)
    request.state.submission_kind = stored.kind  # the metrics' kind label (http/metrics.py)
    answer = _answer(stored, body, public_url(request), _preference(prefer), warnings)
    if warnings:
        flags = (*flags, UNLICENSED_FLAG)
    if flags:
        answer.headers[FLAGS_HEADER] = ",".join(flags)
    return answer


@router.get(
    "/Bundle/{bundle_id}",
    summary="Read a Bundle (latest version) with the server's id and meta",
    response_class=Response,
    responses={
        200: {
            "content": _BUNDLE_CONTENT,
            "description": "the submitted bytes with the server's id, meta.versionId and "
            "meta.lastUpdated spliced in; every other byte as submitted",
            "headers": _READ_HEADERS,
        },
        **error_responses(400, 401, 403, 404, 410),
    },
)
def read_bundle(
    bundle_id: Annotated[str, Path(pattern=FHIR_ID)],
    client: Reader,
    services: ServicesDep,
) -> Response:
    row = _disclosed(services, client, read_visible(services, client, bundle_id, None, bundle_id))
    return _read_answer(row)


@router.get(
    "/Bundle/{bundle_id}/_history/{version}",
    summary="Read one version of a Bundle with the server's id and meta",
    response_class=Response,
    responses={
        200: {
            "content": _BUNDLE_CONTENT,
            "description": "the submitted bytes with the server's id, meta.versionId and "
            "meta.lastUpdated spliced in; every other byte as submitted",
            "headers": _READ_HEADERS,
        },
        **error_responses(400, 401, 403, 404, 410),
    },
)
def read_bundle_version(
    bundle_id: Annotated[str, Path(pattern=FHIR_ID)],
    version: Annotated[int, Path(ge=1, le=999_999_999)],
    client: Reader,
    services: ServicesDep,
) -> Response:
    what = f"{bundle_id}/_history/{version}"
    row = _disclosed(services, client, read_visible(services, client, bundle_id, version, what))
    return _read_answer(row)


_ORIGINAL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": _ORIGINAL_CONTENT,
        "description": "the submitted bytes, with the media type they were submitted as",
        "headers": _READ_HEADERS,
    },
    **error_responses(400, 401, 403, 404, 410),
}


@router.get(
    "/Binary/{bundle_id}",
    summary="The exact bytes submitted as a Bundle's latest version (what its receipt commits to)",
    response_class=Response,
    tags=["Binary"],
    responses=_ORIGINAL_RESPONSES,
)
def read_original(
    bundle_id: Annotated[str, Path(pattern=FHIR_ID)],
    client: Reader,
    services: ServicesDep,
) -> Response:
    row = _disclosed(services, client, read_visible(services, client, bundle_id, None, bundle_id))
    return _original_answer(row)


@router.get(
    "/Binary/{bundle_id}/_history/{version}",
    summary="The exact bytes submitted as one version of a Bundle",
    response_class=Response,
    tags=["Binary"],
    responses=_ORIGINAL_RESPONSES,
)
def read_original_version(
    bundle_id: Annotated[str, Path(pattern=FHIR_ID)],
    version: Annotated[int, Path(ge=1, le=999_999_999)],
    client: Reader,
    services: ServicesDep,
) -> Response:
    what = f"{bundle_id}/_history/{version}"
    row = _disclosed(services, client, read_visible(services, client, bundle_id, version, what))
    return _original_answer(row)


# --- helpers ------------------------------------------------------------------------------


def _parse_if_match(value: str | None) -> int | None:
    if value is None:
        return None
    m = _WEAK_ETAG.fullmatch(value.strip())
    if m is None:
        raise Invalid(
            f'If-Match {value!r} is not a version ETag: send W/"<n>", the ETag of the latest '
            "version of the Bundle this one replaces",
        )
    return int(m.group(1))


def _too_large(limit: int) -> IntakeError:
    return IntakeError.one(
        413, "too-long", f"the body is larger than {limit} bytes: split the Bundle"
    )


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it exceeds `limit`, before it is all read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _preference(prefer: str | None) -> str:
    for part in (prefer or "").replace(";", ",").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "return":
            return value.strip().strip('"')
    return ""


def _answer(
    stored: Stored, body: bytes, base: str, preference: str, warnings: list[Issue]
) -> Response:
    status = 201 if stored.created else 200
    salt = base64.b64encode(stored.salt).decode()
    headers = {
        "Location": f"{base}/fhir/Bundle/{stored.id}/_history/{stored.version}",
        "ETag": f'W/"{stored.version}"',
        "Last-Modified": http_date(stored.received),
        "X-Ledger-Index": str(stored.index),
        "X-Ledger-Salt": salt,
    }
    if preference == "minimal":
        return Response(status_code=status, headers=headers)
    if preference == "representation":
        # The retry matched on the same bytes, so the request body is the stored Bundle.
        read = as_read(body, stored.id, stored.version, stored.received)
        return Response(read, status, headers, media_type=FHIR_JSON_UTF8)
    if preference == "OperationOutcome":
        what = "stored" if stored.created else "already stored"
        note = Issue("information", "informational", f"{what} as ledger entry {stored.index}")
        outcome: dict[str, Any] = {
            "resourceType": "OperationOutcome",
            "extension": [
                {"url": RECEIPT_EXTENSION, "valueString": stored.receipt},
                {"url": SALT_EXTENSION, "valueBase64Binary": salt},
            ],
            **outcome_body([note, *warnings]),
        }
        return FhirJSONResponse(outcome, status, headers)
    result = SubmissionResult(
        id=stored.id,
        index=stored.index,
        kind=stored.kind,  # type: ignore[arg-type]
        receipt=stored.receipt,
        salt=salt,
        warnings=[
            IntakeWarning(diagnostics=w.diagnostics, expression=w.expression) for w in warnings
        ]
        or None,
    )
    return JSONResponse(result.model_dump(exclude_none=True), status, headers)


def http_date(instant: str) -> str:
    """An RFC 3339 UTC instant (an entry's time) as an HTTP-date (RFC 9110 section 5.6.7)."""
    return format_datetime(datetime.fromisoformat(instant).astimezone(UTC), usegmt=True)


def read_visible(
    services: Services, client: Client, bundle_id: str, version: int | None, what: str
) -> BundleRow:
    """A Bundle the client may read; 410 if it was erased (exchange.vault.Erased)."""
    try:
        row = bundle_by_id(services.vault, bundle_id, version)
    except Erased as e:
        if client.role != "admin" and e.sender != client.org:
            raise NotFound(f"no Bundle {what} visible to this client") from None
        raise
    return _visible(row, client, what)


def _visible(row: BundleRow | None, client: Client, what: str) -> BundleRow:
    # Another org's Bundle is answered as absent: its existence is not the reader's to learn.
    if row is None or (client.role != "admin" and row.sender != client.org):
        raise NotFound(f"no Bundle {what} visible to this client")
    return row


def _disclosed(services: Services, client: Client, row: BundleRow) -> BundleRow:
    """`row`, once recorded: read by anyone but the hospital that submitted it (an admin),
    its data leaving is a disclosure, an access entry in the patient's accounting."""
    if client.org != row.sender:
        record_access_per_patient_blocking(
            services.log,
            client,
            bundle_patients(services.vault, [row.index]),
            action="read",
            resource_type="Bundle",
            purpose=client.purpose,
            outcome="0",
            detail=f"Bundle {row.id} version {row.version}",
        )
    return row


def _row_headers(row: BundleRow) -> dict[str, str]:
    return {
        "ETag": f'W/"{row.version}"',
        "Last-Modified": http_date(row.received),
        "X-Ledger-Index": str(row.index),
    }


def _read_answer(row: BundleRow) -> Response:
    read = as_read(row.data, row.id, row.version, row.received)
    return Response(read, 200, _row_headers(row), media_type=FHIR_JSON_UTF8)


def _original_answer(row: BundleRow) -> Response:
    return Response(row.data, 200, _row_headers(row), media_type=f"{row.media}; charset=utf-8")
