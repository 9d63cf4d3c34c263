"""The settlement index: every settlement resource and Consent, where its bytes are, whose it is.

A derived index (:mod:`exchange.derived`) over the stored `settlement` and `consent` Bundles,
one row per Claim, ClaimResponse, Invoice, ExplanationOfBenefit, Coverage, DocumentReference
and Consent in them: the ledger entry, the sender, the resource type and id, the patient's
keyed pseudonym, the insurer the resource is addressed to, its lastUpdated, its clinical date
and the byte span of the resource inside the stored Bundle. A search answers each resource by
slicing that span out of the stored bytes, so it is exactly what was submitted (`1200.00`
stays `1200.00`: nothing is parsed and re-serialised on the way out).

A second index keeps the search keys a resource has several of: its identifiers (a token
search needs equality only, and identifier text is unbounded, so it is indexed through
HMAC-SHA-256 under the log's lookup key) and the pseudonyms of every identifier of its patient
(the same keyed HMAC the ledger entries' subject uses, :func:`exchange.services.pseudonym`).

The policy an insurer's read passes (:func:`insurer_decisions`) is here too, pure over what the
index holds: the patient's Consents evaluated by :func:`exchange.consent.evaluate` at request
time, then the cross-border gate (:mod:`exchange.crossborder`) for each patient disclosed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    Engine,
    and_,
    exists,
    func,
    select,
)

from exchange.bundles.read import bundle_by_id
from exchange.consent import rules as consent_rules
from exchange.consent.crossborder import CHINA, TransferLedger, recipient_of
from exchange.indexes.derived import DerivedIndex, StoredBundle
from exchange.store.tables import bundles_table, settlement_keys_table, settlement_table
from exchange.vault import Vault, lookup_tag

SEARCH_TYPES = (
    "Claim",
    "ClaimResponse",
    "Invoice",
    "ExplanationOfBenefit",
    "Coverage",
    "DocumentReference",
)
INDEXED_TYPES = frozenset({*SEARCH_TYPES, "Consent"})
INDEXED_KINDS = ("settlement", "consent")

# Where each type names its patient (FHIR R4 search parameter `patient` of each type).
PATIENT_FIELDS: Mapping[str, str] = {
    "Claim": "patient",
    "ClaimResponse": "patient",
    "ExplanationOfBenefit": "patient",
    "Invoice": "subject",
    "Coverage": "beneficiary",
    "DocumentReference": "subject",
    "Consent": "patient",
}
# Where each type names the paying organisation (R4 search parameters `insurer` of Claim,
# ClaimResponse and ExplanationOfBenefit, `payor` of Coverage, `recipient` of Invoice).
INSURER_FIELDS: Mapping[str, str] = {
    "Claim": "insurer",
    "ClaimResponse": "insurer",
    "ExplanationOfBenefit": "insurer",
    "Invoice": "recipient",
    "Coverage": "payor",
}
# The resource's clinical date, for Consent.provision.dataPeriod.
DATE_FIELDS: Mapping[str, str] = {
    "Claim": "created",
    "ClaimResponse": "created",
    "ExplanationOfBenefit": "created",
    "Invoice": "date",
    "DocumentReference": "date",
    "Consent": "dateTime",
}

KEY_IDENT = "ident"  # ident_key(system, value)
KEY_IDENT_VALUE = "ident-value"  # ident_value_key(value): a search without a system
KEY_PATIENT = "patient"  # pseudonym of one identifier of the resource's patient


# --- the byte spans of Bundle.entry[*].resource -------------------------------------------------

_WS = frozenset(b" \t\n\r")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_STRUCTURAL = re.compile(rb'["{}\[\]]')
_SCALAR_END = re.compile(rb"[,}\]\s]")


class SpanError(ValueError):
    """The bytes are not the JSON shape a span was asked of (stored Bundles always are)."""


def _skip_ws(data: bytes, i: int) -> int:
    while i < len(data) and data[i] in _WS:
        i += 1
    return i


def _string_end(data: bytes, i: int) -> int:
    m = _STRING.match(data, i)
    if m is None:
        raise SpanError(f"unterminated string at byte {i}")
    return m.end()


def value_end(data: bytes, i: int) -> int:
    """The offset just past the JSON value starting at `i` (RFC 8259 section 2)."""
    first = data[i : i + 1]
    if first == b'"':
        return _string_end(data, i)
    if first not in (b"{", b"["):
        m = _SCALAR_END.search(data, i)
        return len(data) if m is None else m.start()
    depth = 0
    pos = i
    while True:
        m = _STRUCTURAL.search(data, pos)
        if m is None:
            raise SpanError(f"unbalanced value starting at byte {i}")
        c = m.group()
        if c == b'"':
            pos = _string_end(data, m.start())
            continue
        depth += 1 if c in (b"{", b"[") else -1
        pos = m.end()
        if depth == 0:
            return pos


def object_members(data: bytes, i: int) -> Iterator[tuple[str, int, int]]:
    """(name, value start, value end) of each member of the object starting at `i`."""
    if data[i : i + 1] != b"{":
        raise SpanError(f"expected an object at byte {i}")
    pos = _skip_ws(data, i + 1)
    if data[pos : pos + 1] == b"}":
        return
    while True:
        key_end = _string_end(data, pos)
        name = json.loads(data[pos:key_end])  # decodes escapes: "entr\u0079" is "entry"
        pos = _skip_ws(data, key_end)
        if data[pos : pos + 1] != b":":
            raise SpanError(f"expected ':' at byte {pos}")
        start = _skip_ws(data, pos + 1)
        end = value_end(data, start)
        yield name, start, end
        pos = _skip_ws(data, end)
        if data[pos : pos + 1] == b"}":
            return
        if data[pos : pos + 1] != b",":
            raise SpanError(f"expected ',' or '}}' at byte {pos}")
        pos = _skip_ws(data, pos + 1)


def array_elements(data: bytes, i: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each element of the array starting at `i`."""
    if data[i : i + 1] != b"[":
        raise SpanError(f"expected an array at byte {i}")
    pos = _skip_ws(data, i + 1)
    if data[pos : pos + 1] == b"]":
        return
    while True:
        end = value_end(data, pos)
        yield pos, end
        pos = _skip_ws(data, end)
        if data[pos : pos + 1] == b"]":
            return
        if data[pos : pos + 1] != b",":
            raise SpanError(f"expected ',' or ']' at byte {pos}")
        pos = _skip_ws(data, pos + 1)


def resource_spans(data: bytes) -> dict[int, tuple[int, int]]:
    """Bundle.entry[pos].resource -> (start, end) byte offsets in the Bundle's bytes.

    The Bundle passed strict intake (no duplicate keys, UTF-8), so the last member named
    `resource` is the only one; entries without a resource have no span.
    """
    spans: dict[int, tuple[int, int]] = {}
    start = _skip_ws(data, 0)
    for name, vstart, _ in object_members(data, start):
        if name != "entry" or data[vstart : vstart + 1] != b"[":
            continue
        for pos, (estart, _) in enumerate(array_elements(data, vstart)):
            if data[estart : estart + 1] != b"{":
                continue
            for member, rstart, rend in object_members(data, estart):
                if member == "resource":
                    spans[pos] = (rstart, rend)
    return spans


# --- what one resource says -----------------------------------------------------------------


def _pairs(identifiers: Any) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for ident in identifiers if isinstance(identifiers, list) else [identifiers]:
        if not isinstance(ident, dict):
            continue
        system, value = ident.get("system"), ident.get("value")
        if isinstance(system, str) and isinstance(value, str) and system and value:
            if (system, value) not in found:
                found.append((system, value))
    return found


def resource_identifiers(resource: Mapping[str, Any]) -> list[tuple[str | None, str]]:
    """identifier[*] (and DocumentReference.masterIdentifier) as (system or None, value)."""
    found: list[tuple[str | None, str]] = []
    raw = resource.get("identifier")
    items = list(raw) if isinstance(raw, list) else [raw] if isinstance(raw, dict) else []
    master = resource.get("masterIdentifier")
    if isinstance(master, dict):
        items.append(master)
    for ident in items:
        if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
            continue
        system = ident.get("system") if isinstance(ident.get("system"), str) else None
        found.append((system, ident["value"]))
    return found


def ident_key(key: bytes, system: str, value: str) -> bytes:
    """The index key of an identifier: keyed (HMAC-SHA-256 under the log's lookup key), so a
    copy of the index does not let claim numbers be guessed by hashing candidates."""
    return hmac.new(key, f"ident\x00{system}\x00{value}".encode(), hashlib.sha256).digest()


def ident_value_key(key: bytes, value: str) -> bytes:
    """The index key of an identifier's value alone (a token search without a system)."""
    return hmac.new(key, f"value\x00{value}".encode(), hashlib.sha256).digest()


@dataclass
class _BundleView:
    """The entries of one Bundle, addressable the ways a reference inside it can address them."""

    resources: dict[int, dict[str, Any]]
    by_ref: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> _BundleView:
        view = cls({})
        entries = doc.get("entry")
        for pos, entry in enumerate(entries if isinstance(entries, list) else []):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict):
                continue
            view.resources[pos] = resource
            full_url = entry.get("fullUrl")
            if isinstance(full_url, str):
                view.by_ref[full_url] = resource
            rtype, rid = resource.get("resourceType"), resource.get("id")
            if isinstance(rtype, str) and isinstance(rid, str):
                view.by_ref.setdefault(f"{rtype}/{rid}", resource)
        return view

    def resolve(self, reference: str) -> dict[str, Any] | None:
        """A literal reference to an entry: its fullUrl, `Type/id`, or a URL ending so."""
        if reference in self.by_ref:
            return self.by_ref[reference]
        parts = reference.rstrip("/").split("/")
        if len(parts) >= 2:
            return self.by_ref.get("/".join(parts[-2:]))
        return None

    def first_patient(self) -> dict[str, Any] | None:
        for resource in self.resources.values():
            if resource.get("resourceType") == "Patient":
                return resource
        return None


def patient_identifiers_of(resource: Mapping[str, Any], view: _BundleView) -> list[tuple[str, str]]:
    """The identifiers of the patient a resource is about (FHIR R4 `patient` parameter).

    The reference is resolved inside the Bundle (Patients are not resources of this server);
    a logical reference (Reference.identifier) names the patient directly. A resource whose
    reference does not resolve is taken to be about the Bundle's first Patient, the patient
    the ledger entry's subject names.
    """
    ref = resource.get(PATIENT_FIELDS.get(str(resource.get("resourceType")), ""))
    if isinstance(ref, dict):
        literal = ref.get("reference")
        if isinstance(literal, str):
            target = view.resolve(literal)
            if target is not None and target.get("resourceType") == "Patient":
                return _pairs(target.get("identifier"))
        logical = _pairs(ref.get("identifier"))
        if logical:
            return logical
    patient = view.first_patient()
    return _pairs(patient.get("identifier")) if patient is not None else []


_ORG_REF = re.compile(r"(?:^|/)Organization/([A-Za-z0-9\-.]{1,64})$")


def organization_of(ref: Any, view: _BundleView) -> str | None:
    """An Organization reference as the org id consents name: `Organization/x` -> x, else the
    identifier value (Reference.identifier, or that of the Organization entry it resolves to)."""
    if isinstance(ref, list):
        ref = ref[0] if ref else None
    if not isinstance(ref, dict):
        return None
    literal = ref.get("reference")
    if isinstance(literal, str):
        m = _ORG_REF.search(literal)
        if m is not None:
            return m.group(1)
        target = view.resolve(literal)
        if target is not None and target.get("resourceType") == "Organization":
            pairs = _pairs(target.get("identifier"))
            if pairs:
                return pairs[0][1][:64]
            rid = target.get("id")
            return rid if isinstance(rid, str) else None
    ident = ref.get("identifier")
    if isinstance(ident, dict) and isinstance(ident.get("value"), str):
        return str(ident["value"])[:64]
    return None


def utc_instant(text: str) -> str:
    """A FHIR instant as fixed-width UTC (`2026-03-02T08:20:00.000000Z`), which sorts in time
    order as text on every database. ValueError when it is not an instant in years 1-9999."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return utc_text(parsed.astimezone(UTC))
    except OverflowError:
        raise ValueError(f"{text!r} is outside years 1-9999 in UTC") from None


def utc_text(moment: datetime) -> str:
    """An aware UTC datetime as fixed-width text (the year zero-padded: strftime's %Y is not
    on every platform, and `999` would sort after `2026`)."""
    return f"{moment.year:04d}-" + moment.strftime("%m-%dT%H:%M:%S.%fZ")


def _data_date(resource: Mapping[str, Any]) -> str | None:
    rtype = str(resource.get("resourceType"))
    value: Any = resource.get(DATE_FIELDS.get(rtype, ""))
    if rtype == "Coverage":
        period = resource.get("period")
        value = period.get("start") if isinstance(period, dict) else None
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10]).isoformat()
    except ValueError:
        return None


def _last_updated(resource: Mapping[str, Any], received: str) -> str:
    meta = resource.get("meta")
    stated = meta.get("lastUpdated") if isinstance(meta, dict) else None
    if isinstance(stated, str):
        try:
            return utc_instant(stated)
        except ValueError:
            pass  # intake checked it is an instant; a received time is the fallback anyway
    return utc_instant(received)


@dataclass(frozen=True)
class IndexedResource:
    """What the index keeps of one resource (pure: computed from the Bundle alone)."""

    pos: int
    resource_type: str
    resource_id: str | None
    patient: list[tuple[str, str]]
    insurer: str | None
    identifiers: list[tuple[str | None, str]]
    last_updated: str
    data_date: str | None
    start: int
    length: int


def indexed_resources(data: bytes, received: str) -> list[IndexedResource]:
    """The indexed resources of one stored Bundle, in entry order.

    A DocumentReference names no payer: it is addressed to the payer of the other settlement
    resources of its Bundle when they name exactly one (the claim it is an attachment of).
    """
    doc = json.loads(data)
    view = _BundleView.of(doc)
    spans = resource_spans(data)
    found: list[IndexedResource] = []
    for pos, resource in view.resources.items():
        rtype = resource.get("resourceType")
        if rtype not in INDEXED_TYPES or pos not in spans:
            continue
        start, end = spans[pos]
        rid = resource.get("id")
        field_name = INSURER_FIELDS.get(rtype)
        found.append(
            IndexedResource(
                pos=pos,
                resource_type=rtype,
                resource_id=rid if isinstance(rid, str) else None,
                patient=patient_identifiers_of(resource, view),
                insurer=organization_of(resource.get(field_name), view) if field_name else None,
                identifiers=resource_identifiers(resource),
                last_updated=_last_updated(resource, received),
                data_date=_data_date(resource),
                start=start,
                length=end - start,
            )
        )
    payers = {r.insurer for r in found if r.resource_type in INSURER_FIELDS and r.insurer}
    if len(payers) == 1:
        payer = payers.pop()
        found = [
            _with_insurer(r, payer) if r.resource_type == "DocumentReference" else r for r in found
        ]
    return found


def _with_insurer(r: IndexedResource, insurer: str) -> IndexedResource:
    return IndexedResource(
        r.pos, r.resource_type, r.resource_id, r.patient, insurer, r.identifiers,
        r.last_updated, r.data_date, r.start, r.length,
    )  # fmt: skip


# --- the derived indexes --------------------------------------------------------------------


def _version_and_received(engine: Engine, index: int) -> tuple[int, str]:
    # Metadata only: the Bundle's bytes come through the derived index (StoredBundle.data).
    t = bundles_table
    with engine.connect() as conn:
        row = conn.execute(select(t.c.version, t.c.received).where(t.c.idx == index)).one()
    return int(row[0]), str(row[1])


def settlement_index(engine: Engine, key: bytes) -> DerivedIndex:
    """One row per indexed resource, under this log's pseudonym key."""

    def rows_of(bundle: StoredBundle) -> list[dict[str, object]]:
        version, received = _version_and_received(engine, bundle.index)
        return [
            {
                "idx": bundle.index,
                "pos": r.pos,
                "sender": bundle.sender,
                "bundle_id": bundle.id,
                "version": version,
                "resource_type": r.resource_type,
                "resource_id": r.resource_id[:64] if r.resource_id else None,
                "subject": lookup_tag(key, bundle.sender, r.patient[0]) if r.patient else None,
                "insurer": r.insurer,
                "last_updated": r.last_updated,
                "data_date": r.data_date,
                "start": r.start,
                "length": r.length,
            }
            for r in indexed_resources(bundle.data, received)
        ]

    return DerivedIndex("settlement", INDEXED_KINDS, settlement_table, rows_of)


def settlement_keys_index(key: bytes) -> DerivedIndex:
    """The identifier hashes and patient pseudonyms of each indexed resource."""

    def rows_of(bundle: StoredBundle) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for r in indexed_resources(bundle.data, "1970-01-01T00:00:00Z"):
            keys: list[tuple[str, bytes]] = []
            for system, value in r.identifiers:
                # `identifier=|value` asks for an identifier without a system: system "".
                keys.append((KEY_IDENT, ident_key(key, system or "", value)))
                keys.append((KEY_IDENT_VALUE, ident_value_key(key, value)))
            keys.extend((KEY_PATIENT, lookup_tag(key, bundle.sender, p)) for p in r.patient)
            rows.extend(
                {"idx": bundle.index, "pos": r.pos, "kind": kind, "key": k}
                for kind, k in dict.fromkeys(keys)
            )
        return rows

    return DerivedIndex("settlement-keys", INDEXED_KINDS, settlement_keys_table, rows_of)


# --- queries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One indexed resource, as the index holds it."""

    index: int
    pos: int
    sender: str
    bundle_id: str
    version: int
    resource_type: str
    resource_id: str | None
    subject: bytes | None
    insurer: str | None
    last_updated: str
    data_date: str | None
    start: int
    length: int


@dataclass(frozen=True)
class DateBound:
    """One `_lastUpdated` comparison: op is one of ge, gt, le, lt (on fixed-width UTC text)."""

    op: str
    value: str


@dataclass(frozen=True)
class Query:
    """A settlement search, already narrowed to what the caller's role may ask."""

    resource_types: tuple[str, ...]
    sender: str | None = None  # a hospital: only its own submissions
    insurer: str | None = None
    patient_keys: frozenset[bytes] | None = None
    identifier_key: tuple[str, bytes] | None = None  # (key kind, hash)
    resource_ids: tuple[str, ...] | None = None  # `_id`: any of these, as submitted
    last_updated: tuple[DateBound, ...] = ()
    after: tuple[int, int] | None = None  # (idx, pos): the page starts after it
    limit: int = 50


def _key_filter(kind: str, keys: Sequence[bytes]) -> Any:
    k, s = settlement_keys_table.c, settlement_table.c
    return exists().where(k.idx == s.idx, k.pos == s.pos, k.kind == kind, k.key.in_(keys))


def _latest_version_only() -> Any:
    # A newer version of a Bundle replaces it whole: its older resources are no longer current.
    b, s = bundles_table.c, settlement_table.c
    return ~exists().where(b.id == s.bundle_id, b.version > s.version)


_OPS = {"ge": "__ge__", "gt": "__gt__", "le": "__le__", "lt": "__lt__"}


def search_rows(engine: Engine, q: Query) -> list[Row]:
    """The indexed resources matching the query, in ledger order (idx, pos), at most `limit`."""
    s = settlement_table.c
    stmt = select(settlement_table).where(
        s.resource_type.in_(q.resource_types), _latest_version_only()
    )
    if q.sender is not None:
        stmt = stmt.where(s.sender == q.sender)
    if q.insurer is not None:
        stmt = stmt.where(s.insurer == q.insurer)
    if q.patient_keys is not None:
        stmt = stmt.where(_key_filter(KEY_PATIENT, sorted(q.patient_keys)))
    if q.identifier_key is not None:
        stmt = stmt.where(_key_filter(q.identifier_key[0], [q.identifier_key[1]]))
    if q.resource_ids is not None:
        stmt = stmt.where(s.resource_id.in_(q.resource_ids))
    for bound in q.last_updated:
        stmt = stmt.where(getattr(s.last_updated, _OPS[bound.op])(bound.value))
    if q.after is not None:
        idx, pos = q.after
        stmt = stmt.where((s.idx > idx) | and_(s.idx == idx, s.pos > pos))
    stmt = stmt.order_by(s.idx, s.pos).limit(q.limit)
    with engine.connect() as conn:
        return [row_of(r) for r in conn.execute(stmt)]


def row_of(r: Any) -> Row:
    """One indexed resource, from a row of the settlement table."""
    m = r._mapping
    return Row(
        int(m["idx"]), int(m["pos"]), m["sender"], m["bundle_id"], int(m["version"]),
        m["resource_type"], m["resource_id"],
        None if m["subject"] is None else bytes(m["subject"]), m["insurer"],
        m["last_updated"], m["data_date"], int(m["start"]), int(m["length"]),
    )  # fmt: skip


def senders(engine: Engine) -> list[str]:
    """Every org with indexed resources (a patient identifier is pseudonymised per sender)."""
    with engine.connect() as conn:
        found = conn.execute(select(settlement_table.c.sender).distinct()).scalars()
        return sorted(found)


def patient_keys(
    engine: Engine, key: bytes, patient: tuple[str, str], sender: str | None
) -> set[bytes]:
    """The pseudonyms a patient identifier has: under one sender, or under every sender."""
    orgs = [sender] if sender is not None else senders(engine)
    return {lookup_tag(key, org, patient) for org in orgs}


class BundleBytes:
    """Stored Bundle bytes, each version read once per request (opened by the vault)."""

    def __init__(self, vault_: Vault) -> None:
        self.vault = vault_
        self._cache: dict[tuple[str, int], bytes] = {}

    def resource(self, row: Row) -> bytes:
        k = (row.bundle_id, row.version)
        if k not in self._cache:
            stored = bundle_by_id(self.vault, row.bundle_id, row.version)
            if stored is None:
                raise LookupError(f"Bundle {row.bundle_id} version {row.version} is gone")
            self._cache[k] = stored.data
        return self._cache[k][row.start : row.start + row.length]


def consents_generation(newest: Sequence[int | None]) -> int:
    """The Consents' generation, from the values of :data:`NEWEST_INDEXED` (read by the
    caller beside what it reads: exchange.outbox.endpoints): the ledger index of the newest
    Bundle of a kind this index reads, -1 for none yet.

    While it is unchanged, so is every patient's answer from :func:`consents_of`, however far
    the index has caught up: entries are numbered and committed in order, so a new Consent is
    always a higher index. One index seek per kind (ix_exchange_bundles_kind)."""
    return max((int(i) for i in newest if i is not None), default=-1)


# The newest ledger index of each kind this index reads, as columns of one row; built once
# (asked on every record submission, where building it would cost more than it).
NEWEST_INDEXED = [
    select(func.max(bundles_table.c.idx)).where(bundles_table.c.kind == kind).scalar_subquery()
    for kind in INDEXED_KINDS
]


def consents_of(engine: Engine, sender: str, subject: bytes) -> list[Row]:
    """The index rows of the patient's current Consents from this sender, in submission order:
    those of the latest version of each Bundle only. A Consent a newer version of its Bundle
    no longer carries no longer exists (exchange.consent); this is the one place every reader
    of consents (insurer search and export, the cross-border gate, the regulator's export)
    takes them from."""
    s = settlement_table.c
    stmt = (
        select(settlement_table)
        .where(s.resource_type == "Consent", s.sender == sender, _latest_version_only())
        .where(_key_filter(KEY_PATIENT, [subject]))
        .order_by(s.idx, s.pos)
    )
    with engine.connect() as conn:
        return [row_of(r) for r in conn.execute(stmt)]


# --- the insurer's policy -------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    permit: bool
    reason: str  # no PHI: it goes into the AuditEvent and the OperationOutcome


def consent_names(consent: Mapping[str, Any], org: str) -> bool:
    """Does the consent name this recipient as an actor anywhere (PIPL art. 39's separate
    consent naming the foreign recipient)?"""

    def walk(provision: Any) -> bool:
        if not isinstance(provision, dict):
            return False
        if consent_rules.actor_matches(provision.get("actor") or [], org):
            return True
        return any(walk(p) for p in provision.get("provision") or [])

    return walk(consent.get("provision"))


class InsurerPolicy:
    """Decides, per resource, whether this insurer may receive it now for this purpose.

    Consents are read once per patient per request; the cross-border gate is asked once per
    patient, only for patients whose data the consent lets through (it counts them).
    """

    def __init__(
        self,
        engine: Engine,
        gate: TransferLedger,
        org: str,
        purpose: str,
        now: datetime,
        reader: BundleBytes,
    ) -> None:
        self.engine = engine
        self.gate = gate
        self.org = org
        self.purpose = purpose
        self.now = now
        self.reader = reader
        self._consents: dict[tuple[str, bytes], list[dict[str, Any]]] = {}
        self._gate: dict[bytes, Verdict] = {}
        self._recipient = recipient_of(engine, org)

    def consents(self, row: Row) -> list[dict[str, Any]]:
        assert row.subject is not None
        k = (row.sender, row.subject)
        if k not in self._consents:
            found = consents_of(self.engine, row.sender, row.subject)
            self._consents[k] = [json.loads(self.reader.resource(c)) for c in found]
        return self._consents[k]

    def decide(self, row: Row) -> Verdict:
        if row.insurer != self.org:
            return Verdict(False, "the resource is addressed to another payer")
        if row.subject is None:
            return Verdict(False, "the resource names no patient, so no consent can cover it")
        consents = self.consents(row)
        req = consent_rules.Request(
            org=self.org,
            purpose=self.purpose,
            resource_type=row.resource_type,
            now=self.now,
            data_date=date.fromisoformat(row.data_date) if row.data_date else None,
        )
        decision = consent_rules.evaluate(consents, req)
        if not decision.permit:
            return Verdict(False, decision.reason)
        return self._crossborder(row.subject, consents)

    def _crossborder(self, subject: bytes, consents: list[dict[str, Any]]) -> Verdict:
        if subject in self._gate:
            return self._gate[subject]
        recipient = self._recipient
        if recipient is None:
            verdict = Verdict(
                False,
                f"insurer {self.org} is not a recorded recipient, so no legal basis for "
                "providing data to it is known: record it with `medledger recipients set`",
            )
        elif recipient.country == CHINA:
            verdict = Verdict(True, "permitted by consent")
        else:
            newest = consent_rules.newest_consent(consents)
            gate = self.gate.admit(
                year=self.now.year,
                subject=subject,
                recipient=self.org,
                recipient_country=recipient.country,
                basis=recipient.basis,
                consent_names_recipient=newest is not None and consent_names(newest, self.org),
            )
            verdict = Verdict(gate.allowed, gate.reason)
        self._gate[subject] = verdict
        return verdict
