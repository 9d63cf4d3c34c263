"""Settlement search: `GET /fhir/{Claim|ClaimResponse|Invoice|ExplanationOfBenefit|Coverage|
DocumentReference}`, answered with a FHIR searchset Bundle of the resources exactly as submitted.

Search parameters (FHIR R4 section 3.1.1 "Search"; strict handling, unknown ones are refused):

- `patient:identifier=system|value` (or `patient.identifier=`): the patient as the hospital
  identified them (R4's `identifier` modifier of a reference parameter). `patient` is a
  reference, `Patient/<id>` or `<id>`, whose id on this server is the keyed pseudonym the
  ledger entries and AuditEvents carry (64 hex digits): the hospital's own Patient ids mean
  nothing across hospitals.
- `insurer=Organization/x` (or `x`): the payer (Claim/ClaimResponse/EOB.insurer, Coverage.payor,
  Invoice.recipient; a DocumentReference takes the payer of its Bundle's claim).
- `identifier=system|value`, `identifier=value`, `identifier=|value` (token search).
- `_id=<id>[,<id>...]`: the resources' ids as submitted.
- `_lastUpdated=[ge|gt|le|lt|eq]<date or dateTime>`, repeatable (meta.lastUpdated, else the
  time the Bundle was received).
- `_count` (at most :data:`MAX_COUNT`), and `_cursor`, the opaque, signed position the `next`
  link carries.

Each entry carries the submitting hospital's international accreditation status on the
resource's service date (:data:`ACCREDITATION_STATUS_EXTENSION` on `Bundle.entry`; the
registry's current record, its accreditations' periods and lapses evaluated on that day).

Roles: a hospital sees its own submissions; an insurer sees resources addressed to its
organisation about one named patient, each one only if the patient's newest Consent permits
this insurer and purpose now (:func:`exchange.consent.evaluate`) and the cross-border gate
admits the transfer; auditors and admins are refused (403): this is patient data. Every insurer
request that reaches the search, answered or refused, appends exactly one access entry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from exchange.bootstrap import Services
from exchange.bundles.read import bundle_patients
from exchange.consent.crossborder import TransferLedger
from exchange.consent.rules import INSURER_PURPOSES
from exchange.errors import Forbidden, Invalid, MedledgerError
from exchange.http.deps import GateDep, IndexesDep, ServicesDep, public_url
from exchange.http.errors import FHIR_JSON, FHIR_JSON_UTF8, error_responses, status_of
from exchange.http.guards import endpoint_scopes, require_role
from exchange.http.query import used_params
from exchange.identity.clients import Client, require_scope
from exchange.indexes.derived import Indexes
from exchange.privacy.access import record_access, record_access_per_patient
from exchange.registry import institutions
from exchange.settlement import index as settlement
from exchange.store import secrets

router = APIRouter(prefix="/fhir", tags=["settlement"])

DEFAULT_COUNT = 50
MAX_COUNT = 200
# Rows read per query while filling a page (some may be withheld by consent).
BATCH = 200
CURSOR_SECRET = "settlement-cursor"
_PSEUDONYM = re.compile(r"[0-9a-f]{64}")
_DATE_PARAM = re.compile(
    r"(eq|ge|gt|le|lt)?(\d{4}(?:-\d{2}(?:-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?"
    r"(?:Z|[+-]\d{2}:\d{2}))?)?)?)"
)

PurposeHeader = Annotated[
    str | None,
    Header(
        alias="X-Purpose-Of-Use",
        max_length=32,
        description="v3-ActReason purpose of use (HPAYMT or a specialization); required for "
        "insurers unless the SMART access token carries purpose_of_use, and equal to it when "
        "both are given",
    ),
]


# --- the services the search needs --------------------------------------------------------


def fresh_indexes(services: Services, indexes: Indexes) -> None:
    """Make both settlement indexes cover every stored Bundle (blocking)."""
    indexes.fresh(
        settlement.settlement_index(services.engine, services.pseudonym_key),
        settlement.settlement_keys_index(services.pseudonym_key),
    )


def insurer_purpose(client: Client, header: str | None) -> str:
    """The purpose of use of an insurer's request: the token's or the header's, and the same
    when both are given (a 403 otherwise: consent is given for a purpose)."""
    header = header.strip() if header is not None else None
    if client.purpose is None and not header:
        raise Forbidden(
            "an insurer must state its purpose of use: send X-Purpose-Of-Use (e.g. HPAYMT) "
            "or bind purpose_of_use into the access token",
        )
    if client.purpose is not None and header and header != client.purpose:
        raise Forbidden(
            f"X-Purpose-Of-Use {header!r} differs from the purpose bound into the access "
            f"token ({client.purpose!r}): send the token's purpose or none",
        )
    chosen = client.purpose or header
    assert chosen is not None
    if chosen not in INSURER_PURPOSES:
        raise Forbidden(
            f"purpose of use {chosen!r} is not a payment purpose; an insurer reads settlement "
            f"data for one of {', '.join(sorted(INSURER_PURPOSES))}",
        )
    return chosen


async def recorded_once(
    services: Services,
    client: Client,
    resource_type: str,
    purpose_header: str | None,
    run: Callable[[str], Awaitable[Answer]],
    *,
    action: str,
) -> Answer:
    """Runs an insurer's request and appends its access entries: `action` with outcome 0 when
    data was disclosed, `denied` with outcome 4 when it was refused (a MedledgerError raised by
    `run`, or nothing of what matched permitted); one per patient the answer is about, or one
    naming no patient (a refusal before any match, an export kick-off).

    The entry is written before the answer leaves: no disclosure goes unrecorded (a ledger
    that cannot be written is a 503, and nothing is disclosed).
    """
    purpose: str | None = client.purpose or purpose_header
    try:
        purpose = insurer_purpose(client, purpose_header)
        answer = await run(purpose)
    except MedledgerError as refusal:
        await record_access(
            services.log,
            client,
            action="denied",
            resource_type=resource_type,
            patient_subject=None,
            purpose=_loggable(purpose),
            outcome="4",
            detail=f"refused ({status_of(refusal)})",
        )
        raise
    disclosed = answer.disclosed > 0 or answer.withheld == 0
    await record_access_per_patient(
        services.log,
        client,
        answer.patients,
        action=action if disclosed else "denied",
        resource_type=resource_type,
        purpose=purpose,
        outcome="0" if disclosed else "4",
        detail=answer.detail,
    )
    return answer


def _loggable(purpose: str | None) -> str | None:
    # The purpose goes into the AuditEvent as a code: an arbitrary header is not recorded.
    return purpose if purpose is not None and re.fullmatch(r"[A-Z]{2,16}", purpose) else None


@dataclass(frozen=True)
class Answer:
    body: bytes
    disclosed: int  # resources in the answer
    withheld: int  # resources that matched but the policy withheld
    # The patients disclosed (else refused), for the access entries: each subject -> the
    # further patients its Bundles name (exchange.access).
    patients: dict[bytes, list[bytes]]
    detail: str  # for the access entry: counts only, no PHI


# --- parameters ---------------------------------------------------------------------------


def token_param(key: bytes, value: str, name: str) -> tuple[str, bytes]:
    """A token search value as (key kind, hash): `system|value`, `|value` or `value`."""
    system, bar, code = value.partition("|")
    if not bar:
        system, code = "", value
    if not code:
        raise Invalid(f"{name} must be system|value, |value or value", name, code="value")
    if not bar:
        return settlement.KEY_IDENT_VALUE, settlement.ident_value_key(key, code)
    return settlement.KEY_IDENT, settlement.ident_key(key, system, code)


def patient_identifier_of(dotted: str | None, modifier: str | None) -> str | None:
    """The patient identifier of `patient.identifier` or `patient:identifier` (the same
    search, spelt two ways; both given, they must agree)."""
    if dotted is not None and modifier is not None and dotted != modifier:
        raise Invalid(
            "patient.identifier and patient:identifier name different patients: send one",
            "patient:identifier",
            code="value",
        )
    if dotted is None and modifier is not None:
        patient_identifier_param(modifier, "patient:identifier")
    return dotted if dotted is not None else modifier


def patient_reference(value: str) -> str:
    """The pseudonym of a `patient` reference: `Patient/<64 hex>` or `<64 hex>`."""
    pseudonym = value.removeprefix("Patient/")
    if not _PSEUDONYM.fullmatch(pseudonym):
        raise Invalid(
            "patient must reference a patient of this server, Patient/<id> or <id>, whose id "
            "is the patient's pseudonym (64 lower-case hex digits, as in the AuditEvents); to "
            "name the patient by identifier use patient:identifier=system|value",
            "patient",
            code="value",
        )
    return pseudonym


def ids_param(value: str) -> tuple[str, ...]:
    """`_id`: one id or several, comma-separated (any of them matches)."""
    ids = tuple(value.split(","))
    if not all(re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", i) for i in ids):
        raise Invalid("_id must be ids (1-64 of A-Z a-z 0-9 - .), comma-separated", "_id")
    return ids


def patient_identifier_param(value: str, name: str = "patient.identifier") -> tuple[str, str]:
    system, bar, code = value.partition("|")
    if not bar or not system or not code:
        raise Invalid(
            f"{name} must be system|value (e.g. urn:oid:2.16.156.1|MRN-1): the patient is "
            "matched by an identifier the hospital submitted",
            name,
            code="value",
        )
    return system, code


def insurer_param(value: str) -> str:
    org = value.removeprefix("Organization/")
    if not re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", org):
        raise Invalid("insurer must be Organization/<id> or <id>", "insurer", code="value")
    return org


def date_bounds(values: list[str]) -> tuple[settlement.DateBound, ...]:
    """`_lastUpdated` values as comparisons on fixed-width UTC text (FHIR R4 section 3.1.1.5.7
    "date": a value is the range its precision implies; a time without a zone is refused)."""
    bounds: list[settlement.DateBound] = []
    for value in values:
        m = _DATE_PARAM.fullmatch(value)
        if m is None:
            raise Invalid(
                f"_lastUpdated {value!r} is not [eq|ge|gt|le|lt]YYYY[-MM[-DD[Thh:mm[:ss]"
                "(Z|+hh:mm)]]]",
                "_lastUpdated",
                code="value",
            )
        op, text = m.group(1) or "eq", m.group(2)
        try:
            low, high = _range_of(text)
        except (ValueError, OverflowError) as e:
            raise Invalid(f"_lastUpdated {value!r}: {e}", "_lastUpdated", code="value") from None
        if op in ("eq", "ge"):
            bounds.append(settlement.DateBound("ge", low))
        if op in ("eq", "le"):
            bounds.append(settlement.DateBound("lt", high))
        if op == "gt":
            bounds.append(settlement.DateBound("ge", high))
        if op == "lt":
            bounds.append(settlement.DateBound("lt", low))
    return tuple(bounds)


def _range_of(text: str) -> tuple[str, str]:
    """[low, high) of a date or dateTime at its precision, as fixed-width UTC text."""
    if "T" in text:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
        has_seconds = text.count(":") >= 3 or (text.count(":") == 2 and "Z" in text)
        step = timedelta(seconds=1) if has_seconds else timedelta(minutes=1)
        if "." in text:
            digits = len(re.split(r"[Z+-]", text.split(".", 1)[1])[0])
            step = timedelta(microseconds=10 ** max(0, 6 - digits))
        return _fmt(moment), _fmt(moment + step)
    parts = [int(p) for p in text.split("-")]
    if len(parts) == 1:
        low = datetime(parts[0], 1, 1, tzinfo=UTC)
        high = datetime(parts[0] + 1, 1, 1, tzinfo=UTC)
    elif len(parts) == 2:
        low = datetime(parts[0], parts[1], 1, tzinfo=UTC)
        year, month = (parts[0] + 1, 1) if parts[1] == 12 else (parts[0], parts[1] + 1)
        high = datetime(year, month, 1, tzinfo=UTC)
    else:
        low = datetime(parts[0], parts[1], parts[2], tzinfo=UTC)
        high = low + timedelta(days=1)
    return _fmt(low), _fmt(high)


def _fmt(moment: datetime) -> str:
    return settlement.utc_text(moment)


# --- the paging cursor --------------------------------------------------------------------


def _query_digest(params: list[tuple[str, str]]) -> str:
    kept = sorted((k, v) for k, v in params if k != "_cursor")
    return hashlib.sha256(json.dumps(kept).encode()).hexdigest()[:32]


def make_cursor(secret: bytes, client_id: str, digest: str, after: tuple[int, int]) -> str:
    """The opaque position after which the next page starts, bound to the client and query."""
    payload = json.dumps({"a": list(after), "c": client_id, "q": digest}).encode()
    tag = hmac.new(secret, payload, hashlib.sha256).digest()[:16]
    return _b64(payload) + "." + _b64(tag)


def read_cursor(secret: bytes, client_id: str, digest: str, cursor: str) -> tuple[int, int]:
    """The position a cursor names; 400 if it was altered, or made for another query/client."""
    bad = Invalid(
        "_cursor is not a cursor this server issued for this search and client: follow the "
        "`next` link exactly as given",
        "_cursor",
        code="value",
    )
    payload_text, dot, tag_text = cursor.partition(".")
    try:
        payload, tag = _unb64(payload_text), _unb64(tag_text)
    except ValueError:
        raise bad from None
    expected = hmac.new(secret, payload, hashlib.sha256).digest()[:16]
    if not dot or not hmac.compare_digest(tag, expected):
        raise bad
    found = json.loads(payload)
    if found.get("c") != client_id or found.get("q") != digest:
        raise bad
    idx, pos = found["a"]
    return int(idx), int(pos)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,512}", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- the searchset ------------------------------------------------------------------------


ACCREDITATION_STATUS_EXTENSION = "urn:medledger:extension:accreditation-status"


def service_date(row: settlement.Row) -> date:
    """The day a resource's service is dated: its own date (Claim.created, Invoice.date,
    Coverage.period.start, ...), else the day it was last updated."""
    return date.fromisoformat((row.data_date or row.last_updated)[:10])


def accreditation_extensions(record: institutions.Institution | None, day: date) -> bytes:
    """`Bundle.entry.extension` saying the submitting hospital's international accreditation
    status on the service date: one per accreditation (`accredited`, `lapsed` with the day it
    lapsed, or `not-yet`), or one `none` for a hospital without any in the registry."""
    shown: list[dict[str, Any]] = []
    for acc in record.accreditations if record is not None else ():
        if not acc.international:
            continue
        status = institutions.accreditation_status(acc, day)
        parts: list[dict[str, Any]] = [
            {"url": "body", "valueString": acc.body},
            {"url": "date", "valueDate": day.isoformat()},
            {"url": "status", "valueCode": status},
        ]
        if status == "lapsed":
            parts.append({"url": "lapsed", "valueDate": institutions.lapse_of(acc).on.isoformat()})
        shown.append({"url": ACCREDITATION_STATUS_EXTENSION, "extension": parts})
    if not shown:
        none = [
            {"url": "date", "valueDate": day.isoformat()},
            {"url": "status", "valueCode": "none"},
        ]
        shown.append({"url": ACCREDITATION_STATUS_EXTENSION, "extension": none})
    return json.dumps(shown, ensure_ascii=False, separators=(",", ":")).encode()


def searchset(
    resources: list[tuple[settlement.Row, bytes]],
    links: list[tuple[str, str]],
    registry: Mapping[str, institutions.Institution | None],
) -> bytes:
    """A searchset Bundle around resources exactly as submitted (FHIR R4 section 3.1.1.3),
    each entry carrying its hospital's accreditation status on the service date.

    `total` is left out: a count would have to run the consent policy over every match.
    """
    link = json.dumps([{"relation": r, "url": u} for r, u in links], separators=(",", ":"))
    entries = b",".join(
        b'{"extension":' + accreditation_extensions(registry[row.sender], service_date(row))
        + b',"fullUrl":"urn:medledger:entry:' + f"{row.index}:{row.pos}".encode()
        + b'","resource":' + data + b',"search":{"mode":"match"}}'
        for row, data in resources
    )  # fmt: skip
    return (
        b'{"resourceType":"Bundle","type":"searchset","link":'
        + link.encode()
        + b',"entry":['
        + entries
        + b"]}"
    )


@dataclass(frozen=True)
class Search:
    query: settlement.Query
    count: int
    client: Client
    base_url: str
    params: list[tuple[str, str]]


def run_search(
    services: Services,
    gate: TransferLedger,
    search: Search,
    purpose: str | None,
    cursor: str | None,
) -> Answer:
    """One page of a search (blocking): rows in ledger order, the policy applied to each."""
    engine = services.engine
    secret = secrets.secret(engine, CURSOR_SECRET)
    digest = _query_digest(search.params)
    after = None if cursor is None else read_cursor(secret, search.client.client_id, digest, cursor)
    reader = settlement.BundleBytes(services.vault)
    policy = None
    if purpose is not None:
        assert search.client.org is not None
        now = datetime.now(UTC)
        policy = settlement.InsurerPolicy(engine, gate, search.client.org, purpose, now, reader)
    page: list[settlement.Row] = []
    withheld: list[settlement.Row] = []
    more = False
    while not more:
        batch = settlement.search_rows(engine, replace(search.query, after=after, limit=BATCH))
        for row in batch:
            if len(page) == search.count:
                more = True
                break
            after = (row.index, row.pos)
            if policy is None or policy.decide(row).permit:
                page.append(row)
            else:
                withheld.append(row)
        if len(batch) < BATCH:
            break
    resources = [(row, reader.resource(row)) for row in page]
    registry = {r.sender: institutions.lookup(engine, r.sender) for r in page}
    self_url = search.base_url + ("?" + urlencode(search.params) if search.params else "")
    links = [("self", self_url)]
    if more:
        token = make_cursor(secret, search.client.client_id, digest, (page[-1].index, page[-1].pos))
        kept = [(k, v) for k, v in search.params if k != "_cursor"]
        links.append(("next", search.base_url + "?" + urlencode([*kept, ("_cursor", token)])))
    # The access entries name each patient as the Bundles' own entries do (the vault's
    # pseudonyms, which an erasure unlinks), never by the index's lookup tag: every patient
    # the Bundles of the answer name (a Bundle may name a mother and her baby), and each
    # patient an identifier names at several hospitals.
    about = page or withheld
    return Answer(
        body=searchset(resources, links, registry),
        disclosed=len(page),
        withheld=len(withheld),
        patients=bundle_patients(services.vault, (r.index for r in about)),
        detail=f"{search.query.resource_types[0]} search: {len(page)} returned, "
        f"{len(withheld)} withheld",
    )


# --- the endpoints ------------------------------------------------------------------------


# Auditors and admins are refused (403): this is patient data. The scope is checked with the
# request, after the purpose of use, so that an insurer's refusal is an access entry.
Searcher = Annotated[
    Client,
    Depends(
        require_role(
            "hospital",
            "insurer",
            scope=endpoint_scopes(
                "`system/<Type>.s` of the type searched (checked after the purpose of use, "
                "so that a refusal is an access entry)",
                *(f"{t}.s" for t in settlement.SEARCH_TYPES),
            ),
        )
    ),
]


def _make_endpoint(resource_type: str) -> Callable[..., Awaitable[Response]]:
    async def search_settlement(
        request: Request,
        client: Searcher,
        services: ServicesDep,
        indexes: IndexesDep,
        gate: GateDep,
        patient_identifier: Annotated[
            str | None,
            Query(
                alias="patient.identifier",
                max_length=512,
                description="the patient's identifier as submitted: system|value",
            ),
        ] = None,
        patient_identifier_modifier: Annotated[
            str | None,
            Query(
                alias="patient:identifier",
                max_length=512,
                description="the same as patient.identifier, in R4's modifier form",
            ),
        ] = None,
        patient: Annotated[
            str | None,
            Query(
                max_length=90,
                description="Patient/<id> or <id>: the id is the patient's pseudonym (64 hex)",
            ),
        ] = None,
        ids: Annotated[
            str | None,
            Query(alias="_id", max_length=1000, description="ids as submitted, comma-separated"),
        ] = None,
        insurer: Annotated[
            str | None, Query(max_length=80, description="Organization/<id> or <id>")
        ] = None,
        identifier: Annotated[
            str | None, Query(max_length=512, description="system|value, |value or value")
        ] = None,
        last_updated: Annotated[
            list[str] | None,
            Query(alias="_lastUpdated", description="[eq|ge|gt|le|lt]date or dateTime"),
        ] = None,
        count: Annotated[
            int | None,
            Query(alias="_count", ge=1, description=f"page size (at most {MAX_COUNT})"),
        ] = None,
        cursor: Annotated[
            str | None,
            Query(alias="_cursor", max_length=1100, description="from the `next` link"),
        ] = None,
        purpose_of_use: PurposeHeader = None,
    ) -> Response:
        async def run(purpose: str | None) -> Answer:
            require_scope(client, resource_type, "search")
            named = patient_identifier_of(patient_identifier, patient_identifier_modifier)
            pseudonym = patient_reference(patient) if patient is not None else None
            q = _query(resource_type, client, named, pseudonym, insurer, identifier)
            if ids is not None:
                q = replace(q, resource_ids=ids_param(ids))
            bounds = date_bounds(last_updated or [])
            n = min(count or DEFAULT_COUNT, MAX_COUNT)
            if identifier is not None:
                key = services.pseudonym_key
                q = replace(q, identifier_key=token_param(key, identifier, "identifier"))
            search = Search(
                query=replace(q, last_updated=bounds),
                count=n,
                client=client,
                base_url=public_url(request) + request.url.path,
                params=used_params(request),
            )
            await run_in_threadpool(fresh_indexes, services, indexes)
            keys = await run_in_threadpool(_patient_keys, services, client, named, pseudonym)
            if keys is not None:
                search = replace(search, query=replace(search.query, patient_keys=keys))
            return await run_in_threadpool(run_search, services, gate, search, purpose, cursor)

        if client.role == "insurer":
            answer = await recorded_once(
                services, client, resource_type, purpose_of_use, run, action="search"
            )
        else:
            answer = await run(None)
        return Response(answer.body, 200, media_type=FHIR_JSON_UTF8)

    search_settlement.__name__ = f"search_{resource_type}"
    return search_settlement


def _query(
    resource_type: str,
    client: Client,
    patient_identifier: str | None,
    patient: str | None,
    insurer: str | None,
    identifier: str | None,
) -> settlement.Query:
    """The search as the client's role narrows it (patients are resolved afterwards)."""
    if patient_identifier is not None:
        patient_identifier_param(patient_identifier)
    wanted = insurer_param(insurer) if insurer is not None else None
    if client.role == "insurer":
        if patient_identifier is None and patient is None:
            raise Invalid(
                "an insurer's search names one patient (patient.identifier=system|value): "
                "consent and the accounting of disclosures are per patient; use $export for "
                "all the patients whose consent covers this insurer",
                "patient.identifier",
                code="required",
            )
        if wanted is not None and wanted != client.org:
            raise Forbidden(
                f"an insurer searches only its own resources (insurer={client.org})",
            )
        wanted = client.org
    return settlement.Query(
        resource_types=(resource_type,),
        sender=client.org if client.role == "hospital" else None,
        insurer=wanted,
    )


def _patient_keys(
    services: Services, client: Client, patient_identifier: str | None, patient: str | None
) -> frozenset[bytes] | None:
    keys: set[bytes] = set()
    if patient is not None:
        keys.add(bytes.fromhex(patient))
    if patient_identifier is not None:
        pair = patient_identifier_param(patient_identifier)
        sender = client.org if client.role == "hospital" else None
        found = settlement.patient_keys(services.engine, services.pseudonym_key, pair, sender)
        keys = found if patient is None else keys & found
    if patient is None and patient_identifier is None:
        return None
    return frozenset(keys)


for _type in settlement.SEARCH_TYPES:
    router.add_api_route(
        f"/{_type}",
        _make_endpoint(_type),
        methods=["GET"],
        summary=f"Search {_type} resources (settlement pull under consent)",
        response_class=Response,
        responses={
            200: {
                "content": {FHIR_JSON: {"schema": {"type": "object"}}},
                "description": f"searchset Bundle of {_type} resources, exactly as submitted",
            },
            **error_responses(400, 401, 403, 503),
        },
        operation_id=f"search_{_type}",
    )


def capability_resources() -> list[dict[str, Any]]:
    """CapabilityStatement.rest.resource entries of the settlement search (FHIR R4 section
    6.1 CapabilityStatement: searchParam names the parameters each type takes)."""
    params = [
        ("patient.identifier", "token", "the patient's identifier as submitted: system|value"),
        (
            "patient",
            "reference",
            "Patient/<id> or <id>, the id being the patient's pseudonym (64 hex digits, as in "
            "the AuditEvents); patient:identifier=system|value names the patient by an "
            "identifier the hospital submitted",
        ),
        ("insurer", "reference", "the payer: Organization/<id>"),
        ("identifier", "token", "system|value, |value or value"),
        ("_id", "token", "the resources' ids as submitted, comma-separated"),
        ("_lastUpdated", "date", "meta.lastUpdated, else the time the Bundle was received"),
        ("_count", "number", f"page size, at most {MAX_COUNT} (default {DEFAULT_COUNT})"),
        ("_cursor", "string", "the opaque position a `next` link carries"),
    ]
    return [
        {
            "type": rtype,
            "documentation": (
                "search-type, exactly as submitted. Hospitals: their own submissions. "
                "Insurers: one named patient's resources addressed to them, each permitted by "
                "the patient's newest Consent for their purpose (X-Purpose-Of-Use or the "
                "token's purpose_of_use) and by the cross-border gate; every request is an "
                "access entry (BALP AuditEvent) on the ledger. `total` is not given."
            ),
            "interaction": [{"code": "search-type"}],
            "searchParam": [
                {"name": name, "type": kind, "documentation": doc} for name, kind, doc in params
            ],
        }
        for rtype in settlement.SEARCH_TYPES
    ]
