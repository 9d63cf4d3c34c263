"""/v1/shl and /shl/view: SMART Health Links (HL7 SHL) to a patient's summary.

A hospital makes a link (`POST /v1/shl`): the IPS of all its record Bundles about the patient
is appended to the log like any submission of the hospital, and the answer carries the
`shlink:/` link, the viewer URL and the QR code's URL. Whoever holds the link opens it without
a credential, per the specification: the manifest (`POST …/manifest`, naming the recipient,
with the passcode of a `P` link), a file by its `location`, or the one file of a `U` link
(`GET …/file?recipient=`). Each of those requests is an access entry in the patient's
accounting naming the recipient string, whether files left or not. The hospital revokes a
link with `DELETE /v1/shl/{id}`; unknown, expired, revoked, disabled (passcode attempts spent)
and erased patients' links all answer the same 404 to every request.

What the public routes answer is exchange.shl.manifest's (the SHL protocol's own bodies:
`{"files": …}`, 401 `{"remainingAttempts": n}`); every other refusal is an OperationOutcome.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from exchange.bootstrap import Services
from exchange.bundles.read import bundle_patients
from exchange.errors import Invalid, NotFound, Unprocessable
from exchange.http.deps import IndexesDep, ServicesDep, public_url
from exchange.http.errors import FHIR_JSON, FhirJSONResponse, error_responses
from exchange.http.guards import public, require_role
from exchange.identity.clients import Client
from exchange.privacy.access import record_access_per_patient
from exchange.sharing import links
from exchange.shl import payload as shl_payload
from exchange.shl.errors import ShlError
from exchange.shl.files import LinkFile, ips_from_records
from exchange.shl.link import PASSCODE_ATTEMPTS, manifest_url, parse_request
from exchange.shl.manifest import (
    Answer,
    Locations,
    answer_direct,
    answer_location,
    answer_manifest,
)
from exchange.shl.qr import qr_png
from exchange.shl.viewer import RESPONSE_HEADERS
from exchange.vault import Erased

router = APIRouter(tags=["shl"])

# A request to make a link is a few hundred bytes: anything much larger is not one.
MAX_REQUEST = 8192
# A link shares the patient's summary: the scope of Patient/$summary.
SCOPE = "Patient.r"
# The patient gave the link to whoever opens it (v3-ActReason "patient requested").
PURPOSE = "PATRQT"
JOSE = "application/jose"


def _gone() -> NotFound:
    return NotFound("no such active link (unknown, expired, revoked or disabled)")


LinkId = Annotated[str, Path(description="the link's id (43 characters)")]


class CreatedLink(BaseModel):
    """A new link: hand `shlink` (or the QR code) to the patient."""

    id: str = Field(description="the link's id: DELETE /v1/shl/{id} revokes it")
    shlink: str = Field(description="the `shlink:/…` link (it carries the files' key)")
    viewer_url: str = Field(description="the link opened in this server's viewer")
    qr_url: str = Field(description="the viewer URL as a QR code (PNG), for the hospital")
    bundle: str = Field(description="the summary's Bundle id on this server")
    index: int = Field(description="the summary's ledger entry")


class ShlPasscodeRefused(BaseModel):
    """SHL's answer to a wrong or missing passcode (401): the specification fixes this body,
    which SHL clients parse, as RFC 6749 fixes the token endpoint's errors."""

    remainingAttempts: int = Field(description="wrong passcodes left; at 0 the link is dead")


_CREATE_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["patient", "expires"],
                "additionalProperties": False,
                "properties": {
                    "patient": {"type": "string", "description": "system|value"},
                    "expires": {
                        "type": "string",
                        "format": "date-time",
                        "description": "RFC 3339 with an offset, at most 365 days ahead",
                    },
                    "label": {"type": "string", "maxLength": 80},
                    "passcode": {"type": "string", "maxLength": 64},
                },
            }
        }
    },
}
_MANIFEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["recipient"],
                "properties": {
                    "recipient": {"type": "string", "maxLength": 200},
                    "passcode": {"type": "string"},
                    "embeddedLengthMax": {"type": "integer", "minimum": 0},
                },
            }
        }
    },
}
_JOSE_CONTENT = {JOSE: {"schema": {"type": "string", "description": "compact JWE"}}}
_JSON_OBJECT = {"application/json": {"schema": {"type": "object"}}}


def _recipient_client(link_id: str) -> Client:
    """Whoever opens a link has no client: the access entry names them by the recipient
    string they gave, and the link by a digest of its id (the id itself opens the link)."""
    ref = hashlib.sha256(link_id.encode()).hexdigest()[:16]
    return Client(client_id=f"shl-{ref}", name="SMART Health Link", role="shl", org=None)


async def _account(services: Services, link: links.Link | None, answer: Answer) -> None:
    """The answer's access entry, in the accounting of each patient the summary names."""
    access = answer.access
    if access is None or link is None:
        return
    subjects = await run_in_threadpool(bundle_patients, services.vault, [link.ips_index])
    await record_access_per_patient(
        services.log,
        _recipient_client(link.state.id),
        subjects,
        action=access.action,
        resource_type="Bundle",
        purpose=PURPOSE,
        outcome=access.outcome,
        detail=access.detail,
        recipient=access.recipient,
    )


def _send(answer: Answer) -> Response:
    # What a link answers is for its holder alone: never kept by a cache on the way.
    headers = {"Cache-Control": "no-store"}
    if isinstance(answer.body, str):
        return Response(answer.body, answer.status, headers, JOSE)
    if answer.body.get("resourceType") == "OperationOutcome":
        return FhirJSONResponse(answer.body, answer.status, headers)
    return Response(json.dumps(answer.body), answer.status, headers, "application/json")


def _answer_safely(compute: Callable[[], Answer]) -> Answer:
    """An answer, or the inactive link's 404 when the patient was erased meanwhile."""
    try:
        return compute()
    except Erased:
        raise _gone() from None


async def _json_body(request: Request) -> object:
    raw = await request.body()
    if len(raw) > MAX_REQUEST:
        raise Invalid(f"the request body is over {MAX_REQUEST} bytes", "body")
    try:
        return json.loads(raw)
    except ValueError:
        raise Invalid("the request body is not JSON", "body") from None


def _invalid(e: ShlError) -> Invalid:
    return Invalid(f"{e.field}: {e.reason}", e.field)


def _check_base(base: str) -> None:
    if len(manifest_url(base, "A" * 43)) > shl_payload.URL_MAX:
        raise Unprocessable(
            f"this server's public URL {base!r} is too long for a SMART Health Link "
            f"(the manifest URL may have at most {shl_payload.URL_MAX} characters)"
        )


@router.post(
    "/v1/shl",
    summary="Make a SMART Health Link to the patient's summary (IPS), logged like a submission",
    status_code=201,
    response_model=CreatedLink,
    responses=error_responses(400, 401, 403, 404, 422, 503),
    openapi_extra={"requestBody": _CREATE_BODY},
)
async def create_link(
    request: Request,
    client: Annotated[Client, Depends(require_role("hospital", scope=SCOPE))],
    services: ServicesDep,
    indexes: IndexesDep,
    direct: Annotated[
        bool, Query(description="a direct-file (U) link: one file by GET, no manifest")
    ] = False,
) -> CreatedLink:
    assert client.org is not None  # a hospital client always has its org
    now = datetime.now(UTC)
    base = public_url(request)
    _check_base(base)
    try:
        req = parse_request(await _json_body(request), now=now)
    except ShlError as e:
        raise _invalid(e) from None
    if direct and req.passcode is not None:
        raise Invalid("a direct-file (U) link cannot have a passcode", "passcode")
    # The summary is the hospital's submission: the registry may bar it as any other.
    await services.senders.admit(client.org, now.date())
    system, _, value = req.patient.partition("|")
    sources = await run_in_threadpool(
        links.summary_sources,
        services.vault,
        indexes,
        services.pseudonym_key,
        client.org,
        (system, value),
    )
    records = [row.data for row in sources]
    if not records:
        raise NotFound("this hospital submitted no clinical Bundle about that patient", "patient")
    try:
        ips = await run_in_threadpool(
            lambda: ips_from_records(records, now=now, document_id=str(uuid.uuid4()))
        )
    except ShlError as e:
        raise Unprocessable(e.reason, e.field) from None
    checked = await services.intake.check(ips, FHIR_JSON)
    link = await run_in_threadpool(
        lambda: links.create(
            services.log, services.vault, client, req, ips, checked, now=now, direct=direct
        )
    )
    shlink = shl_payload.encode(link.state.payload(base))
    return CreatedLink(
        id=link.state.id,
        shlink=shlink,
        viewer_url=shl_payload.viewer_url(base, shlink),
        qr_url=f"{base}/v1/shl/{link.state.id}/qr.png",
        bundle=link.state.ips_bundle,
        index=link.ips_index,
    )


async def _own_link(services: Services, client: Client, link_id: str) -> links.Link:
    """A live link the client may manage: its hospital's (or any, for an admin)."""
    link = await run_in_threadpool(links.load, services.vault, link_id)
    if link is None or link.state.inactive_reason(datetime.now(UTC)) is not None:
        raise _gone()
    if client.role != "admin" and link.state.created_by != client.org:
        raise _gone()  # another hospital's link is answered as absent
    return link


@router.delete(
    "/v1/shl/{link_id}",
    summary="Revoke a SMART Health Link: every request to it answers 404 from now on",
    status_code=204,
    response_class=Response,
    responses=error_responses(400, 401, 403, 404, 503),
)
async def revoke_link(
    link_id: LinkId,
    client: Annotated[Client, Depends(require_role("hospital", "admin", scope=SCOPE))],
    services: ServicesDep,
) -> Response:
    await _own_link(services, client, link_id)
    if not await run_in_threadpool(links.revoke, services.engine, link_id, datetime.now(UTC)):
        raise _gone()  # revoked meanwhile
    return Response(status_code=204)


@router.get(
    "/v1/shl/{link_id}/qr.png",
    summary="The link's viewer URL as a QR code (error correction M); it carries the key",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
        **error_responses(400, 401, 403, 404),
    },
)
async def link_qr(
    request: Request,
    link_id: LinkId,
    client: Annotated[Client, Depends(require_role("hospital", scope=SCOPE))],
    services: ServicesDep,
) -> Response:
    link = await _own_link(services, client, link_id)
    base = public_url(request)
    url = shl_payload.viewer_url(base, link.state.payload(base))
    png = await run_in_threadpool(qr_png, url)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


def _manifest(
    services: Services, link_id: str, body: object, locations: Locations
) -> tuple[links.Link | None, Answer]:
    """The manifest's answer, its wrong passcode counted compare-and-set. A request that lost
    the race answers again from the new count; each loss means another request used up an
    attempt, so after PASSCODE_ATTEMPTS losses the link is disabled and nothing is counted."""
    for _ in range(PASSCODE_ATTEMPTS + 1):
        link = links.load(services.vault, link_id)

        def files(link: links.Link | None = link) -> Sequence[LinkFile]:
            assert link is not None  # asked for only when the link is live
            return links.files_of(services.vault, services.log, link)

        state = None if link is None else link.state
        try:
            answer = answer_manifest(
                state, body, now=datetime.now(UTC), files=files, locations=locations
            )
        except Erased:  # the patient was erased meanwhile
            raise _gone() from None
        if answer.attempts is None or links.count_attempt(
            services.engine, link_id, answer.attempts
        ):
            return link, answer
    raise _gone()  # unreachable: the count only goes down


@router.post(
    "/v1/shl/{link_id}/manifest",
    summary="SHL manifest: the link's files, embedded or by location (no credential)",
    response_class=Response,
    responses={
        200: {"content": _JSON_OBJECT, "description": '{"files": [...]}'},
        401: {"model": ShlPasscodeRefused, "description": "a wrong or missing passcode"},
        **error_responses(400, 404),
    },
    openapi_extra={"requestBody": _MANIFEST_BODY},
)
@public
async def link_manifest(request: Request, link_id: LinkId, services: ServicesDep) -> Response:
    body = await _json_body(request)
    base = public_url(request)
    locations = Locations(services.shl_secret, base)
    link, answer = await run_in_threadpool(_manifest, services, link_id, body, locations)
    await _account(services, link, answer)
    return _send(answer)


@router.get(
    "/v1/shl/{link_id}/files/{ticket}",
    summary="SHL file by location: one file a manifest named, for a few minutes",
    response_class=Response,
    responses={200: {"content": _JOSE_CONTENT}, **error_responses(400, 404)},
)
@public
async def link_file_by_location(
    request: Request,
    link_id: LinkId,
    ticket: Annotated[str, Path(description="the ticket the manifest named")],
    services: ServicesDep,
) -> Response:
    link = await run_in_threadpool(links.load, services.vault, link_id)
    locations = Locations(services.shl_secret, public_url(request))

    def compute() -> Answer:
        files = (lambda: links.files_of(services.vault, services.log, link)) if link else list
        state = None if link is None else link.state
        return answer_location(
            state, ticket, now=datetime.now(UTC), files=files, locations=locations
        )

    answer = await run_in_threadpool(_answer_safely, compute)
    await _account(services, link, answer)
    return _send(answer)


@router.get(
    "/v1/shl/{link_id}/file",
    summary="SHL direct file (flag U): the link's one file, no manifest",
    response_class=Response,
    responses={200: {"content": _JOSE_CONTENT}, **error_responses(400, 404)},
)
@public
async def link_direct_file(
    link_id: LinkId,
    services: ServicesDep,
    recipient: Annotated[
        str | None, Query(max_length=200, description="who opens the link, as they name it")
    ] = None,
) -> Response:
    link = await run_in_threadpool(links.load, services.vault, link_id)

    def compute() -> Answer:
        def file() -> Any:
            assert link is not None
            return links.direct_file_of(services.vault, services.log, link)

        state = None if link is None else link.state
        return answer_direct(state, recipient, now=datetime.now(UTC), file=file)

    answer = await run_in_threadpool(_answer_safely, compute)
    await _account(services, link, answer)
    return _send(answer)


@router.get(
    "/shl/view",
    summary="The SMART Health Links viewer: decrypts and verifies a link in the browser",
    response_class=Response,
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}},
        **error_responses(400),
    },
)
@public
async def viewer(
    services: ServicesDep,
    recipient: Annotated[
        str | None, Query(max_length=200, description="the recipient's name, to skip asking")
    ] = None,
) -> Response:
    # The link itself is in the URL's fragment, which never reaches the server.
    return Response(services.shl_viewer, headers=RESPONSE_HEADERS)
