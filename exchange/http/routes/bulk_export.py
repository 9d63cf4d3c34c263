"""Bulk Data `$export` at system level (FHIR Bulk Data Access IG v2.0.0, "Bulk Data Export").

- `GET /fhir/$export` with `Prefer: respond-async`: kick-off; `_type` (comma-separated
  settlement types), `_since` (an instant: resources last updated after it), `_outputFormat`
  (NDJSON only). 202 with `Content-Location` naming the status URL.
- `GET /fhir/$export-status/{job}`: 202 with `X-Progress` and `Retry-After` while it runs; 200
  with the manifest when done (each output item's SHA-256 in its `extension`, keyed by
  :data:`exchange.bulk_export.SHA256_EXTENSION`); 500 with an OperationOutcome when the job
  failed (or a restart interrupted it).
- `GET /fhir/$export-status/{job}/{n}.ndjson`: one output file.
- `DELETE /fhir/$export-status/{job}`: cancel or discard it (202); afterwards 404.

Only the client that kicked a job off sees it; to any other it does not exist (404). Export is
at system level only: this server keeps no Group resources, and the patients an insurer may
receive are not a fixed cohort but whoever's consent permits it at the job's transaction time.

A job and its files expire :attr:`exchange.settings.Settings.export_ttl` (24 h by default)
after the kick-off: the manifest and each file carry an `Expires` header, and afterwards the
job is deleted and answers 404.

A download is decided again at its own time (:func:`exchange.bulk_export.download`): for an
insurer every line of the file must still be permitted by its patient's current consent and
the cross-border gate, or the whole file is refused (403: its manifest gave its count and
SHA-256; a new export leaves out whoever withdrew); data erased since answers 410.

Access entries (insurers): the kick-off appends one (`export`, or `denied` when refused); a
download appends one `export` entry per patient the file discloses, naming that patient's
pseudonym, so it is in the patient's accounting of disclosures; a refused download appends
one `denied` entry. Polls and deletes disclose nothing and append nothing.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from exchange.bootstrap import Services
from exchange.consent.crossborder import TransferLedger
from exchange.errors import Forbidden, Gone, Invalid, MedledgerError, NotFound
from exchange.http.deps import GateDep, IndexesDep, ServicesDep, public_url
from exchange.http.errors import (
    FHIR_JSON,
    FhirJSONResponse,
    error_responses,
    outcome_body,
    status_of,
)
from exchange.http.guards import endpoint_scopes, require_role
from exchange.http.routes.settlement import (
    Answer,
    PurposeHeader,
    fresh_indexes,
    recorded_once,
)
from exchange.identity import smart
from exchange.identity.clients import Client, require_scope
from exchange.intake import Issue
from exchange.privacy.access import record_access
from exchange.settlement import bulk_export
from exchange.settlement import index as settlement

router = APIRouter(prefix="/fhir", tags=["bulk export"])

JOB_ID = r"^[0-9a-f\-]{36}$"
FILE_NAME = r"^[0-9]{1,6}\.ndjson$"
RETRY_AFTER = "2"
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")

# Auditors and admins export nothing: this is patient data. The scopes depend on the types
# exported, so the endpoints check them (exchange.auth.require_scope).
Exporter = Annotated[
    Client,
    Depends(
        require_role(
            "hospital",
            "insurer",
            scope=endpoint_scopes(
                "`system/<Type>.r` of each `_type` (without `_type`: the types the token reads)",
                *(f"{t}.r" for t in settlement.SEARCH_TYPES),
            ),
        )
    ),
]
Owner = Annotated[
    Client,
    Depends(
        require_role(
            "hospital",
            "insurer",
            scope=endpoint_scopes(
                "`system/<Type>.r` of each type the job exports (of the file's type, for a file)",
                *(f"{t}.r" for t in settlement.SEARCH_TYPES),
            ),
        )
    ),
]


Exports = ServicesDep  # the jobs that expired are purged at start and at each kick-off


def export_types(client: Client, requested: list[str] | None) -> tuple[str, ...]:
    """`_type` as settlement types (comma-separated, repeatable), checked against the token's
    scopes; without `_type`, every type the client may read."""
    if not requested:
        types = tuple(
            t
            for t in settlement.SEARCH_TYPES
            if client.scopes is None or smart.scope_permits(client.scopes, t, "read")
        )
        if not types:
            raise Forbidden(
                "the access token grants no read scope of a settlement type "
                f"({', '.join(settlement.SEARCH_TYPES)}): request system/<Type>.r",
            )
        return types
    chosen: list[str] = []
    for part in (p.strip() for value in requested for p in value.split(",")):
        if part not in settlement.SEARCH_TYPES:
            raise Invalid(
                f"_type {part!r} is not exported here; the types are "
                + ", ".join(settlement.SEARCH_TYPES),
                "_type",
                code="not-supported",
            )
        require_scope(client, part, "read")
        if part not in chosen:
            chosen.append(part)
    return tuple(chosen)


def since_param(value: str | None) -> str | None:
    """`_since` as fixed-width UTC text: an instant, with its time zone (FHIR `instant`)."""
    if value is None:
        return None
    if not _INSTANT.fullmatch(value):
        raise Invalid(
            f"_since {value!r} is not an instant (YYYY-MM-DDThh:mm:ss[.f]Z)", "_since", code="value"
        )
    try:
        return settlement.utc_instant(value)
    except ValueError as e:
        raise Invalid(f"_since {value!r}: {e}", "_since", code="value") from None


def check_kickoff_headers(
    prefer: str | None, accept: str | None, output_format: str | None
) -> None:
    if prefer is None or "respond-async" not in [p.strip() for p in prefer.split(",")]:
        raise Invalid(
            "a Bulk Data export runs asynchronously: send Prefer: respond-async",
            "Prefer",
            code="required",
        )
    if accept is not None and not any(
        a.split(";")[0].strip() in (FHIR_JSON, "application/json", "*/*") for a in accept.split(",")
    ):
        raise Invalid(
            f"Accept {accept!r}: only application/fhir+json", "Accept", code="not-supported"
        )
    if output_format is not None and output_format not in bulk_export.OUTPUT_FORMATS:
        raise Invalid(
            f"_outputFormat {output_format!r}: only {bulk_export.NDJSON}",
            "_outputFormat",
            code="not-supported",
        )


@router.get(
    "/$export",
    summary="Bulk Data export kick-off (system level): settlement resources as NDJSON",
    status_code=202,
    response_class=FhirJSONResponse,
    responses={
        202: {
            "description": "accepted; poll the Content-Location URL",
            "headers": {"Content-Location": {"schema": {"type": "string"}}},
            "content": {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}},
        },
        **error_responses(400, 401, 403, 503),
    },
)
async def export_kickoff(
    request: Request,
    client: Exporter,
    services: Exports,
    indexes: IndexesDep,
    gate: GateDep,
    type_: Annotated[
        list[str] | None,
        Query(alias="_type", description="comma-separated: Claim, Invoice, Coverage, ..."),
    ] = None,
    since: Annotated[
        str | None, Query(alias="_since", max_length=40, description="an instant")
    ] = None,
    output_format: Annotated[
        str | None,
        Query(alias="_outputFormat", max_length=64, description="application/fhir+ndjson"),
    ] = None,
    prefer: Annotated[str | None, Header(alias="Prefer", description="respond-async")] = None,
    accept: Annotated[str | None, Header(alias="Accept")] = None,
    purpose_of_use: PurposeHeader = None,
) -> Response:
    base = public_url(request)

    async def run(purpose: str | None) -> Answer:
        check_kickoff_headers(prefer, accept, output_format)
        types = export_types(client, type_)
        spec = bulk_export.JobSpec(
            client.client_id, client.org, client.role, purpose, types, since_param(since),
            _kickoff_url(base, request),
        )  # fmt: skip
        await run_in_threadpool(fresh_indexes, services, indexes)
        ttl = services.settings.export_ttl
        await run_in_threadpool(bulk_export.purge_expired, services.engine, ttl)
        job = await run_in_threadpool(bulk_export.start_job, services.engine, spec)
        bulk_export.start_worker(services.vault, gate, job)
        return Answer(job.id.encode(), 0, 0, {}, f"$export {','.join(types)} job {job.id}")

    if client.role == "insurer":
        answer = await recorded_once(
            services, client, "Bundle", purpose_of_use, run, action="export"
        )
    else:
        answer = await run(None)
    job_id = answer.body.decode()
    note = Issue("information", "informational", f"export {job_id} accepted")
    return FhirJSONResponse(
        outcome_body([note]),
        202,
        {"Content-Location": f"{base}/fhir/$export-status/{job_id}"},
    )


def _kickoff_url(base: str, request: Request) -> str:
    """The manifest's `request`: the kick-off URL as the client sent it, on the public base."""
    query = request.url.query
    return base + request.url.path + (f"?{query}" if query else "")


async def _own_job(
    services: Services, client: Client, job_id: str, *, scoped: bool = True
) -> bulk_export.Job:
    """The client's job, unless it expired (then it is deleted with every other that did);
    with `scoped`, only while its token reads every type the job exports (a file download
    checks the scope of the file's type instead)."""
    job = await run_in_threadpool(bulk_export.load_job, services.engine, job_id)
    if job is None or job.spec.client_id != client.client_id:
        raise NotFound(f"no export {job_id} of this client")
    ttl = services.settings.export_ttl
    if bulk_export.expires(job, ttl) <= datetime.now(UTC):
        await run_in_threadpool(bulk_export.purge_expired, services.engine, ttl)
        raise NotFound(f"export {job_id} expired ({ttl} after its kick-off): start a new one")
    if scoped:
        for rtype in job.spec.types:
            require_scope(client, rtype, "read")
    return job


def _expires_header(services: Services, job: bulk_export.Job) -> dict[str, str]:
    when = bulk_export.expires(job, services.settings.export_ttl)
    return {"Expires": format_datetime(when.astimezone(UTC), usegmt=True)}


def _manifest_files(
    services: Services, job: bulk_export.Job
) -> list[tuple[bulk_export.OutputFile, str | None]]:
    files = bulk_export.files_of(services.engine, job.id)
    return [(f, bulk_export.file_sha256(services.vault, job.id, f)) for f in files]


@router.get(
    "/$export-status/{job_id}",
    summary="Bulk Data export status: 202 while running, 200 with the manifest when done",
    responses={
        200: {"description": "the manifest", "content": {"application/json": {}}},
        202: {"description": "in progress (X-Progress, Retry-After)"},
        **error_responses(400, 401, 403, 404),
        500: {
            "description": "the export failed",
            "content": {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}},
        },
    },
)
async def export_status(
    request: Request,
    client: Owner,
    services: Exports,
    job_id: Annotated[str, Path(pattern=JOB_ID)],
) -> Response:
    job = await _own_job(services, client, job_id)
    if bulk_export.is_orphaned(job):
        reason = "the export was interrupted (the server restarted): start a new one"
        await run_in_threadpool(bulk_export.mark_failed, services.engine, job_id, reason)
        job = await _own_job(services, client, job_id)
    if job.status == bulk_export.IN_PROGRESS:
        return Response(
            status_code=202, headers={"X-Progress": job.progress, "Retry-After": RETRY_AFTER}
        )
    if job.status == bulk_export.FAILED:
        issue = Issue("error", "exception", job.error or "the export failed")
        return FhirJSONResponse(outcome_body([issue]), 500)
    files = await run_in_threadpool(_manifest_files, services, job)
    return FhirJSONResponse(
        bulk_export.manifest(job, files, public_url(request)),
        200,
        _expires_header(services, job),
        media_type="application/json",
    )


@router.get(
    "/$export-status/{job_id}/{file_name}",
    summary="One NDJSON file of a finished export",
    response_class=Response,
    responses={
        200: {"content": {bulk_export.NDJSON: {"schema": {"type": "string"}}}},
        **error_responses(400, 401, 403, 404),
        410: {
            "description": "data in the file has been erased since the export",
            "content": {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}},
        },
    },
)
async def export_file(
    client: Owner,
    services: Exports,
    gate: GateDep,
    indexes: IndexesDep,
    job_id: Annotated[str, Path(pattern=JOB_ID)],
    file_name: Annotated[str, Path(pattern=FILE_NAME)],
) -> Response:
    n = int(file_name.split(".", 1)[0])
    try:
        job = await _own_job(services, client, job_id, scoped=False)
        files = await run_in_threadpool(bulk_export.files_of, services.engine, job_id)
        found = [f for f in files if f.n == n]
        if job.status != bulk_export.COMPLETED or not found:
            raise NotFound(f"export {job_id} has no file {file_name}")
        # Consents and Bundles stored since the kick-off count: the indexes are caught up.
        await run_in_threadpool(fresh_indexes, services, indexes)
        require_scope(client, found[0].resource_type, "read")
        served = await run_in_threadpool(_download, services, gate, job, found[0])
    except MedledgerError as refusal:
        if client.role == "insurer":
            await record_access(
                services.log, client, action="denied", resource_type="Bundle",
                patient_subject=None, purpose=client.purpose, outcome="4",
                detail=f"$export file refused ({status_of(refusal)})",
            )  # fmt: skip
        raise
    if served.patients:
        # One entry per patient disclosed, appended together (one group commit), all before
        # the file leaves.
        await asyncio.gather(
            *(
                record_access(
                    services.log,
                    client,
                    action="export",
                    resource_type=found[0].resource_type,
                    patient_subject=subject,
                    purpose=job.spec.purpose,
                    outcome="0",
                    detail=f"$export job {job_id} file {n}: {served.lines[subject]} of "
                    f"{found[0].count} resources are this patient's",
                    other_subjects=others,
                )  # fmt: skip
                for subject, others in served.patients.items()
            )
        )
    return Response(served.data, 200, _expires_header(services, job), media_type=bulk_export.NDJSON)


def _download(
    services: Services, gate: TransferLedger, job: bulk_export.Job, f: bulk_export.OutputFile
) -> bulk_export.Disclosure:
    try:
        return bulk_export.download(services.vault, gate, job, f, datetime.now(UTC))
    except bulk_export.FileGone:
        raise Gone(
            "data in this file has been erased since the export: start a new one",
        ) from None
    except bulk_export.NoLongerPermitted:
        raise Forbidden(
            "consent no longer permits all of this file to this insurer (a patient withdrew, "
            "or a consent or legal basis ended since the export): start a new export, which "
            "includes only what is permitted now",
        ) from None


@router.delete(
    "/$export-status/{job_id}",
    summary="Cancel or discard an export",
    status_code=202,
    response_class=Response,
    responses={202: {"description": "cancelled"}, **error_responses(400, 401, 403, 404)},
)
async def export_delete(
    client: Owner,
    services: Exports,
    job_id: Annotated[str, Path(pattern=JOB_ID)],
) -> Response:
    await _own_job(services, client, job_id)
    await run_in_threadpool(bulk_export.delete_job, services.engine, job_id)
    return Response(status_code=202)


def capability_operations() -> list[dict[str, Any]]:
    """CapabilityStatement.rest.operation: the system-level Bulk Data export."""
    return [
        {
            "name": "export",
            "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
            "documentation": (
                "System-level Bulk Data export (Bulk Data Access IG v2) of the settlement "
                "types, with _type, _since and _outputFormat=application/fhir+ndjson; "
                "Prefer: respond-async required. The manifest gives each file's SHA-256 in "
                f"its extension {bulk_export.SHA256_EXTENSION}. Filtered like a search "
                "(own submissions for a hospital; consent and the cross-border gate for an "
                "insurer). No Group-level export: the server keeps no Group resources."
            ),
        }
    ]
