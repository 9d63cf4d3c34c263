"""EPCIS 2.0 dispensing events for the packs an RWD Bundle used, in JSON-LD.

For each administration (MedicationAdministration, status completed / in-progress / stopped)
and each dispensing (MedicationDispense, completed) of a pack with a GTIN, one ObjectEvent
(EPCIS 2.0 section 7.4.2): action ``OBSERVE``, bizStep ``dispensing``, disposition
``dispensed`` (CBV 2.0 sections 7.1 and 7.2), the pack as a GS1 Digital Link URI in
``epcList`` (an SGTIN, ``/01/{gtin}/21/{serial}``) or, for a lot-level pack, the class in
``quantityList`` (an LGTIN, ``/01/{gtin}/10/{lot}``, quantity 1), the hospital's location as
``readPoint`` and ``bizLocation``, and, when the Bundle is already in the ledger, a
``medledger:ledgerEntry`` link: the RFC 6920 ``ni:`` URI of the entry's leaf hash.

The event ID is the CBV 2.0 EPCIS Event Hash ID (CBV 2.0 section 8.9):
``ni:///sha-256;{hex}?ver=CBV2.0`` over the event's canonical pre-hash string, implemented in
:func:`event_hash_id` for the fields these events use plus the common ones of the standard's
examples.

No patient data can reach an event: an event is rendered only from a
:class:`DispensingEvent`, whose fields are a time, GS1 keys built from validated GTIN / lot /
serial values, a location URI and a hash. There is no field a name, an identifier, a code or
free text could travel in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlsplit

from adapters.base import CANONICAL_BASE, AdaptError, AdaptOptions
from adapters.ips_json import loads_bundle
from adapters.rwd_identity import PackIdentity, product_identities
from adapters.trace_fhir import GLN_SYSTEMS, BundleView, Located
from adapters.tracecode import dl_escape, gtin_check_digit, is_cset82, normalise_gtin

__all__ = [
    "CONTEXT",
    "EPCIS_CONTEXT",
    "LEDGER_NS",
    "DispensingEvent",
    "adapt",
    "build_events",
    "canonical_uri",
    "dispensing_events",
    "event_hash_id",
    "event_location",
    "ledger_link",
    "location_uri",
    "time_text",
]

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
LEDGER_NS = f"{CANONICAL_BASE}/epcis/"
LEDGER_PREFIX = "medledger"
LEDGER_KEY = f"{LEDGER_PREFIX}:ledgerEntry"
DL_DOMAIN = "https://id.gs1.org"
CBV = "https://ref.gs1.org/cbv/"

_ADMINISTERED = frozenset({"completed", "in-progress", "stopped"})
_DISPENSED = frozenset({"completed"})
_SGLN_URN = re.compile(r"urn:epc:id:sgln:([0-9]+)\.([0-9]*)\.(.+)")
_GLN_DL = re.compile(r"https://id\.gs1\.org/414/([0-9]{13})(?:/254/([^/?#]+))?")
_OFFSET = re.compile(r"[+-](?:0[0-9]|1[0-3]):[0-5][0-9]|[+-]14:00")


@dataclass(frozen=True)
class DispensingEvent:
    """Everything an emitted event says, and nothing else (see the module docstring).

    Exactly one of ``epcs`` (SGTIN Digital Link URIs) and ``epc_class`` (an LGTIN Digital
    Link URI, one pack of it) is set.
    """

    event_time: datetime
    epcs: tuple[str, ...]
    epc_class: str | None
    location: str
    ledger_link: str | None

    def __post_init__(self) -> None:
        if self.event_time.tzinfo is None:
            raise AdaptError("an EPCIS event time needs its UTC offset")
        if bool(self.epcs) == (self.epc_class is not None):
            raise AdaptError("an event names either instances (SGTIN) or a class (LGTIN)")
        for uri in (*self.epcs, *([self.epc_class] if self.epc_class else [])):
            if not _is_pack_uri(uri):
                raise AdaptError(f"{uri!r} is not a GS1 Digital Link URI of a pack")
        location_uri(self.location)
        if self.ledger_link is not None and not re.fullmatch(
            r"ni:///sha-256;[A-Za-z0-9_-]{43}", self.ledger_link
        ):
            raise AdaptError(f"{self.ledger_link!r} is not an RFC 6920 sha-256 ni URI")

    def as_json(self) -> dict[str, Any]:
        """The ObjectEvent in EPCIS 2.0 JSON-LD, its eventID the CBV 2.0 event hash."""
        offset = _offset_text(self.event_time)
        body: dict[str, Any] = {
            "type": "ObjectEvent",
            "eventTime": time_text(self.event_time),
            "eventTimeZoneOffset": offset,
        }
        if self.epcs:
            body["epcList"] = list(self.epcs)
        else:
            body["quantityList"] = [{"epcClass": self.epc_class, "quantity": 1}]
        body["action"] = "OBSERVE"
        body["bizStep"] = "dispensing"
        body["disposition"] = "dispensed"
        body["readPoint"] = {"id": self.location}
        body["bizLocation"] = {"id": self.location}
        if self.ledger_link is not None:
            body[LEDGER_KEY] = self.ledger_link
        event_id = event_hash_id(body, CONTEXT)
        return {"type": body.pop("type"), "eventID": event_id, **body}


# The @context of every document these events travel in: GS1's, and the ledger link's prefix.
CONTEXT: list[Any] = [EPCIS_CONTEXT, {LEDGER_PREFIX: LEDGER_NS}]


def build_events(
    bundle: Mapping[str, Any],
    *,
    entry_hash_b64: str | None,
    location_gln_sgln: str,
    now: datetime,
) -> dict[str, Any]:
    """An EPCISDocument with one ObjectEvent per administration or dispensing in ``bundle``.

    ``entry_hash_b64`` is the base64 leaf hash (SHA-256) of the Bundle's ledger entry, or None
    before it has one; ``location_gln_sgln`` the hospital's location as an SGLN URN
    (``urn:epc:id:sgln:...``), a GLN Digital Link URI or a bare 13-digit GLN; ``now`` the
    document's creationDate. AdaptError names the resource that cannot become an event.
    """
    location = location_uri(location_gln_sgln)
    link = ledger_link(entry_hash_b64) if entry_hash_b64 is not None else None
    events = [e.as_json() for e in dispensing_events(bundle, location=location, link=link)]
    return _document(events, now)


def dispensing_events(
    bundle: Mapping[str, Any], *, location: str, link: str | None
) -> list[DispensingEvent]:
    """The events of one Bundle, in entry order."""
    view = BundleView(bundle)
    out: list[DispensingEvent] = []
    for loc in view.located:
        if loc.type == "MedicationAdministration":
            if loc.resource.get("status") not in _ADMINISTERED:
                continue
            when, where = _administration_time(loc)
        elif loc.type == "MedicationDispense":
            if loc.resource.get("status") not in _DISPENSED:
                continue
            when, where = _dispense_time(loc)
        else:
            continue
        identities = _pack_of(view, loc)
        out.append(_event(identities, when, where, location, link))
    return out


def adapt(bundles: list[bytes], options: AdaptOptions) -> bytes:
    """``medledger adapt epcis``: one EPCISDocument for all administrations in the files.

    Offline there is no ledger entry yet, so events carry no ledger link; each Bundle's
    location is :func:`event_location` of it, with ``options.location`` (``--location``) as
    the site when the Bundle names none.
    """
    site = location_uri(options.location) if options.location is not None else None
    events: dict[str, dict[str, Any]] = {}
    for n, data in enumerate(bundles):
        doc = loads_bundle(data, f"input {n + 1}")
        location = event_location(doc, site, f"input {n + 1}")
        for event in dispensing_events(doc, location=location, link=None):
            rendered = event.as_json()
            # An adverse-event Bundle repeats the administration it follows: the same event,
            # so the same hash ID, reported once.
            events.setdefault(rendered["eventID"], rendered)
    if not events:
        raise AdaptError("no completed administration or dispensing of a pack to report")
    out = json.dumps(_document(list(events.values()), options.now), ensure_ascii=False, indent=2)
    return (out + "\n").encode("utf-8")


# -- identifiers -------------------------------------------------------------------------------


def location_uri(value: str) -> str:
    """Validate a location: SGLN URN or GLN Digital Link kept, bare GLN turned into one.

    GS1 General Specifications 3.7.9 (GLN, AI 414) and 3.7.10 (extension, AI 254); the
    EPC URI form is the EPC Tag Data Standard's ``urn:epc:id:sgln``.
    """
    if not isinstance(value, str):
        raise AdaptError("the location is a GLN or SGLN string")
    urn = _SGLN_URN.fullmatch(value)
    if urn:
        company, ref, ext = urn.groups()
        digits = company + ref
        if len(digits) != 12 or not 6 <= len(company) <= 12:
            raise AdaptError(f"{value!r}: company prefix and location reference make 12 digits")
        if not is_cset82(unquote(ext)):
            raise AdaptError(f"{value!r}: the extension is not GS1 character set 82")
        return value
    dl = _GLN_DL.fullmatch(value)
    if dl:
        normalise_gln(dl.group(1))
        return value
    if re.fullmatch(r"[0-9]{13}", value):
        return f"{DL_DOMAIN}/414/{normalise_gln(value)}"
    raise AdaptError(f"{value!r} is no SGLN URN, GLN Digital Link URI or 13-digit GLN")


def normalise_gln(value: str) -> str:
    """A 13-digit GLN with a valid check digit (GenSpecs 7.9.1); AdaptError otherwise."""
    if not re.fullmatch(r"[0-9]{13}", value) or gtin_check_digit(value[:12]) != int(value[12]):
        raise AdaptError(f"{value!r} is not a GLN (13 digits, mod-10 check digit)")
    return value


def ledger_link(entry_hash_b64: str) -> str:
    """RFC 6920 ``ni:///sha-256;`` URI (base64url, no padding) of a ledger leaf hash."""
    try:
        digest = base64.b64decode(entry_hash_b64, validate=True)
    except (binascii.Error, ValueError):
        raise AdaptError("entry_hash_b64 is not base64") from None
    if len(digest) != 32:
        raise AdaptError(f"a ledger leaf hash is 32 bytes (SHA-256), got {len(digest)}")
    return "ni:///sha-256;" + base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def sgtin_uri(gtin: str, serial: str) -> str:
    """Constrained canonical Digital Link of a serialised pack (GS1 Digital Link 1.2, 4.11)."""
    return f"{DL_DOMAIN}/01/{normalise_gtin(gtin)}/21/{_escape(serial)}"


def lgtin_uri(gtin: str, lot: str) -> str:
    """Constrained canonical Digital Link of a lot (the EPC class LGTIN)."""
    return f"{DL_DOMAIN}/01/{normalise_gtin(gtin)}/10/{_escape(lot)}"


# -- the CBV 2.0 event hash --------------------------------------------------------------------

_SKIP = frozenset({"type", "eventID", "recordTime", "@context", "eventTime", "eventTimeZoneOffset"})
_EPC_LISTS = ("epcList", "inputEPCList", "childEPCs", "outputEPCList")
_ORDER = (
    "epcList",
    "parentID",
    "inputEPCList",
    "childEPCs",
    "quantityList",
    "childQuantityList",
    "inputQuantityList",
    "outputEPCList",
    "outputQuantityList",
    "action",
    "transformationID",
    "bizStep",
    "disposition",
    "persistentDisposition",
    "readPoint",
    "bizLocation",
    "bizTransactionList",
    "sourceList",
    "destinationList",
)
_VOCAB = {
    "bizStep": "BizStep-",
    "disposition": "Disp-",
    "bizTransactionList": "BTT-",
    "sourceList": "SDT-",
    "destinationList": "SDT-",
}


def event_hash_id(event: Mapping[str, Any], context: Any = EPCIS_CONTEXT) -> str:
    """The EPCIS Event Hash ID of one event (CBV 2.0 section 8.9), ``ni:///sha-256;...``.

    The pre-hash string concatenates the event's fields in the canonical property order,
    ``key=value`` for values, list members sorted, times in UTC with milliseconds, CBV values
    and EPC URNs expanded to Web URIs and constrained GS1 Digital Link URIs, and user
    extensions as ``{namespace}local=value``, sorted. ``context`` is the document's
    ``@context`` (for the namespaces of extension prefixes). Fields outside what is
    implemented (sensor data, ILMD, error declarations, certification) raise AdaptError
    rather than hash to a wrong ID.
    """
    return (
        "ni:///sha-256;"
        + hashlib.sha256(prehash(event, context).encode("utf-8")).hexdigest()
        + "?ver=CBV2.0"
    )


def prehash(event: Mapping[str, Any], context: Any = EPCIS_CONTEXT) -> str:
    """The canonical pre-hash string of :func:`event_hash_id`."""
    prefixes = _prefixes(context)
    out = [f"eventType={_text(event.get('type'))}"]
    if "eventTime" in event:
        out.append(f"eventTime={_utc_ms(event['eventTime'])}")
    if "eventTimeZoneOffset" in event:
        out.append(f"eventTimeZoneOffset={_text(event['eventTimeZoneOffset'])}")
    extensions: list[str] = []
    for key in event:
        if key in _SKIP or key in _ORDER:
            continue
        if ":" in key and not key.startswith("@"):
            extensions.append(_extension(key, event[key], prefixes))
        else:
            raise AdaptError(f"event hash: field {key!r} is not supported here")
    for key in _ORDER:
        if key not in event:
            continue
        value = event[key]
        if key in _EPC_LISTS:
            out.append(key + "".join(sorted(f"epc={_uri(v)}" for v in value)))
        elif key == "parentID":
            out.append(f"parentID={_uri(value)}")
        elif key.endswith("QuantityList") or key == "quantityList":
            out.append(key + "".join(sorted(_quantity(q) for q in value)))
        elif key in ("action", "transformationID"):
            out.append(f"{key}={_text(value)}")
        elif key in ("bizStep", "disposition"):
            out.append(f"{key}={_vocab(value, _VOCAB[key], prefixes)}")
        elif key in ("readPoint", "bizLocation"):
            out.append(_place(key, value, prefixes))
        elif key in ("bizTransactionList", "sourceList", "destinationList"):
            out.append(key + "".join(sorted(_typed(key, v, prefixes) for v in value)))
        else:
            raise AdaptError(f"event hash: field {key!r} is not supported here")
    out.extend(sorted(extensions))
    return "".join(out)


def _typed(key: str, item: Mapping[str, Any], prefixes: Mapping[str, str]) -> str:
    # CBV 2.0 section 8.9 rule 13: the identifier first, then its type.
    name = {"bizTransactionList": "bizTransaction", "sourceList": "source"}.get(key, "destination")
    text = f"{name}={_uri(item[name])}"
    if "type" in item:
        text += f"type={_vocab(item['type'], _VOCAB[key], prefixes)}"
    return text


def _place(key: str, value: Mapping[str, Any], prefixes: Mapping[str, str]) -> str:
    text = f"{key}id={_uri(value['id'])}"
    extra = sorted(_extension(k, v, prefixes) for k, v in value.items() if k != "id")
    return text + "".join(extra)


def _quantity(q: Mapping[str, Any]) -> str:
    text = f"quantityElementepcClass={_uri(q['epcClass'])}"
    if "quantity" in q:
        text += f"quantity={_number(q['quantity'])}"
    if "uom" in q:
        text += f"uom={_text(q['uom'])}"
    return text


def _extension(key: str, value: Any, prefixes: Mapping[str, str]) -> str:
    prefix, _, local = key.partition(":")
    if prefix not in prefixes:
        raise AdaptError(f"event hash: no namespace for the prefix of {key!r} in the @context")
    if isinstance(value, Mapping | list):
        raise AdaptError(f"event hash: structured extension {key!r} is not supported here")
    return f"{{{prefixes[prefix]}}}{local}={_text(value)}"


def _vocab(value: Any, kind: str, prefixes: Mapping[str, str]) -> str:
    text = _text(value)
    urn = re.fullmatch(r"urn:epcglobal:cbv:(?:bizstep|disp|btt|sdt):(.+)", text)
    if urn:
        return CBV + kind + urn.group(1)
    if re.fullmatch(r"[a-z_]+", text):
        return CBV + kind + text
    return _curie(text, prefixes)


def _curie(text: str, prefixes: Mapping[str, str]) -> str:
    prefix, sep, local = text.partition(":")
    if sep and prefix in prefixes and not local.startswith("//"):
        return prefixes[prefix] + local
    return text


def canonical_uri(value: Any) -> str:
    """The one spelling of an identifier: EPC URNs (SGTIN, LGTIN, SGLN, SSCC, PGLN) and GS1
    Digital Links as constrained canonical Digital Links on ``id.gs1.org``, other URIs as
    given (CBV 2.0 section 8.9 rules 17 and 18). Two spellings of one EPC are equal here."""
    return _uri(value)


def _uri(value: Any) -> str:
    """EPC URNs and Digital Links to constrained canonical Digital Links (rules 17, 18)."""
    text = _text(value)
    if text.startswith("urn:epc:"):
        return _urn_to_dl(text)
    parts = urlsplit(text)
    if parts.scheme in ("http", "https"):
        segments = [s for s in parts.path.split("/") if s]
        for i, seg in enumerate(segments):
            if seg in ("01", "00", "414", "417") and i + 1 < len(segments):
                return _constrain(segments[i:])
    return text


def _constrain(segments: Sequence[str]) -> str:
    pairs = dict(zip(segments[::2], segments[1::2], strict=False))
    key = segments[0]
    if key == "01":
        gtin = pairs["01"].zfill(14)
        for qualifier in ("21", "10"):
            if qualifier in pairs:
                return f"{DL_DOMAIN}/01/{gtin}/{qualifier}/{pairs[qualifier]}"
        return f"{DL_DOMAIN}/01/{gtin}"
    if key == "414" and "254" in pairs:
        return f"{DL_DOMAIN}/414/{pairs['414']}/254/{pairs['254']}"
    return f"{DL_DOMAIN}/{key}/{pairs[key]}"


def _urn_to_dl(urn: str) -> str:
    """EPC Tag Data Standard URNs to Digital Link (TDS 2.0 section 6 / GS1 DL 1.2 4.11).

    The last component of an SGTIN, LGTIN or SGLN may itself hold dots (GS3A3 allows them); a
    URN whose numeric components are not digits of the right total length is kept as it is.
    """
    m = re.fullmatch(r"urn:epc:(id|class):(sgtin|lgtin|sgln|sscc|pgln):(.+)", urn)
    if not m:
        return urn
    scheme = m.group(2)
    parts = m.group(3).split(".", 2 if scheme in ("sgtin", "lgtin", "sgln") else 1)
    numeric = parts[:2]
    if not all(p.isascii() and p.isdigit() for p in numeric):
        return urn
    width = len("".join(numeric))
    if scheme in ("sgtin", "lgtin") and len(parts) == 3 and width == 13:
        company, item, tail = parts
        body = item[:1] + company + item[1:]
        gtin = body + str(gtin_check_digit(body))
        ai = "21" if scheme == "sgtin" else "10"
        return f"{DL_DOMAIN}/01/{gtin}/{ai}/{dl_escape(unquote(tail))}"
    if scheme == "sgln" and len(parts) == 3 and width == 12:
        body = parts[0] + parts[1]
        gln = body + str(gtin_check_digit(body))
        ext = unquote(parts[2])
        return f"{DL_DOMAIN}/414/{gln}" + (f"/254/{dl_escape(ext)}" if ext != "0" else "")
    if scheme == "sscc" and len(parts) == 2 and width == 17:
        body = parts[1][:1] + parts[0] + parts[1][1:]
        return f"{DL_DOMAIN}/00/{body}{gtin_check_digit(body)}"
    if scheme == "pgln" and len(parts) == 2 and width == 12:
        body = parts[0] + parts[1]
        return f"{DL_DOMAIN}/417/{body}{gtin_check_digit(body)}"
    return urn


def _prefixes(context: Any) -> dict[str, str]:
    """Prefix -> namespace from the context objects, plus the EPCIS context's own."""
    out = {
        "epcis": "https://ref.gs1.org/epcis/",
        "cbv": "https://ref.gs1.org/cbv/",
        "gs1": "https://gs1.org/voc/",
        "cbvmda": "urn:epcglobal:cbv:mda:",
    }
    items = context if isinstance(context, list) else [context]
    for item in items:
        if isinstance(item, Mapping):
            for key, value in item.items():
                if isinstance(value, str) and not key.startswith("@"):
                    out[key] = value
    return out


def _utc_ms(value: Any) -> str:
    """RFC 3339 time to UTC with milliseconds, half-up rounded (CBV 2.0 8.9 rules 8 and 9)."""
    moment = datetime.fromisoformat(_text(value).replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    rounded = (moment.microsecond + 500) // 1000
    moment = moment.replace(microsecond=0) + timedelta(milliseconds=rounded)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _number(value: Any) -> str:
    """A quantity without trailing zeros (rule 6)."""
    return format(Decimal(str(value)).normalize(), "f")


def _text(value: Any) -> str:
    return str(value).strip()


# -- from FHIR ----------------------------------------------------------------------------------


def _administration_time(loc: Located) -> tuple[str, str]:
    res = loc.resource
    if isinstance(res.get("effectiveDateTime"), str):
        return res["effectiveDateTime"], f"{loc.path}.effectiveDateTime"
    period = res.get("effectivePeriod")
    if isinstance(period, Mapping) and isinstance(period.get("start"), str):
        return period["start"], f"{loc.path}.effectivePeriod.start"
    raise AdaptError(
        f"{loc.path}: an administration needs effectiveDateTime or effectivePeriod.start"
    )


def _dispense_time(loc: Located) -> tuple[str, str]:
    for key in ("whenHandedOver", "whenPrepared"):
        if isinstance(loc.resource.get(key), str):
            return loc.resource[key], f"{loc.path}.{key}"
    raise AdaptError(f"{loc.path}: a dispensing needs whenHandedOver")


def _pack_of(view: BundleView, loc: Located) -> list[PackIdentity]:
    ref = loc.resource.get("medicationReference")
    target = view.resolve(ref, loc) if isinstance(ref, Mapping) else None
    if target is None or target.type != "Medication":
        raise AdaptError(
            f"{loc.path}.medicationReference: no Medication in the Bundle, so no pack to report"
        )
    identities = [i for i in product_identities(target) if i.gtin is not None]
    if not identities:
        raise AdaptError(
            f"{target.path}: the pack has no GTIN (code.coding system https://www.gs1.org/gtin "
            "or a GS1 trace code): EPCIS names packs by GS1 keys"
        )
    return identities


def _event(
    identities: list[PackIdentity],
    when: str,
    where: str,
    location: str,
    link: str | None,
) -> DispensingEvent:
    moment = _fhir_instant(when, where)
    serialised = [i for i in identities if i.serial is not None]
    if serialised:
        epcs = tuple(dict.fromkeys(sgtin_uri(str(i.gtin), str(i.serial)) for i in serialised))
        return DispensingEvent(moment, epcs, None, location, link)
    pack = identities[0]
    if pack.lot is None or not is_cset82(pack.lot):
        raise AdaptError(
            f"{pack.path}: a pack without serial needs a GS1 lot (10) to be named in EPCIS "
            f"(lot {pack.lot!r})"
        )
    return DispensingEvent(moment, (), lgtin_uri(str(pack.gtin), pack.lot), location, link)


def _fhir_instant(value: str, where: str) -> datetime:
    """A FHIR dateTime with time and offset, as EPCIS eventTime needs (EPCIS 2.0 7.4.1)."""
    if not re.fullmatch(
        r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})", value
    ):
        raise AdaptError(f"{where}: {value!r} needs a time of day and a UTC offset for EPCIS")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise AdaptError(f"{where}: {value!r} is not a valid dateTime") from None
    if not _OFFSET.fullmatch(_offset_text(moment)):
        raise AdaptError(f"{where}: offset of {value!r} is outside -14:00..+14:00")
    return moment


def event_location(
    bundle: Mapping[str, Any], site: str | None = None, where: str = "bundle"
) -> str:
    """Where a Bundle's packs were dispensed: the readPoint and bizLocation of its events.

    The Bundle's single Location (else single Organization) with a GLN identifier
    (``https://www.gs1.org/gln`` or ``urn:oid:1.3.160``) says it best. When the Bundle names
    none, or several and so cannot say which one dispensed, the site's own location is used:
    ``site``, the GLN the registry records for the institution or ``--location`` offline (SGLN
    URN, GLN Digital Link or bare GLN). AdaptError when there is neither, or either is no GLN.
    """
    view = BundleView(bundle)
    for kind in ("Location", "Organization"):
        glns = sorted(
            {
                str(ident["value"])
                for loc in view.of_type(kind)
                for ident in loc.resource.get("identifier") or []
                if isinstance(ident, Mapping)
                and ident.get("system") in GLN_SYSTEMS
                and isinstance(ident.get("value"), str)
            }
        )
        if len(glns) == 1:
            return location_uri(glns[0])
        if len(glns) > 1:
            if site is not None:
                return location_uri(site)
            raise AdaptError(
                f"{where}: {len(glns)} {kind}s with a GLN; cannot tell which one dispensed "
                "(give the site's location)"
            )
    if site is not None:
        return location_uri(site)
    raise AdaptError(
        f"{where}: no Location or Organization with a GLN identifier for the event location, "
        "and no site location given (--location GLN)"
    )


# -- rendering ----------------------------------------------------------------------------------


def _document(events: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    if now.tzinfo is None:
        raise AdaptError("now needs a UTC offset")
    return {
        "@context": list(CONTEXT),
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": time_text(now),
        "epcisBody": {"eventList": events},
    }


def time_text(moment: datetime) -> str:
    """An aware time as EPCIS writes it: RFC 3339, milliseconds, the moment's own offset."""
    base = moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}"
    return base + _offset_text(moment)


def _offset_text(moment: datetime) -> str:
    offset = moment.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _is_pack_uri(uri: str) -> bool:
    m = re.fullmatch(r"https://id\.gs1\.org/01/([0-9]{14})/(10|21)/([A-Za-z0-9%._~-]+)", uri)
    if not m:
        return False
    try:
        normalise_gtin(m.group(1))
    except ValueError:
        return False
    return is_cset82(unquote(m.group(3)))


def _escape(value: str) -> str:
    if not is_cset82(value):
        raise AdaptError(f"{value!r} is not 1-20 characters of GS1 character set 82")
    return dl_escape(value)
