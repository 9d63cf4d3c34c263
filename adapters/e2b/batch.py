"""The ICH ICSR batch (MCCI_IN200100UV01) and one message (PORR_IN049016UV) per case.

The batch and message headers (N.1, N.2), the case's identification and sender (C.1, C.3),
the masked primary source (C.2), the patient (D), the reaction and drugs (``reaction``,
``drug``), the causality link between them, and the case narrative (H.1).
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from datetime import datetime

from adapters.base import AdaptError
from adapters.e2b.case import ID_SAFE, OUTCOME, Case
from adapters.e2b.drug import write_drug
from adapters.e2b.elements import HL7, ICH, ISO3166, XSI, el, observation, ts, ts_date
from adapters.e2b.reaction import write_reaction


def write_batch(
    cases: list[Case], now: datetime, batch_id: str, sender_id: str, receiver_id: str
) -> bytes:
    """The batch of ``cases`` as UTF-8 XML; the ids are checked against their E2B lengths."""
    for value, what, limit in (
        (batch_id, "batch number (N.1.2)", 100),
        (sender_id, "sender identifier (N.1.3)", 60),
        (receiver_id, "receiver identifier (N.1.4)", 60),
    ):
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            raise AdaptError(f"the {what} is 1-{limit} characters, got {value!r}")
    if now.tzinfo is None:
        raise AdaptError("now needs a UTC offset (N.1.5 is local time with its offset)")
    stamp = ts(now)
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
    el(root, "id", extension=batch_id, root=f"{ICH}.3.22")  # N.1.2
    el(root, "creationTime", value=stamp)  # N.1.5
    el(root, "responseModeCode", code="D")
    el(root, "interactionId", extension="MCCI_IN200100UV01", root="2.16.840.1.113883.1.6")
    el(root, "name", code="1", codeSystem=f"{ICH}.1.1")  # N.1.1 ichicsr
    for case in cases:
        _message(root, case, stamp, batch_id, sender_id, receiver_id)
    _device(root, "receiver", "RCV", receiver_id, f"{ICH}.3.14")  # N.1.4
    _device(root, "sender", "SND", sender_id, f"{ICH}.3.13")  # N.1.3
    ET.indent(root, space="  ")
    body = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n").encode("utf-8")


def _message(
    parent: ET.Element, case: Case, stamp: str, batch_id: str, sender_id: str, receiver_id: str
) -> None:
    company = ID_SAFE.sub("", sender_id.replace("-", "")) or "SENDER"
    case_id = f"CN-{company}-{case.report_number}"  # C.1.1: country-sender-report number
    msg = el(parent, "PORR_IN049016UV")
    el(msg, "id", extension=case_id, root=f"{ICH}.3.1")  # N.2.r.1 (= C.1.1)
    el(msg, "creationTime", value=stamp)  # N.2.r.4
    el(msg, "interactionId", extension="PORR_IN049016UV", root="2.16.840.1.113883.1.6")
    el(msg, "processingCode", code="P")
    el(msg, "processingModeCode", code="T")
    el(msg, "acceptAckCode", code="AL")
    _device(msg, "receiver", "RCV", receiver_id, f"{ICH}.3.12")  # N.2.r.3
    _device(msg, "sender", "SND", sender_id, f"{ICH}.3.11")  # N.2.r.2
    act = el(msg, "controlActProcess", classCode="CACT", moodCode="EVN")
    el(act, "code", code="PORR_TE049016UV", codeSystem="2.16.840.1.113883.1.18")
    el(act, "effectiveTime", value=stamp)  # C.1.2
    subject = el(act, "subject", typeCode="SUBJ")
    inv = el(subject, "investigationEvent", classCode="INVSTG", moodCode="EVN")
    el(inv, "id", extension=case_id, root=f"{ICH}.3.1")  # C.1.1
    el(inv, "id", extension=case_id, root=f"{ICH}.3.2")  # C.1.8.1
    el(inv, "code", code="PAT_ADV_EVNT", codeSystem="2.16.840.1.113883.5.4")
    el(inv, "text").text = _narrative(case)  # H.1
    el(inv, "statusCode", code="active")
    low = el(inv, "effectiveTime")
    el(low, "low", value=ts_date(case.received) or stamp[:8])  # C.1.4
    el(inv, "availabilityTime", value=ts_date(case.received) or stamp[:8])  # C.1.5

    assessment = el(
        el(inv, "component", typeCode="COMP"),
        "adverseEventAssessment",
        classCode="INVSTG",
        moodCode="EVN",
    )
    role = el(el(assessment, "subject1", typeCode="SBJ"), "primaryRole", classCode="INVSBJ")
    player = el(role, "player1", classCode="PSN", determinerCode="INSTANCE")
    el(player, "name", nullFlavor="MSK")  # D.1, masked
    if case.sex:
        el(player, "administrativeGenderCode", code=case.sex, codeSystem="1.0.5218")  # D.5
    else:
        el(player, "administrativeGenderCode", nullFlavor="UNK")
    if case.age is not None:
        obs = observation(el(role, "subjectOf2", typeCode="SBJ"), "3")
        el(obs, "value", {"xsi:type": "PQ"}, value=str(case.age), unit="a")  # D.2.2a/b
    reaction_id = _uuid(batch_id, case.path, "reaction")
    write_reaction(role, case, reaction_id)
    drug_ids = [_uuid(batch_id, d.path, case.path) for d in case.drugs]
    organizer = el(
        el(role, "subjectOf2", typeCode="SBJ"), "organizer", classCode="CATEGORY", moodCode="EVN"
    )
    el(organizer, "code", code="4", codeSystem=f"{ICH}.1.20")  # G.k
    for drug, drug_id in zip(case.drugs, drug_ids, strict=True):
        write_drug(organizer, drug, drug_id)
    for drug_id in drug_ids:
        causality = el(
            el(assessment, "component", typeCode="COMP"),
            "causalityAssessment",
            classCode="OBS",
            moodCode="EVN",
        )
        el(causality, "code", code="20", codeSystem=f"{ICH}.1.19")
        el(causality, "value", {"xsi:type": "CE"}, code="1", codeSystem=f"{ICH}.1.13")
        reference = el(
            el(causality, "subject2", typeCode="SUBJ"),
            "productUseReference",
            classCode="SBADM",
            moodCode="EVN",
        )
        el(reference, "id", root=drug_id)  # G.k.1: suspect

    _flag(inv, "1", "false")  # C.1.6.1: no additional documents held
    serious = any(code.startswith("Serious") for code in case.criteria)
    _flag(inv, "23", "true" if serious else "false")  # C.1.7: expedited when serious
    first = _related(inv, "1")
    el(_author(first), "code", code="2", codeSystem=f"{ICH}.1.3")  # C.1.8.2: other sender
    source = el(inv, "outboundRelationship", typeCode="SPRT")
    el(source, "priorityNumber", value="1")  # C.2.r.5
    entity = _author(_related(source, "2", attach=False))
    person = el(entity, "assignedPerson", classCode="PSN", determinerCode="INSTANCE")
    name = el(person, "name")
    el(name, "given", nullFlavor="MSK")  # C.2.r.1.2
    el(name, "family", nullFlavor="MSK")  # C.2.r.1.4
    qual = el(person, "asQualifiedEntity", classCode="QUAL")
    el(qual, "code", code=case.qualification, codeSystem=f"{ICH}.1.6")  # C.2.r.4
    _located(person, "CN")  # C.2.r.3
    sender = el(
        el(inv, "subjectOf1", typeCode="SUBJ"), "controlActEvent", classCode="CACT", moodCode="EVN"
    )
    sent_by = el(el(sender, "author", typeCode="AUT"), "assignedEntity", classCode="ASSIGNED")
    el(sent_by, "code", code="3", codeSystem=f"{ICH}.1.7")  # C.3.1 health professional
    sender_person = el(sent_by, "assignedPerson", classCode="PSN", determinerCode="INSTANCE")
    el(sender_person, "name", nullFlavor="MSK")
    _located(sender_person, "CN")  # C.3.4.5
    if case.sender_org:
        outer = el(sent_by, "representedOrganization", classCode="ORG", determinerCode="INSTANCE")
        inner = el(
            el(outer, "assignedEntity", classCode="ASSIGNED"),
            "representedOrganization",
            classCode="ORG",
            determinerCode="INSTANCE",
        )
        el(inner, "name").text = case.sender_org  # C.3.2
    report_type = el(
        el(inv, "subjectOf2", typeCode="SUBJ"),
        "investigationCharacteristic",
        classCode="OBS",
        moodCode="EVN",
    )
    el(report_type, "code", code="1", codeSystem=f"{ICH}.1.23")
    el(report_type, "value", {"xsi:type": "CE"}, code="1", codeSystem=f"{ICH}.1.2")  # C.1.3
    other_ids = el(
        el(inv, "subjectOf2", typeCode="SUBJ"),
        "investigationCharacteristic",
        classCode="OBS",
        moodCode="EVN",
    )
    el(other_ids, "code", code="2", codeSystem=f"{ICH}.1.23")
    el(other_ids, "value", {"xsi:type": "BL"}, value="false")  # C.1.9.1


def _narrative(case: Case) -> str:
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
    outcome = {v: k for k, v in OUTCOME.items()}[case.outcome]
    return text + f". Outcome: {outcome}."


def _flag(inv: ET.Element, code: str, value: str) -> None:
    event = el(
        el(inv, "component", typeCode="COMP"), "observationEvent", classCode="OBS", moodCode="EVN"
    )
    el(event, "code", code=code, codeSystem=f"{ICH}.1.19")
    el(event, "value", {"xsi:type": "BL"}, value=value)


def _related(parent: ET.Element, code: str, *, attach: bool = True) -> ET.Element:
    host = el(parent, "outboundRelationship", typeCode="SPRT") if attach else parent
    related = el(host, "relatedInvestigation", classCode="INVSTG", moodCode="EVN")
    el(related, "code", code=code, codeSystem=f"{ICH}.1.22")
    return related


def _author(related: ET.Element) -> ET.Element:
    event = el(
        el(related, "subjectOf2", typeCode="SUBJ"),
        "controlActEvent",
        classCode="CACT",
        moodCode="EVN",
    )
    return el(el(event, "author", typeCode="AUT"), "assignedEntity", classCode="ASSIGNED")


def _located(person: ET.Element, country: str) -> None:
    place = el(
        el(person, "asLocatedEntity", classCode="LOCE"),
        "location",
        classCode="COUNTRY",
        determinerCode="INSTANCE",
    )
    el(place, "code", code=country, codeSystem=ISO3166)


def _device(parent: ET.Element, tag: str, type_code: str, value: str, oid: str) -> None:
    device = el(
        el(parent, tag, typeCode=type_code), "device", classCode="DEV", determinerCode="INSTANCE"
    )
    el(device, "id", extension=value, root=oid)


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "urn:medledger:e2b:" + "/".join(parts)))
