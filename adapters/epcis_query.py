"""EPCIS 2.0 event queries: the REST binding's ``GET /events`` over dispensing events.

What a traceability partner sends is a SimpleEventQuery (EPCIS 2.0 section 8.2.7.1) written as
URL query parameters (the REST binding, EPCIS 2.0 section 12 and GS1's OpenAPI document): a
list value is separated by ``|``, ``perPage`` and ``nextPageToken`` page the answer, and the
next page is announced in a ``Link`` header with ``rel="next"``. The answer is an
``EPCISQueryDocument`` whose ``queryResults.resultsBody.eventList`` holds the events.

The parameters understood are ``eventType``, ``GE_eventTime`` / ``LT_eventTime``,
``GE_recordTime`` / ``LT_recordTime``, ``EQ_action``, ``EQ_bizStep``, ``EQ_disposition``,
``EQ_readPoint``, ``EQ_bizLocation``, ``EQ_eventID``, ``MATCH_epc``, ``MATCH_anyEPC``,
``MATCH_epcClass`` and ``MATCH_anyEPCClass``. Each is a conjunct; the values of one
parameter are alternatives. Their meaning:

- ``EQ_bizStep`` and ``EQ_disposition`` accept a CBV 2.0 value in any of its three spellings
  -- the bare word of the JSON binding (``dispensing``), the URN
  (``urn:epcglobal:cbv:bizstep:dispensing``) and the Web URI
  (``https://ref.gs1.org/cbv/BizStep-dispensing``) -- and any other absolute URI (a
  vocabulary of one's own); a bare word that is not a CBV value is refused.
- ``GE_`` is greater than or equal, ``LT_`` less than; times are RFC 3339 with an offset and
  compare as instants. A ``+`` that a URL's query decoding turned into a space is read back.
- ``MATCH_`` values (section 8.2.7.1.1) are EPC pure identity patterns (EPC Tag Data Standard
  section 8, ``urn:epc:idpat:sgtin:0312345.067890.*``: each of company prefix, item reference
  and serial is a value or ``*``, and nothing but ``*`` follows a ``*``), EPCs (an EPC URN or
  a GS1 Digital Link; the two spellings of one EPC are the same EPC), or any other URI
  (string equality). ``MATCH_epc`` looks at ``epcList`` and ``childEPCs``, ``MATCH_anyEPC``
  also at ``parentID``, ``inputEPCList`` and ``outputEPCList``; the class forms look at the
  ``epcClass`` of the quantity lists, where a pattern whose serial is ``*`` matches the lots
  of its GTIN. A Digital Link carries no company prefix length, so an SGTIN pattern is
  compared digit by digit with the GTIN it stands for.

Anything else is refused, never ignored (ignoring a filter answers a different question):
an unknown name, a standard parameter this repository does not evaluate, a repeated name, a
malformed value. Each refusal is an :class:`EpcisQueryError` carrying the parameter and the
EPCIS exception it is (``QueryParameterException``), rendered by :meth:`EpcisQueryError.problem`
as the RFC 7807 body the REST binding uses.

Paging is keyed, not counted: the caller hands the events in a fixed order with a key each
(the ledger entry index and the event's position in that entry), an append-only order, so a
page boundary stays put while events are added. The ``nextPageToken`` is the last key of a
page, bound to the query and to the caller's scope and sealed with HMAC-SHA256 under a key
the service keeps: a client can neither forge nor move it, nor use it with another query.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote, unquote, urlencode

from adapters.epcis import CBV, CONTEXT, canonical_uri, time_text
from adapters.tracecode import gtin_check_digit, is_cset82

__all__ = [
    "DEFAULT_PER_PAGE",
    "MAX_PER_PAGE",
    "QUERY_NAME",
    "EpcMatcher",
    "EpcisQueryError",
    "EventKey",
    "EventQuery",
    "Page",
    "PageTokens",
    "QueryAnswer",
    "QueryParameterError",
    "RestQuery",
    "answer",
    "next_link",
    "page",
    "parse_query",
    "query_document",
]

QUERY_NAME = "SimpleEventQuery"
DEFAULT_PER_PAGE = 30  # the REST binding's default
MAX_PER_PAGE = 500  # a larger perPage is served as this many (the binding lets a server cap it)

EventKey = tuple[int, int]
"""Where an event sits in the order events are handed in: (ledger entry index, position)."""

EVENT_TYPES = frozenset(
    {
        "ObjectEvent",
        "AggregationEvent",
        "AssociationEvent",
        "TransformationEvent",
        "TransactionEvent",
    }
)
ACTIONS = frozenset({"ADD", "OBSERVE", "DELETE"})
# CBV 2.0 standard vocabularies (sections 7.1 and 7.2), as the GS1 JSON Schema enumerates them.
BIZ_STEPS = frozenset(
    {
        "accepting", "arriving", "assembling", "collecting", "commissioning", "consigning",
        "creating_class_instance", "cycle_counting", "decommissioning", "departing",
        "destroying", "disassembling", "dispensing", "encoding", "entering_exiting", "holding",
        "inspecting", "installing", "killing", "loading", "other", "packing", "picking",
        "receiving", "removing", "repackaging", "repairing", "replacing", "reserving",
        "retail_selling", "shipping", "staging_outbound", "stock_taking", "stocking", "storing",
        "transporting", "unloading", "unpacking", "void_shipping", "sensor_reporting",
        "sampling",
    }
)  # fmt: skip
DISPOSITIONS = frozenset(
    {
        "active", "container_closed", "damaged", "destroyed", "dispensed", "disposed",
        "encoded", "expired", "in_progress", "in_transit", "inactive", "no_pedigree_match",
        "non_sellable_other", "partially_dispensed", "recalled", "reserved", "retail_sold",
        "returned", "sellable_accessible", "sellable_not_accessible", "stolen", "unknown",
        "available", "completeness_verified", "completeness_inferred", "conformant",
        "container_open", "mismatch_instance", "mismatch_class", "mismatch_quantity",
        "needs_replacement", "non_conformant", "unavailable",
    }
)  # fmt: skip

_TIME = re.compile(
    r"(\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?)([Zz]|[+\- ]\d{2}:\d{2})"
)
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s\"<>\\^`{|}]+")
_SGTIN_DL = re.compile(r"https://id\.gs1\.org/01/([0-9]{14})/(21|10)/([^/?#]+)")
_GTIN_DL = re.compile(r"https://id\.gs1\.org/01/([0-9]{14})")
_PAGING = ("perPage", "nextPageToken")
# Components of the EPC schemes' pure identity patterns (EPC Tag Data Standard 2.0 section 8);
# the last may hold dots, the others may not.
_COMPONENTS = {
    "sgtin": 3, "sscc": 2, "sgln": 3, "grai": 3, "giai": 2, "gsrn": 2, "gsrnp": 2, "gdti": 3,
    "cpi": 3, "sgcn": 3, "ginc": 2, "gsin": 2, "itip": 5, "upui": 3, "pgln": 2, "gid": 3,
    "usdod": 2, "adi": 3, "bic": 1, "imovn": 1,
}  # fmt: skip
# Standard SimpleEventQuery parameters this repository does not evaluate: named in the error.
_STANDARD_PREFIXES = ("EQ_", "GE_", "GT_", "LE_", "LT_", "MATCH_", "WD_", "EXISTS_", "HASATTR_")
_STANDARD_OTHERS = frozenset({"orderBy", "orderDirection", "eventCountLimit", "maxEventCount"})


class EpcisQueryError(ValueError):
    """A query the repository refuses; ``exception`` is the EPCIS 2.0 exception it is."""

    exception: ClassVar[str] = "QueryParameterException"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "Invalid query parameter"

    def __init__(self, parameter: str | None, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter

    def problem(self) -> dict[str, Any]:
        """The RFC 7807 body of the REST binding (``application/problem+json``)."""
        return {
            "type": f"epcisException:{self.exception}",
            "title": self.title,
            "status": self.status,
            "detail": str(self),
        }


class QueryParameterError(EpcisQueryError):
    """QueryParameterException (EPCIS 2.0 8.2.7): a parameter unknown, repeated or malformed."""


# -- EPC matching --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpcMatcher:
    """One value of a ``MATCH_`` parameter: a pure identity pattern, an EPC or another URI."""

    text: str
    scheme: str | None = None  # of a pattern
    parts: tuple[str, ...] = ()  # a pattern's components, "*" or a value
    exact: str | None = None  # an EPC's canonical Digital Link, or the URI itself

    @classmethod
    def parse(cls, text: str, parameter: str) -> EpcMatcher:
        """Read one value; QueryParameterError when it is neither a valid pattern nor a URI."""
        m = re.fullmatch(r"urn:epc:idpat:([a-z0-9]+):(.+)", text)
        if m:
            scheme = m.group(1)
            if scheme not in _COMPONENTS:
                raise QueryParameterError(
                    parameter, f"{parameter}: {text!r}: no EPC scheme {scheme!r} (TDS 2.0)"
                )
            parts = tuple(m.group(2).split(".", _COMPONENTS[scheme] - 1))
            _check_pattern(scheme, parts, text, parameter)
            return cls(text, scheme, parts)
        if not _URI.fullmatch(text):
            raise QueryParameterError(
                parameter, f"{parameter}: {text!r} is no EPC pattern, EPC or URI"
            )
        return cls(text, exact=canonical_uri(text))

    def matches_epc(self, epc: str) -> bool:
        """Whether an instance-level EPC of an event (URN or Digital Link) matches."""
        if self.scheme is None:
            return canonical_uri(epc) == self.exact
        if self.scheme == "sgtin":
            found = _sgtin(epc)
            if found is None or found[1] != "21":
                return False
            gtin, _, serial = found
            return self._gtin_matches(gtin) and (
                self.parts[2] == "*" or unquote(self.parts[2]) == unquote(serial)
            )
        m = re.fullmatch(rf"urn:epc:id:{self.scheme}:(.+)", epc)
        if not m:
            return False
        values = m.group(1).split(".", len(self.parts) - 1)
        return len(values) == len(self.parts) and all(
            p == "*" or unquote(p) == unquote(v) for p, v in zip(self.parts, values, strict=True)
        )

    def matches_class(self, epc_class: str) -> bool:
        """Whether a class-level EPC (an LGTIN, a GTIN) of an event's quantity list matches."""
        if self.scheme is None:
            return canonical_uri(epc_class) == self.exact
        if self.scheme != "sgtin" or self.parts[2] != "*":
            return False
        if epc_class.startswith("urn:epc:idpat:sgtin:"):
            theirs = tuple(epc_class.removeprefix("urn:epc:idpat:sgtin:").split(".", 2))
            if len(theirs) != 3 or "*" in theirs[:2]:
                return False
            return self._gtin_matches(_gtin_of(theirs[0], theirs[1]))
        found = _sgtin(epc_class)
        if found is not None and found[1] == "10":
            return self._gtin_matches(found[0])
        plain = _GTIN_DL.fullmatch(canonical_uri(epc_class))
        return plain is not None and self._gtin_matches(plain.group(1))

    def _gtin_matches(self, gtin: str) -> bool:
        company, item = self.parts[0], self.parts[1]
        if company == "*":
            return True
        if item == "*":
            # GTIN-14 = indicator digit, company prefix, rest of the item reference, check digit.
            return gtin[1 : 1 + len(company)] == company
        return gtin == _gtin_of(company, item)


def _gtin_of(company: str, item: str) -> str:
    body = item[:1] + company + item[1:]
    return body + str(gtin_check_digit(body))


def _sgtin(epc: str) -> tuple[str, str, str] | None:
    """(GTIN-14, "21" or "10", serial or lot) of an SGTIN or LGTIN, either spelling."""
    m = _SGTIN_DL.fullmatch(canonical_uri(epc))
    return (m.group(1), m.group(2), m.group(3)) if m else None


def _check_pattern(scheme: str, parts: tuple[str, ...], text: str, parameter: str) -> None:
    """EPC Tag Data Standard section 8: no empty component, nothing but ``*`` after a ``*``."""

    def bad(why: str) -> QueryParameterError:
        return QueryParameterError(parameter, f"{parameter}: {text!r} is no EPC pattern: {why}")

    if len(parts) != _COMPONENTS[scheme] or any(not p for p in parts):
        raise bad(f"a {scheme} pattern has {_COMPONENTS[scheme]} components, none empty")
    starred = [p == "*" for p in parts]
    if any(starred[i] and not starred[i + 1] for i in range(len(parts) - 1)):
        raise bad("a component that is not * follows a *")
    if scheme != "sgtin":
        return
    company, item, serial = parts
    if company != "*" and not (company.isdigit() and company.isascii() and 6 <= len(company) <= 12):
        raise bad("the company prefix is 6 to 12 digits")
    if item != "*" and not (item.isdigit() and item.isascii() and len(company) + len(item) == 13):
        raise bad("company prefix and item reference make 13 digits")
    if serial != "*" and not is_cset82(unquote(serial)):
        raise bad("the serial is 1 to 20 characters of GS1 character set 82")


# -- the query -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventQuery:
    """A parsed SimpleEventQuery. An empty tuple or None is a parameter that was not given.

    Business steps and dispositions are held as the bare CBV word or the URI of another
    vocabulary; locations and event ids as given; times as aware datetimes.
    """

    event_types: tuple[str, ...] = ()
    ge_event_time: datetime | None = None
    lt_event_time: datetime | None = None
    ge_record_time: datetime | None = None
    lt_record_time: datetime | None = None
    actions: tuple[str, ...] = ()
    biz_steps: tuple[str, ...] = ()
    dispositions: tuple[str, ...] = ()
    read_points: tuple[str, ...] = ()
    biz_locations: tuple[str, ...] = ()
    event_ids: tuple[str, ...] = ()
    match_epc: tuple[EpcMatcher, ...] = ()
    match_any_epc: tuple[EpcMatcher, ...] = ()
    match_epc_class: tuple[EpcMatcher, ...] = ()
    match_any_epc_class: tuple[EpcMatcher, ...] = ()

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether one event (EPCIS 2.0 JSON) is in the answer."""
        if self.event_types and event.get("type") not in self.event_types:
            return False
        if not _in_range(event.get("eventTime"), self.ge_event_time, self.lt_event_time):
            return False
        if not _in_range(event.get("recordTime"), self.ge_record_time, self.lt_record_time):
            return False
        if self.actions and event.get("action") not in self.actions:
            return False
        if self.biz_steps and _vocabulary(event.get("bizStep"), "bizstep") not in self.biz_steps:
            return False
        if self.dispositions and (
            _vocabulary(event.get("disposition"), "disp") not in self.dispositions
        ):
            return False
        if self.read_points and not _place_in(event.get("readPoint"), self.read_points):
            return False
        if self.biz_locations and not _place_in(event.get("bizLocation"), self.biz_locations):
            return False
        if self.event_ids and event.get("eventID") not in self.event_ids:
            return False
        epcs = _strings(event, "epcList", "childEPCs")
        any_epcs = epcs + _strings(event, "parentID", "inputEPCList", "outputEPCList")
        classes = _classes(event, "quantityList", "childQuantityList")
        any_classes = classes + _classes(event, "inputQuantityList", "outputQuantityList")
        return (
            _any_epc(self.match_epc, epcs)
            and _any_epc(self.match_any_epc, any_epcs)
            and _any_class(self.match_epc_class, classes)
            and _any_class(self.match_any_epc_class, any_classes)
        )

    def as_json(self) -> dict[str, Any]:
        """The query as the EPCIS Query Language writes it (GS1's query JSON Schema)."""
        out: dict[str, Any] = {}
        for name, attr, kind in _PARAMETERS:
            value = getattr(self, attr)
            if value is None or value == ():
                continue
            if kind == "time":
                out[name] = value.isoformat(timespec="milliseconds")
            elif kind == "match":
                out[name] = [m.text for m in value]
            else:
                out[name] = list(value)
        return out

    def fingerprint(self) -> bytes:
        """SHA-256 of the canonical query: what a page token is bound to."""
        text = json.dumps(self.as_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).digest()


# (REST name, EventQuery field, kind) -- the one table the parser and as_json read.
_PARAMETERS = (
    ("eventType", "event_types", "event-type"),
    ("GE_eventTime", "ge_event_time", "time"),
    ("LT_eventTime", "lt_event_time", "time"),
    ("GE_recordTime", "ge_record_time", "time"),
    ("LT_recordTime", "lt_record_time", "time"),
    ("EQ_action", "actions", "action"),
    ("EQ_bizStep", "biz_steps", "bizstep"),
    ("EQ_disposition", "dispositions", "disp"),
    ("EQ_readPoint", "read_points", "uri"),
    ("EQ_bizLocation", "biz_locations", "uri"),
    ("EQ_eventID", "event_ids", "uri"),
    ("MATCH_epc", "match_epc", "match"),
    ("MATCH_anyEPC", "match_any_epc", "match"),
    ("MATCH_epcClass", "match_epc_class", "match"),
    ("MATCH_anyEPCClass", "match_any_epc_class", "match"),
)
_BY_NAME = {name: (attr, kind) for name, attr, kind in _PARAMETERS}


@dataclass(frozen=True)
class RestQuery:
    """A ``GET /events`` request: the query and its paging."""

    query: EventQuery
    per_page: int = DEFAULT_PER_PAGE
    next_page_token: str | None = None


def parse_query(params: Iterable[tuple[str, str]]) -> RestQuery:
    """Read the URL query parameters of ``GET /events`` (name, decoded value), in order.

    :class:`QueryParameterError` names the first parameter that cannot be evaluated.
    """
    seen: set[str] = set()
    values: dict[str, Any] = {}
    per_page = DEFAULT_PER_PAGE
    token: str | None = None
    for name, raw in params:
        if name in seen:
            raise QueryParameterError(
                name, f"{name} is given twice: list its values once, separated by |"
            )
        seen.add(name)
        if name == "perPage":
            per_page = _per_page(raw)
            continue
        if name == "nextPageToken":
            token = raw
            continue
        if name not in _BY_NAME:
            if name.startswith(_STANDARD_PREFIXES) or name in _STANDARD_OTHERS:
                raise QueryParameterError(
                    name, f"{name}: this repository does not evaluate that query parameter"
                )
            raise QueryParameterError(name, f"{name} is not an EPCIS query parameter")
        attr, kind = _BY_NAME[name]
        values[attr] = _value(name, kind, raw)
    return RestQuery(EventQuery(**values), per_page, token)


def _value(name: str, kind: str, raw: str) -> Any:
    if kind == "time":
        return _time(name, raw)
    items = raw.split("|")
    if any(not item for item in items):
        raise QueryParameterError(name, f"{name}: an empty value")
    if kind == "match":
        return tuple(dict.fromkeys(EpcMatcher.parse(item, name) for item in items))
    out: list[str] = []
    for item in items:
        if kind == "event-type":
            if item not in EVENT_TYPES:
                raise QueryParameterError(name, f"{name}: {item!r} is no EPCIS event type")
        elif kind == "action":
            if item not in ACTIONS:
                raise QueryParameterError(name, f"{name}: {item!r} is not ADD, OBSERVE or DELETE")
        elif kind in ("bizstep", "disp"):
            item = _vocabulary_value(name, kind, item)
        elif not _URI.fullmatch(item):
            raise QueryParameterError(name, f"{name}: {item!r} is not a URI")
        out.append(item)
    return tuple(dict.fromkeys(out))


def _vocabulary_value(name: str, kind: str, item: str) -> str:
    """A CBV value in any spelling as its bare word; another vocabulary's URI as given."""
    words = BIZ_STEPS if kind == "bizstep" else DISPOSITIONS
    found = _vocabulary(item, kind) or item
    if found in words:
        return found
    if re.fullmatch(r"[a-z_]+", found) or found.startswith(("urn:epcglobal:cbv:", CBV)):
        what = "business step" if kind == "bizstep" else "disposition"
        raise QueryParameterError(
            name,
            f"{name}: {item!r} is no CBV 2.0 {what}; values of other vocabularies are URIs",
        )
    if not _URI.fullmatch(found):
        raise QueryParameterError(name, f"{name}: {item!r} is not a URI")
    return found


def _vocabulary(value: Any, kind: str) -> str | None:
    """The bare CBV word of a URN or Web URI spelling (CBV 2.0 section 8.2); others as given."""
    if not isinstance(value, str):
        return None
    prefix = "BizStep-" if kind == "bizstep" else "Disp-"
    for lead in (f"urn:epcglobal:cbv:{kind}:", CBV + prefix):
        if value.startswith(lead):
            return value[len(lead) :]
    return value


def _time(name: str, raw: str) -> datetime:
    m = _TIME.fullmatch(raw.strip())
    if not m:
        raise QueryParameterError(
            name, f"{name}: {raw!r} is not an RFC 3339 time with an offset (...T09:30:00+08:00)"
        )
    offset = m.group(2)
    # A "+" that form decoding of the URL turned into a space.
    offset = "+" + offset[1:] if offset.startswith(" ") else offset
    try:
        moment = datetime.fromisoformat(m.group(1) + offset.replace("z", "Z"))
    except ValueError:
        raise QueryParameterError(name, f"{name}: {raw!r} is not a valid time") from None
    return moment


def _per_page(raw: str) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", raw) or int(raw) < 1:
        raise QueryParameterError("perPage", f"perPage: {raw!r} is not a positive integer")
    return min(int(raw), MAX_PER_PAGE)


def _in_range(value: Any, low: datetime | None, high: datetime | None) -> bool:
    if low is None and high is None:
        return True
    if not isinstance(value, str):
        return False
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (low is None or moment >= low) and (high is None or moment < high)


def _place_in(place: Any, wanted: tuple[str, ...]) -> bool:
    where = place.get("id") if isinstance(place, Mapping) else None
    if not isinstance(where, str):
        return False
    here = canonical_uri(where)
    return any(canonical_uri(w) == here for w in wanted)


def _strings(event: Mapping[str, Any], *keys: str) -> list[str]:
    out: list[str] = []
    for key in keys:
        value = event.get(key)
        items = value if isinstance(value, list) else [value]
        out.extend(v for v in items if isinstance(v, str))
    return out


def _classes(event: Mapping[str, Any], *keys: str) -> list[str]:
    out: list[str] = []
    for key in keys:
        for q in event.get(key) or []:
            if isinstance(q, Mapping) and isinstance(q.get("epcClass"), str):
                out.append(q["epcClass"])
    return out


def _any_epc(matchers: tuple[EpcMatcher, ...], epcs: list[str]) -> bool:
    return not matchers or any(m.matches_epc(e) for m in matchers for e in epcs)


def _any_class(matchers: tuple[EpcMatcher, ...], classes: list[str]) -> bool:
    return not matchers or any(m.matches_class(c) for m in matchers for c in classes)


# -- pages and tokens ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One page of an answer; ``after`` is the key to resume from, None on the last page."""

    events: list[Mapping[str, Any]]
    after: EventKey | None


def page(
    events: Iterable[tuple[EventKey, Mapping[str, Any]]],
    query: EventQuery,
    *,
    per_page: int = DEFAULT_PER_PAGE,
    after: EventKey | None = None,
) -> Page:
    """The first ``per_page`` matching events with a key beyond ``after``.

    ``events`` come in increasing key order (ValueError otherwise: keys are what pages are
    cut at). Scanning stops at the first match past a full page, which proves a next page.
    """
    found: list[Mapping[str, Any]] = []
    last: EventKey | None = None
    previous: EventKey | None = None
    for key, event in events:
        if previous is not None and key <= previous:
            raise ValueError(f"events out of key order: {key} after {previous}")
        previous = key
        if after is not None and key <= after:
            continue
        if not query.matches(event):
            continue
        if len(found) == per_page:
            return Page(found, last)
        found.append(event)
        last = key
    return Page(found, None)


class PageTokens:
    """Issues and opens ``nextPageToken`` values: an HMAC-SHA256-sealed cursor.

    The token is ``base64url(payload) "." base64url(mac)``; the payload holds the key to
    resume after, the expiry (when ``lifetime`` is set) and a hash binding the query and the
    caller's ``scope`` (who asks: a token handed to someone else opens nothing).
    """

    def __init__(self, key: bytes, *, lifetime: timedelta | None = None) -> None:
        if not isinstance(key, bytes) or len(key) < 32:
            raise ValueError("a page token key is at least 32 bytes")
        self._key = key
        self.lifetime = lifetime

    def issue(
        self, query: EventQuery, scope: str, after: EventKey, now: datetime
    ) -> tuple[str, datetime | None]:
        """A token to resume ``query`` after ``after``, and when it expires (or None)."""
        expires = now + self.lifetime if self.lifetime is not None else None
        payload = {
            "a": [after[0], after[1]],
            "b": _b64(self._binding(query, scope)),
            "e": _epoch_ms(expires) if expires is not None else None,
        }
        body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("ascii")
        return f"{_b64(body)}.{_b64(self._mac(body))}", expires

    def open(self, token: str, query: EventQuery, scope: str, now: datetime) -> EventKey:
        """The key a token resumes after; QueryParameterError if it is not one to honour."""
        refused = QueryParameterError(
            "nextPageToken", "nextPageToken: not a token this repository issued"
        )
        head, dot, tail = token.partition(".")
        if not dot:
            raise refused
        try:
            body, mac = _unb64(head), _unb64(tail)
        except ValueError:
            raise refused from None
        if not hmac.compare_digest(mac, self._mac(body)):
            raise refused
        payload = json.loads(body)
        if payload["b"] != _b64(self._binding(query, scope)):
            raise QueryParameterError(
                "nextPageToken",
                "nextPageToken was issued for another query: repeat that query's parameters",
            )
        if payload["e"] is not None and _epoch_ms(now) >= payload["e"]:
            raise QueryParameterError("nextPageToken", "nextPageToken has expired")
        first, second = payload["a"]
        return int(first), int(second)

    def _binding(self, query: EventQuery, scope: str) -> bytes:
        return hashlib.sha256(query.fingerprint() + b"\x00" + scope.encode("utf-8")).digest()

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, b"medledger-epcis-page/v1\x00" + body, "sha256").digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def next_link(base_url: str, params: Iterable[tuple[str, str]], token: str, per_page: int) -> str:
    """The ``Link`` header value of a page that has a next one (RFC 8288, ``rel="next"``).

    The URL repeats the request's query parameters, then ``perPage`` and the new token.
    """
    kept = [(k, v) for k, v in params if k not in _PAGING]
    kept += [("perPage", str(per_page)), ("nextPageToken", token)]
    return f'<{base_url}?{urlencode(kept, quote_via=quote, safe="")}>; rel="next"'


# -- the answer ----------------------------------------------------------------------------------


def query_document(
    events: Sequence[Mapping[str, Any]], *, now: datetime, query_name: str = QUERY_NAME
) -> dict[str, Any]:
    """The EPCISQueryDocument holding ``events`` (EPCIS 2.0 section 12, JSON-LD)."""
    if now.tzinfo is None:
        raise ValueError("now needs a UTC offset")
    return {
        "@context": list(CONTEXT),
        "type": "EPCISQueryDocument",
        "schemaVersion": "2.0",
        "creationDate": time_text(now),
        "epcisBody": {
            "queryResults": {
                "queryName": query_name,
                "resultsBody": {"eventList": [dict(e) for e in events]},
            }
        },
    }


@dataclass(frozen=True)
class QueryAnswer:
    """What ``GET /events`` answers: the document, and the paging headers when a next page
    exists (``Link``, and ``GS1-Next-Page-Token-Expires`` when tokens expire)."""

    document: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def answer(
    params: Sequence[tuple[str, str]],
    events: Iterable[tuple[EventKey, Mapping[str, Any]]],
    *,
    tokens: PageTokens,
    scope: str,
    now: datetime,
    base_url: str,
) -> QueryAnswer:
    """The whole of ``GET /events`` but the HTTP: parse, resume, filter, page, render.

    ``params`` are the request's query parameters as (name, value) pairs, decoded, in order;
    ``events`` every event the caller may see, in key order; ``scope`` who asks; ``base_url``
    the absolute URL of the endpoint the ``Link`` header points back to. EpcisQueryError is
    the caller's 400 (``problem()`` is its body).
    """
    rest = parse_query(params)
    after = (
        tokens.open(rest.next_page_token, rest.query, scope, now)
        if rest.next_page_token is not None
        else None
    )
    found = page(events, rest.query, per_page=rest.per_page, after=after)
    document = query_document(found.events, now=now)
    if found.after is None:
        return QueryAnswer(document)
    token, expires = tokens.issue(rest.query, scope, found.after, now)
    headers = {"Link": next_link(base_url, params, token, rest.per_page)}
    if expires is not None:
        headers["GS1-Next-Page-Token-Expires"] = time_text(expires.astimezone(UTC))
    return QueryAnswer(document, headers)
