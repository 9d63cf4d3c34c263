"""ICH E2B(R3) individual case safety reports for the foreign marketing-authorisation holder.

From each AdverseEvent of an RWD Bundle and its suspect Medication, one ICSR message
(``PORR_IN049016UV``) in an ICH batch (``MCCI_IN200100UV01``), following the ICH E2B(R3)
Implementation Guide (the data element numbers are cited beside each element):

- the reaction as the primary source reported it, verbatim in its language (E.i.1.1a/b), and
  its English translation when the Bundle carries one (E.i.1.2, from the FHIR translation
  extension on ``AdverseEvent.event.text``); a MedDRA code (E.i.2.1a/b) only when the Bundle
  gives one -- no MedDRA tables are shipped, so none is looked up;
- the country where it happened, China (E.i.9), and the reporter's country (C.2.r.3);
- the suspect drug as it was obtained abroad (G.k.2.2, G.k.2.4) with its foreign
  authorisation number, country and holder (G.k.3.1-3) and the batch (G.k.4.r.7); the pack's
  GS1 code and the pilot zone's import approval go in G.k.11 so the holder can trace it.

Personal data is minimised for a transfer abroad: the patient's name and the reporter's
name are sent as masked (nullFlavor ``MSK``); sex and age at onset are sent because causality
assessment needs them. The output is deterministic: the same Bundle, clock and ids give the
same bytes (element order fixed, no random ids: the HL7 instance UUIDs are name-based).
"""

from __future__ import annotations

import hashlib
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from adapters.base import AdaptError, AdaptOptions
from adapters.rwd_identity import PackIdentity, product_identities
from adapters.trace_fhir import (
    MEDDRA_SYSTEM,
    USE_TYPES,
    BundleView,
    ForeignAuthorisation,
    Located,
    codes,
    foreign_authorisation,
    load_bundle,
    text_of,
    trace_code_values,
    translation,
)
from adapters.tracecode import TraceCodeError, parse_trace_code

__all__ = ["adapt", "build_icsr"]

HL7 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
ICH = "2.16.840.1.113883.3.989.2.1"
ISO3166 = "1.0.3166.1.2.2"
MEDDRA_OID = "2.16.840.1.113883.6.163"
SERIOUSNESS_SYSTEM = "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness"
OUTCOME_SYSTEM = "http://terminology.hl7.org/CodeSystem/adverse-event-outcome"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"

# E.i.3.2a-f: the ICH seriousness criteria (code system ICH ...1.1.19) and the FHIR R4
# adverse-event-seriousness codes that state them.
_CRITERIA = (
    ("34", "SeriousResultsInDeath"),
    ("21", "SeriousIsLifeThreatening"),
    ("33", "SeriousResultsInHospitalization"),
    ("35", "SeriousResultsInDisability"),
    ("12", "SeriousIsBirthDefect"),
    ("26", "SeriousRequiresPreventImpairment"),
)
# E.i.7 outcome (ICH ...1.1.11) from FHIR R4 adverse-event-outcome.
_OUTCOME = {
    "resolved": "1",
    "recovering": "2",
    "ongoing": "3",
    "resolvedWithSequelae": "4",
    "fatal": "5",
    "unknown": "0",
}
# G.k.4.r.10.1 route of administration (ICH E2B route list, ...1.1.14) from SNOMED CT.
_ROUTE = {"47625008": "042", "26643006": "048", "34206005": "058", "78421000": "030"}
# ISO 639-2 (E.i.1.1b is alpha-3). Chinese is the terminology code ``zho``.
_LANG = {"zh": "zho", "en": "eng", "ja": "jpn", "ko": "kor", "ru": "rus", "ar": "ara", "th": "tha"}
_ID_SAFE = re.compile(r"[^A-Za-z0-9._]")


@dataclass(frozen=True)
class _Drug:
    path: str
    name: str
    authorisation: ForeignAuthorisation | None
    holder_name: str | None
    identity: PackIdentity | None
    pack_code: str | None
    cn_code: str | None
    start: str | None
    dose: tuple[str, str] | None
    route: tuple[str | None, str | None]
    dosage_text: str | None


@dataclass(frozen=True)
class _Case:
    path: str
    report_number: str
    native: str
    language: str
    english: str | None
    meddra: tuple[str, str | None] | None
    onset: str | None
    received: str | None
    criteria: frozenset[str]
    outcome: str
    country: str
    sex: str | None
    age: int | None
    qualification: str
    sender_org: str | None
    drugs: tuple[_Drug, ...] = field(default=())


def build_icsr(
    bundle: Mapping[str, Any],
    *,
    now: datetime,
    message_id: str,
    sender_id: str,
    receiver_id: str,
) -> bytes:
    """An ICH ICSR batch (MCCI_IN200100UV01, UTF-8 XML) for the AdverseEvents of ``bundle``.

    ``message_id`` is the batch number (N.1.2); ``sender_id`` and ``receiver_id`` the batch
    and message sender and receiver (N.1.3/N.1.4, N.2.r.2/N.2.r.3), agreed with the holder;
    ``now`` the transmission and creation time (N.1.5, N.2.r.4, C.1.2).
    """
    return _batch(_cases(bundle, "bundle"), now, message_id, sender_id, receiver_id)


def adapt(bundles: list[bytes], options: AdaptOptions) -> bytes:
    """``medledger adapt e2b``: one batch for the AdverseEvents of all files.

    The receiver is the suspect product's marketing-authorisation holder (its Organization
    identifier, else name) and the sender the reporting hospital; ``--control-id`` is the
    batch number, else one derived from the input bytes.
    """
    cases: list[_Case] = []
    receivers: set[str] = set()
    senders: set[str] = set()
    for n, data in enumerate(bundles):
        doc = load_bundle(data, f"input {n + 1}")
        cases.extend(_cases(doc, f"input {n + 1}"))
        view = BundleView(doc)
        receivers.update(_holder_ids(view))
        senders.update(_sender_ids(view))
    if len(receivers) != 1:
        raise AdaptError(
            "a batch goes to one marketing-authorisation holder; the inputs name "
            f"{len(receivers) or 'no'} holders ({', '.join(sorted(receivers))})"
        )
    if len(senders) != 1:
        raise AdaptError(
            "the sender is the hospital: give exactly one Organization that manages the "
            "Location (or a single non-holder Organization)"
        )
    batch = options.control_id or "MEDLEDGER-" + hashlib.sha256(b"".join(bundles)).hexdigest()[:16]
    return _batch(cases, options.now, batch, senders.pop(), receivers.pop())


# -- reading the case ------------------------------------------------------------------------


def _cases(doc: Mapping[str, Any], where: str) -> list[_Case]:
    view = BundleView(doc)
    found = [_case(view, loc, doc) for loc in view.of_type("AdverseEvent")]
    if not found:
        raise AdaptError(f"{where}: no AdverseEvent to report")
    return found


def _case(view: BundleView, loc: Located, doc: Mapping[str, Any]) -> _Case:
    ae = loc.resource
    event = e if isinstance(e := ae.get("event"), Mapping) else {}
    native = event.get("text") if isinstance(event.get("text"), str) else None
    if not native:
        raise AdaptError(f"{loc.path}.event.text: the reaction as reported (E.i.1.1a) is needed")
    language = _language(ae.get("language") or doc.get("language"), native)
    english = None
    if language != "eng":
        english = translation(event, "text", "en") or translation(event, "text", "en-GB")
        english = english or translation(event, "text", "en-US")
    meddra_codes = codes(event, MEDDRA_SYSTEM)
    meddra = None
    if meddra_codes:
        version = meddra_codes[0].get("version")
        meddra = (str(meddra_codes[0]["code"]), str(version) if version else None)
    seriousness = {str(c["code"]) for c in codes(ae.get("seriousness"), SERIOUSNESS_SYSTEM)}
    outcome_codes = codes(ae.get("outcome"), OUTCOME_SYSTEM)
    outcome = _OUTCOME.get(str(outcome_codes[0]["code"]), "0") if outcome_codes else "0"
    if outcome == "5":
        seriousness.add("SeriousResultsInDeath")
    onset = ae.get("date") if isinstance(ae.get("date"), str) else None
    received = ae.get("recordedDate") if isinstance(ae.get("recordedDate"), str) else onset

    patient = view.resolve(ae.get("subject"), loc)
    sex, age = _patient(patient.resource if patient else {}, onset)
    reporter = view.resolve(ae.get("recorder"), loc)
    identifier = i if isinstance(i := ae.get("identifier"), Mapping) else {}
    number = identifier.get("value") or ae.get("id") or loc.path
    return _Case(
        path=loc.path,
        report_number=_ID_SAFE.sub("", str(number)) or "1",
        native=native,
        language=language,
        english=english,
        meddra=meddra,
        onset=onset,
        received=received,
        criteria=frozenset(seriousness),
        outcome=outcome,
        country=_country(view, loc),
        sex=sex,
        age=age,
        qualification=_qualification(reporter),
        sender_org=_sender_name(view),
        drugs=tuple(_suspects(view, loc)),
    )


def _suspects(view: BundleView, loc: Located) -> list[_Drug]:
    drugs: list[_Drug] = []
    suspects = loc.resource.get("suspectEntity")
    for suspect in suspects if isinstance(suspects, list) else []:
        instance = suspect.get("instance") if isinstance(suspect, Mapping) else None
        target = view.resolve(instance, loc)
        use: Located | None = None
        if target is not None and target.type in USE_TYPES:
            use = target
            ref = target.resource.get("medicationReference")
            target = view.resolve(ref, target) if isinstance(ref, Mapping) else None
        if target is None or target.type != "Medication":
            continue
        if use is None:
            use = _use_of(view, target)
        drugs.append(_drug(view, target, use))
    if not drugs:
        raise AdaptError(
            f"{loc.path}.suspectEntity: no suspect Medication in the Bundle (G.k needs one)"
        )
    return drugs


def _drug(view: BundleView, med: Located, use: Located | None) -> _Drug:
    res = med.resource
    name = text_of(res.get("code"))
    if not name:
        raise AdaptError(f"{med.path}.code: the product name as reported (G.k.2.2) is needed")
    fma = foreign_authorisation(med)
    holder_name = None
    if fma and fma.holder:
        holder = view.resolve({"reference": fma.holder}, med)
        if holder is not None and isinstance(holder.resource.get("name"), str):
            holder_name = holder.resource["name"]
    identities = [i for i in product_identities(med) if i.gtin is not None]
    identity = identities[0] if identities else None
    pack_code = None
    cn_code = None
    for _, scan in trace_code_values(res):
        try:
            tc = parse_trace_code(scan)
        except TraceCodeError:
            continue
        if tc.kind == "gs1" and pack_code is None:
            pack_code = tc.hri()
        elif tc.kind == "cn20" and cn_code is None:
            cn_code = tc.cn_code
    start, dose, route, text = _dosage(use) if use is not None else (None, None, (None, None), None)
    return _Drug(
        path=med.path,
        name=name,
        authorisation=fma,
        holder_name=holder_name,
        identity=identity,
        pack_code=pack_code,
        cn_code=cn_code,
        start=start,
        dose=dose,
        route=route,
        dosage_text=text,
    )


def _use_of(view: BundleView, med: Located) -> Located | None:
    for loc in view.of_type(*USE_TYPES):
        target = view.resolve(loc.resource.get("medicationReference"), loc)
        if target is not None and target.resource is med.resource:
            return loc
    return None


def _dosage(
    use: Located,
) -> tuple[str | None, tuple[str, str] | None, tuple[str | None, str | None], str | None]:
    res = use.resource
    start = res.get("effectiveDateTime") or res.get("whenHandedOver")
    period = res.get("effectivePeriod")
    if not start and isinstance(period, Mapping):
        start = period.get("start")
    dosage = res.get("dosage")
    if isinstance(dosage, list):
        dosage = dosage[0] if dosage else None
    dose = route = None
    text = None
    if isinstance(dosage, Mapping):
        text = dosage.get("text") if isinstance(dosage.get("text"), str) else None
        quantity = dosage.get("dose")
        if not isinstance(quantity, Mapping):
            rates = dosage.get("doseAndRate")
            first = rates[0] if isinstance(rates, list) and rates else {}
            quantity = first.get("doseQuantity") if isinstance(first, Mapping) else None
        if isinstance(quantity, Mapping) and quantity.get("value") is not None:
            unit = quantity.get("code") if quantity.get("system") == UCUM else None
            dose = (str(quantity["value"]), str(unit or quantity.get("unit") or "1"))
        concept = dosage.get("route")
        snomed = codes(concept, SNOMED)
        ich = _ROUTE.get(str(snomed[0]["code"])) if snomed else None
        route = (ich, text_of(concept))
    return (start if isinstance(start, str) else None), dose, route or (None, None), text


def _patient(patient: Mapping[str, Any], onset: str | None) -> tuple[str | None, int | None]:
    sex = {"male": "1", "female": "2"}.get(str(patient.get("gender")))
    birth = patient.get("birthDate")
    age = None
    day = re.compile(r"\d{4}-\d{2}-\d{2}")
    if isinstance(birth, str) and onset and day.fullmatch(birth) and day.fullmatch(onset[:10]):
        try:
            born, at = date.fromisoformat(birth), date.fromisoformat(onset[:10])
        except ValueError:
            return sex, None
        age = at.year - born.year - ((at.month, at.day) < (born.month, born.day))
    return sex, age


def _qualification(reporter: Located | None) -> str:
    """C.2.r.4: 1 physician, 2 pharmacist, 3 other health professional."""
    if reporter is None:
        return "3"
    if reporter.type == "PractitionerRole":
        role = reporter.resource.get("code")
        found = {str(c["code"]) for r in role or [] for c in codes(r, SNOMED)}
        if "46255001" in found:
            return "2"
        if "309343006" in found or "158965000" in found:
            return "1"
        return "3"
    return "1" if reporter.type == "Practitioner" else "3"


def _country(view: BundleView, loc: Located) -> str:
    """E.i.9: the Location's country when it is an ISO 3166 code, else CN (the pilot zone)."""
    where = view.resolve(loc.resource.get("location"), loc)
    address = where.resource.get("address") if where else None
    country = address.get("country") if isinstance(address, Mapping) else None
    return country if isinstance(country, str) and re.fullmatch(r"[A-Z]{2}", country) else "CN"


def _language(value: Any, text: str) -> str:
    if isinstance(value, str) and value:
        return _LANG.get(value.split("-")[0].lower(), value.split("-")[0].lower())
    # No language stated: CJK ideographs mean Chinese (the pilot zone's records), else English.
    return "zho" if re.search(r"[\u4e00-\u9fff]", text) else "eng"


def _holder_ids(view: BundleView) -> set[str]:
    out: set[str] = set()
    for loc in view.of_type("Medication"):
        fma = foreign_authorisation(loc)
        if fma and fma.holder:
            holder = view.resolve({"reference": fma.holder}, loc)
            if holder is not None:
                out.add(_org_id(holder.resource))
    return out


def _hospital(view: BundleView) -> list[Located]:
    holders = {
        id(h.resource)
        for loc in view.of_type("Medication", "Device")
        if (fma := foreign_authorisation(loc)) and fma.holder
        if (h := view.resolve({"reference": fma.holder}, loc)) is not None
    }
    managing = [
        org
        for place in view.of_type("Location")
        if (org := view.resolve(place.resource.get("managingOrganization"), place)) is not None
    ]
    if managing:
        return managing
    return [o for o in view.of_type("Organization") if id(o.resource) not in holders]


def _sender_ids(view: BundleView) -> set[str]:
    return {_org_id(org.resource) for org in _hospital(view)}


def _sender_name(view: BundleView) -> str | None:
    names = [o.resource.get("name") for o in _hospital(view)]
    return next((n for n in names if isinstance(n, str)), None)


def _org_id(org: Mapping[str, Any]) -> str:
    for ident in org.get("identifier") or []:
        if isinstance(ident, Mapping) and isinstance(ident.get("value"), str):
            return str(ident["value"])
    return str(org.get("name") or org.get("id") or "UNKNOWN")


# -- writing the XML -------------------------------------------------------------------------


def _batch(
    cases: list[_Case], now: datetime, batch_id: str, sender_id: str, receiver_id: str
) -> bytes:
    for value, what, limit in (
        (batch_id, "batch number (N.1.2)", 100),
        (sender_id, "sender identifier (N.1.3)", 60),
        (receiver_id, "receiver identifier (N.1.4)", 60),
    ):
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            raise AdaptError(f"the {what} is 1-{limit} characters, got {value!r}")
    if now.tzinfo is None:
        raise AdaptError("now needs a UTC offset (N.1.5 is local time with its offset)")
    stamp = _ts(now)
    # Tags and attributes are written with their prefixes as text (the HL7 v3 namespace as
    # the default one): ElementTree cannot write a default namespace beside unprefixed
    # attributes, and this keeps the serialisation byte-stable.
    root = ET.Element(
        "MCCI_IN200100UV01",
        {
            "xmlns": HL7,
            "xmlns:xsi": XSI,
            "ITSVersion": "XML_1.0",
            "xsi:schemaLocation": f"{HL7} MCCI_IN200100UV01.xsd",
        },
    )
    _el(root, "id", extension=batch_id, root=f"{ICH}.3.22")  # N.1.2
    _el(root, "creationTime", value=stamp)  # N.1.5
    _el(root, "responseModeCode", code="D")
    _el(root, "interactionId", extension="MCCI_IN200100UV01", root="2.16.840.1.113883.1.6")
    _el(root, "name", code="1", codeSystem=f"{ICH}.1.1")  # N.1.1 ichicsr
    for case in cases:
        _message(root, case, stamp, batch_id, sender_id, receiver_id)
    _device(root, "receiver", "RCV", receiver_id, f"{ICH}.3.14")  # N.1.4
    _device(root, "sender", "SND", sender_id, f"{ICH}.3.13")  # N.1.3
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n").encode("utf-8")


def _message(
    parent: ET.Element, case: _Case, stamp: str, batch_id: str, sender_id: str, receiver_id: str
) -> None:
    company = _ID_SAFE.sub("", sender_id.replace("-", "")) or "SENDER"
    case_id = f"CN-{company}-{case.report_number}"  # C.1.1: country-sender-report number
    msg = _el(parent, "PORR_IN049016UV")
    _el(msg, "id", extension=case_id, root=f"{ICH}.3.1")  # N.2.r.1 (= C.1.1)
    _el(msg, "creationTime", value=stamp)  # N.2.r.4
    _el(msg, "interactionId", extension="PORR_IN049016UV", root="2.16.840.1.113883.1.6")
    _el(msg, "processingCode", code="P")
    _el(msg, "processingModeCode", code="T")
    _el(msg, "acceptAckCode", code="AL")
    _device(msg, "receiver", "RCV", receiver_id, f"{ICH}.3.12")  # N.2.r.3
    _device(msg, "sender", "SND", sender_id, f"{ICH}.3.11")  # N.2.r.2
    act = _el(msg, "controlActProcess", classCode="CACT", moodCode="EVN")
    _el(act, "code", code="PORR_TE049016UV", codeSystem="2.16.840.1.113883.1.18")
    _el(act, "effectiveTime", value=stamp)  # C.1.2
    subject = _el(act, "subject", typeCode="SUBJ")
    inv = _el(subject, "investigationEvent", classCode="INVSTG", moodCode="EVN")
    _el(inv, "id", extension=case_id, root=f"{ICH}.3.1")  # C.1.1
    _el(inv, "id", extension=case_id, root=f"{ICH}.3.2")  # C.1.8.1
    _el(inv, "code", code="PAT_ADV_EVNT", codeSystem="2.16.840.1.113883.5.4")
    _el(inv, "text").text = _narrative(case)  # H.1
    _el(inv, "statusCode", code="active")
    low = _el(inv, "effectiveTime")
    _el(low, "low", value=_ts_date(case.received) or stamp[:8])  # C.1.4
    _el(inv, "availabilityTime", value=_ts_date(case.received) or stamp[:8])  # C.1.5

    assessment = _el(
        _el(inv, "component", typeCode="COMP"),
        "adverseEventAssessment",
        classCode="INVSTG",
        moodCode="EVN",
    )
    role = _el(_el(assessment, "subject1", typeCode="SBJ"), "primaryRole", classCode="INVSBJ")
    player = _el(role, "player1", classCode="PSN", determinerCode="INSTANCE")
    _el(player, "name", nullFlavor="MSK")  # D.1, masked
    if case.sex:
        _el(player, "administrativeGenderCode", code=case.sex, codeSystem="1.0.5218")  # D.5
    else:
        _el(player, "administrativeGenderCode", nullFlavor="UNK")
    if case.age is not None:
        obs = _observation(_el(role, "subjectOf2", typeCode="SBJ"), "3")
        _el(obs, "value", {"xsi:type": "PQ"}, value=str(case.age), unit="a")  # D.2.2a/b
    reaction_id = _uuid(batch_id, case.path, "reaction")
    _reaction(role, case, reaction_id)
    drug_ids = [_uuid(batch_id, d.path, case.path) for d in case.drugs]
    organizer = _el(
        _el(role, "subjectOf2", typeCode="SBJ"), "organizer", classCode="CATEGORY", moodCode="EVN"
    )
    _el(organizer, "code", code="4", codeSystem=f"{ICH}.1.20")  # G.k
    for drug, drug_id in zip(case.drugs, drug_ids, strict=True):
        _drug_xml(organizer, drug, drug_id)
    for drug_id in drug_ids:
        causality = _el(
            _el(assessment, "component", typeCode="COMP"),
            "causalityAssessment",
            classCode="OBS",
            moodCode="EVN",
        )
        _el(causality, "code", code="20", codeSystem=f"{ICH}.1.19")
        _el(causality, "value", {"xsi:type": "CE"}, code="1", codeSystem=f"{ICH}.1.13")
        reference = _el(
            _el(causality, "subject2", typeCode="SUBJ"),
            "productUseReference",
            classCode="SBADM",
            moodCode="EVN",
        )
        _el(reference, "id", root=drug_id)  # G.k.1: suspect

    _flag(inv, "1", "false")  # C.1.6.1: no additional documents held
    serious = any(code.startswith("Serious") for code in case.criteria)
    _flag(inv, "23", "true" if serious else "false")  # C.1.7: expedited when serious
    first = _related(inv, "1")
    _el(_author(first), "code", code="2", codeSystem=f"{ICH}.1.3")  # C.1.8.2: other sender
    source = _el(inv, "outboundRelationship", typeCode="SPRT")
    _el(source, "priorityNumber", value="1")  # C.2.r.5
    entity = _author(_related(source, "2", attach=False))
    person = _el(entity, "assignedPerson", classCode="PSN", determinerCode="INSTANCE")
    name = _el(person, "name")
    _el(name, "given", nullFlavor="MSK")  # C.2.r.1.2
    _el(name, "family", nullFlavor="MSK")  # C.2.r.1.4
    qual = _el(person, "asQualifiedEntity", classCode="QUAL")
    _el(qual, "code", code=case.qualification, codeSystem=f"{ICH}.1.6")  # C.2.r.4
    _located(person, "CN")  # C.2.r.3
    sender = _el(
        _el(inv, "subjectOf1", typeCode="SUBJ"), "controlActEvent", classCode="CACT", moodCode="EVN"
    )
    sent_by = _el(_el(sender, "author", typeCode="AUT"), "assignedEntity", classCode="ASSIGNED")
    _el(sent_by, "code", code="3", codeSystem=f"{ICH}.1.7")  # C.3.1 health professional
    sender_person = _el(sent_by, "assignedPerson", classCode="PSN", determinerCode="INSTANCE")
    _el(sender_person, "name", nullFlavor="MSK")
    _located(sender_person, "CN")  # C.3.4.5
    if case.sender_org:
        outer = _el(sent_by, "representedOrganization", classCode="ORG", determinerCode="INSTANCE")
        inner = _el(
            _el(outer, "assignedEntity", classCode="ASSIGNED"),
            "representedOrganization",
            classCode="ORG",
            determinerCode="INSTANCE",
        )
        _el(inner, "name").text = case.sender_org  # C.3.2
    report_type = _el(
        _el(inv, "subjectOf2", typeCode="SUBJ"),
        "investigationCharacteristic",
        classCode="OBS",
        moodCode="EVN",
    )
    _el(report_type, "code", code="1", codeSystem=f"{ICH}.1.23")
    _el(report_type, "value", {"xsi:type": "CE"}, code="1", codeSystem=f"{ICH}.1.2")  # C.1.3
    other_ids = _el(
        _el(inv, "subjectOf2", typeCode="SUBJ"),
        "investigationCharacteristic",
        classCode="OBS",
        moodCode="EVN",
    )
    _el(other_ids, "code", code="2", codeSystem=f"{ICH}.1.23")
    _el(other_ids, "value", {"xsi:type": "BL"}, value="false")  # C.1.9.1


def _reaction(role: ET.Element, case: _Case, reaction_id: str) -> None:
    obs = _observation(_el(role, "subjectOf2", typeCode="SBJ"), "29")
    obs.insert(0, ET.Element("id", {"root": reaction_id}))
    if case.onset:
        period = _el(obs, "effectiveTime", {"xsi:type": "IVL_TS"})
        _el(period, "low", value=_ts_date(case.onset, keep_time=True) or "")  # E.i.4
    value = _el(obs, "value", {"xsi:type": "CE"})
    if case.meddra is not None:  # E.i.2.1a/b, only when the Bundle coded it
        value.set("code", case.meddra[0])
        value.set("codeSystem", MEDDRA_OID)
        if case.meddra[1]:
            value.set("codeSystemVersion", case.meddra[1])
    native = _el(value, "originalText", language=case.language)
    native.text = case.native  # E.i.1.1a/b
    place = _el(
        _el(_el(obs, "location", typeCode="LOC"), "locatedEntity", classCode="LOCE"),
        "locatedPlace",
        classCode="COUNTRY",
        determinerCode="INSTANCE",
    )
    _el(place, "code", code=case.country, codeSystem=ISO3166)  # E.i.9
    if case.english:
        translated = _observation(_el(obs, "outboundRelationship2", typeCode="PERT"), "30")
        _el(translated, "value", {"xsi:type": "ED"}).text = case.english  # E.i.1.2
    for code, fhir_code in _CRITERIA:  # E.i.3.2a-f
        criterion = _observation(_el(obs, "outboundRelationship2", typeCode="PERT"), code)
        if fhir_code in case.criteria:
            _el(criterion, "value", {"xsi:type": "BL"}, value="true")
        else:
            _el(criterion, "value", {"xsi:type": "BL"}, nullFlavor="NI")
    outcome = _observation(_el(obs, "outboundRelationship2", typeCode="PERT"), "27")
    _el(outcome, "value", {"xsi:type": "CE"}, code=case.outcome, codeSystem=f"{ICH}.1.11")


def _drug_xml(organizer: ET.Element, drug: _Drug, drug_id: str) -> None:
    admin = _el(
        _el(organizer, "component", typeCode="COMP"),
        "substanceAdministration",
        classCode="SBADM",
        moodCode="EVN",
    )
    _el(admin, "id", root=drug_id)
    instance = _el(_el(admin, "consumable", typeCode="CSM"), "instanceOfKind", classCode="INST")
    kind = _el(instance, "kindOfProduct", classCode="MMAT", determinerCode="KIND")
    _el(kind, "name").text = drug.name  # G.k.2.2
    fma = drug.authorisation
    if fma is not None and (fma.number or fma.country or drug.holder_name):
        approval = _el(
            _el(_el(kind, "asManufacturedProduct", classCode="MANU"), "subjectOf", typeCode="SBJ"),
            "approval",
            classCode="CNTRCT",
            moodCode="EVN",
        )
        if fma.number:
            _el(approval, "id", extension=fma.number, root=f"{ICH}.3.4")  # G.k.3.1
        if drug.holder_name:
            holder = _el(
                _el(_el(approval, "holder", typeCode="HLD"), "role", classCode="HLD"),
                "playingOrganization",
                classCode="ORG",
                determinerCode="INSTANCE",
            )
            _el(holder, "name").text = drug.holder_name  # G.k.3.3
        if fma.country:
            territory = _el(
                _el(
                    _el(approval, "author", typeCode="AUT"),
                    "territorialAuthority",
                    classCode="TERR",
                ),
                "territory",
                classCode="NAT",
                determinerCode="INSTANCE",
            )
            _el(territory, "code", code=fma.country, codeSystem=ISO3166)  # G.k.3.2
    obtained = (fma.source_country or fma.country) if fma else None
    if obtained:
        event = _el(
            _el(instance, "subjectOf", typeCode="SBJ"),
            "productEvent",
            classCode="ACT",
            moodCode="EVN",
        )
        _el(event, "code", code="1", codeSystem=f"{ICH}.1.18")
        org = _el(
            _el(_el(event, "performer", typeCode="PRF"), "assignedEntity", classCode="ASSIGNED"),
            "representedOrganization",
            classCode="ORG",
            determinerCode="INSTANCE",
        )
        _el(_el(org, "addr"), "country").text = obtained  # G.k.2.4

    dosing = _el(
        _el(admin, "outboundRelationship2", typeCode="COMP"),
        "substanceAdministration",
        classCode="SBADM",
        moodCode="EVN",
    )
    if drug.dosage_text:
        _el(dosing, "text").text = drug.dosage_text  # G.k.4.r.8
    if drug.start:
        period = _el(dosing, "effectiveTime", {"xsi:type": "IVL_TS"})
        _el(period, "low", value=_ts_date(drug.start, keep_time=True) or "")  # G.k.4.r.4
    ich_route, route_text = drug.route
    if ich_route:
        _el(dosing, "routeCode", code=ich_route, codeSystem=f"{ICH}.1.14")  # G.k.4.r.10.1
    elif route_text:
        _el(_el(dosing, "routeCode"), "originalText").text = route_text
    if drug.dose:
        _el(dosing, "doseQuantity", value=drug.dose[0], unit=drug.dose[1])  # G.k.4.r.1a/b
    lot = drug.identity.lot if drug.identity else None
    product = _el(
        _el(_el(dosing, "consumable", typeCode="CSM"), "instanceOfKind", classCode="INST"),
        "productInstanceInstance",
        classCode="MMAT",
        determinerCode="INSTANCE",
    )
    _el(product, "id", nullFlavor="NI")
    if lot:
        _el(product, "lotNumberText").text = lot  # G.k.4.r.7
    else:
        _el(product, "lotNumberText", nullFlavor="UNK")

    info = _additional_info(drug)
    if info:
        note = _observation(_el(admin, "outboundRelationship2", typeCode="REFR"), "2")
        _el(note, "value", {"xsi:type": "ST"}).text = info  # G.k.11


def _additional_info(drug: _Drug) -> str:
    parts: list[str] = []
    if drug.pack_code:
        parts.append(f"GS1 pack code {drug.pack_code}")
    elif drug.identity and drug.identity.gtin:
        parts.append(f"GTIN {drug.identity.gtin}")
    if drug.identity and drug.identity.expiry:
        parts.append(f"expiry {drug.identity.expiry}")
    if drug.authorisation and drug.authorisation.import_approval:
        parts.append(
            "imported under special-import approval "
            f"{drug.authorisation.import_approval} (Hainan Boao Lecheng pilot zone, CN)"
        )
    if drug.cn_code:
        parts.append(f"Chinese drug trace code {drug.cn_code}")
    return "; ".join(parts)


def _narrative(case: _Case) -> str:
    """H.1, in English, from the structured data only."""
    who = {"1": "male", "2": "female"}.get(case.sex or "", "")
    age = f"{case.age}-year-old " if case.age is not None else ""
    patient = f"A {age}{who} patient".replace("  ", " ").strip()
    drug = case.drugs[0]
    batch = drug.identity.lot if drug.identity and drug.identity.lot else "unknown"
    text = (
        f"{patient} received {drug.name} (batch {batch}) at a hospital in the Hainan Boao "
        "Lecheng International Medical Tourism Pilot Zone, China"
    )
    fma = drug.authorisation
    if fma and fma.number and fma.country:
        text += f"; the product is authorised in {fma.country} ({fma.number}) and was imported"
        text += " under the pilot zone's special-import rules"
    text += f". Reaction as reported: {case.native}"
    if case.english:
        text += f" (English: {case.english})"
    outcome = {v: k for k, v in _OUTCOME.items()}[case.outcome]
    return text + f". Outcome: {outcome}."


# -- XML helpers ------------------------------------------------------------------------------


def _el(
    parent: ET.Element, tag: str, attrs: Mapping[str, str] | None = None, **more: str
) -> ET.Element:
    return ET.SubElement(parent, tag, {**(attrs or {}), **more})


def _observation(parent: ET.Element, code: str) -> ET.Element:
    obs = _el(parent, "observation", classCode="OBS", moodCode="EVN")
    _el(obs, "code", code=code, codeSystem=f"{ICH}.1.19")
    return obs


def _flag(inv: ET.Element, code: str, value: str) -> None:
    event = _el(
        _el(inv, "component", typeCode="COMP"), "observationEvent", classCode="OBS", moodCode="EVN"
    )
    _el(event, "code", code=code, codeSystem=f"{ICH}.1.19")
    _el(event, "value", {"xsi:type": "BL"}, value=value)


def _related(parent: ET.Element, code: str, *, attach: bool = True) -> ET.Element:
    host = _el(parent, "outboundRelationship", typeCode="SPRT") if attach else parent
    related = _el(host, "relatedInvestigation", classCode="INVSTG", moodCode="EVN")
    _el(related, "code", code=code, codeSystem=f"{ICH}.1.22")
    return related


def _author(related: ET.Element) -> ET.Element:
    event = _el(
        _el(related, "subjectOf2", typeCode="SUBJ"),
        "controlActEvent",
        classCode="CACT",
        moodCode="EVN",
    )
    return _el(_el(event, "author", typeCode="AUT"), "assignedEntity", classCode="ASSIGNED")


def _located(person: ET.Element, country: str) -> None:
    place = _el(
        _el(person, "asLocatedEntity", classCode="LOCE"),
        "location",
        classCode="COUNTRY",
        determinerCode="INSTANCE",
    )
    _el(place, "code", code=country, codeSystem=ISO3166)


def _device(parent: ET.Element, tag: str, type_code: str, value: str, oid: str) -> None:
    device = _el(
        _el(parent, tag, typeCode=type_code), "device", classCode="DEV", determinerCode="INSTANCE"
    )
    _el(device, "id", extension=value, root=oid)


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "urn:medledger:e2b:" + "/".join(parts)))


def _ts(moment: datetime) -> str:
    """HL7 TS with seconds and offset, CCYYMMDDhhmmss+ZZzz (ICH IG appendix II)."""
    offset = moment.strftime("%z") or "+0000"
    return moment.strftime("%Y%m%d%H%M%S") + offset


def _ts_date(value: str | None, *, keep_time: bool = False) -> str | None:
    """A FHIR date/dateTime as HL7 TS: date only, or with time and offset when asked."""
    if not value:
        return None
    if keep_time and "T" in value:
        try:
            return _ts(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            pass
    digits = re.sub(r"[^0-9]", "", value[:10])
    return digits or None
