"""A FHIR R4 collection Bundle from an HL7 v2 message read by ``adapters.hl7v2.read``.

The inverse of the builders, for what home hospitals send back: ORU^R01 results, MDM^T02
documents and ADT patient updates (A01, A04, A08, A28, A31). What comes out:

- Patient from PID: identifiers (PID-3; the assigning authority's universal id as the system
  when it is a URI or an OID, else a system under this project's canonical base named after
  the authority), names (PID-5), birth date (PID-7), sex (PID-8).
- Observation per OBX that is not a document: code (OBX-3), value by OBX-2 (NM and SN as
  Quantity or Range with the lexeme kept, ST/TX/FT as string, CE/CWE as CodeableConcept,
  DT/TS/DTM as dateTime, ID/IS as a bare code, anything else as text), units (OBX-6, UCUM
  when named so), reference range (OBX-7), interpretation (OBX-8), status (OBX-11), effective
  time (OBX-14), notes (NTE).
- DiagnosticReport per OBR: code (OBR-4), filler number (OBR-3), status (OBR-25), effective
  time (OBR-7), its observations as results, its notes as the conclusion.
- DocumentReference per encapsulated document (OBX of type ED, Base64), typed by OBX-3.
- Condition per DG1, AllergyIntolerance per AL1, Procedure per PR1.

Output is deterministic: the Bundle's identifier and every fullUrl are name-based UUIDs
(RFC 9562 §5.5) of the sending application and facility, the control id (MSH-10) and the
entry's position, so a message sent twice becomes the same Bundle bytes twice. Times without
a UTC offset take MSH-7's; with none there either, only their date is kept (FHIR refuses a
time without an offset, and guessing one would be wrong).

Anything that cannot be carried faithfully raises :class:`MessageError` naming the segment,
its occurrence and the field, with its HL7 table 0357 condition.
"""

from __future__ import annotations

import base64
import re
import uuid
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

from adapters.base import CANONICAL_BASE
from adapters.hl7v2 import text as tx
from adapters.hl7v2.fields import V2_SYSTEMS
from adapters.hl7v2.read import Coded, MessageError, Observation, V2Message

__all__ = ["SUPPORTED", "to_bundle"]

# Message code -> trigger events taken.
SUPPORTED = {
    "ORU": ("R01",),
    "MDM": ("T02",),
    "ADT": ("A01", "A04", "A08", "A28", "A31"),
}

_NAMESPACE = uuid.UUID("0c5f8f0e-3b7a-4f0e-9d0f-6a1c2e4b7d21")  # fixed, random
_FHIR_SYSTEMS = {v: k for k, v in V2_SYSTEMS.items()} | {
    "LN": "http://loinc.org",
    "SNM": "http://snomed.info/sct",
    "SCT": "http://snomed.info/sct",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "ICD10": "http://hl7.org/fhir/sid/icd-10",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "UCUM": "http://unitsofmeasure.org",
    "ANSI+": "http://unitsofmeasure.org",
}
_AUTHORITY = f"{CANONICAL_BASE}/sid/hl7v2-assigning-authority/"
_OBX_STATUS = {
    "F": "final",
    "C": "corrected",
    "P": "preliminary",
    "R": "preliminary",
    "S": "preliminary",
    "I": "registered",
    "X": "cancelled",
    "D": "entered-in-error",
    "W": "entered-in-error",
    "U": "final",
    "N": "unknown",
    "O": "registered",
}
_OBR_STATUS = {
    "F": "final",
    "C": "corrected",
    "P": "preliminary",
    "A": "partial",
    "R": "preliminary",
    "S": "partial",
    "I": "registered",
    "O": "registered",
    "X": "cancelled",
    "Y": "unknown",
    "Z": "unknown",
}
_SEX = {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown", "N": "unknown"}
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2}(?:\.\d{1,4})?)?([+-]\d{4})?$")
_MEDIA_TYPES = ("application", "audio", "image", "text", "video", "multipart", "model")


def to_bundle(msg: V2Message) -> dict[str, Any]:
    """The FHIR R4 collection Bundle (a JSON-ready dict) of one read message."""
    _check_header(msg)
    writer = _Writer(msg)
    return writer.bundle()


def _check_header(msg: V2Message) -> None:
    if not msg.control_id:
        raise MessageError(
            "MSH-10 (message control id) is empty", segment="MSH", field=10, code=101
        )
    if not msg.version.startswith("2."):
        raise MessageError(
            f"MSH-12: version {msg.version!r} is not HL7 v2", segment="MSH", field=12, code=203
        )
    if msg.processing_id != "P":
        raise MessageError(
            f"MSH-11: processing id {msg.processing_id!r}; only production (P) messages are "
            "recorded: the ledger keeps every entry for good",
            segment="MSH",
            field=11,
            code=202,
        )
    triggers = SUPPORTED.get(msg.message_code)
    if triggers is None:
        raise MessageError(
            f"MSH-9: message type {msg.message_code!r}; taken here: {', '.join(sorted(SUPPORTED))}",
            segment="MSH",
            field=9,
            component=1,
            code=200,
        )
    if msg.trigger not in triggers:
        raise MessageError(
            f"MSH-9: event {msg.message_code}^{msg.trigger}; taken here: "
            f"{', '.join(f'{msg.message_code}^{t}' for t in triggers)}",
            segment="MSH",
            field=9,
            component=2,
            code=201,
        )
    if msg.patient is None:
        raise MessageError("no PID segment: the message names no patient", segment="PID", code=100)
    if not any(value for value, _, _ in msg.patient.identifiers):
        raise MessageError(
            "PID-3 (patient identifier list) is empty", segment="PID", field=3, code=101
        )


class _Writer:
    def __init__(self, msg: V2Message) -> None:
        self.msg = msg
        self.seed = f"{msg.sending_application}|{msg.sending_facility}|{msg.control_id}"
        self.offset = _offset(msg.timestamp)
        self.entries: list[dict[str, Any]] = []

    def url(self, key: str) -> str:
        return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{self.seed}|{key}')}"

    def add(self, key: str, resource: dict[str, Any]) -> str:
        full_url = self.url(key)
        self.entries.append({"fullUrl": full_url, "resource": resource})
        return full_url

    def bundle(self) -> dict[str, Any]:
        msg = self.msg
        patient = self.add("patient", self.patient())
        subject = {"reference": patient}
        observation_urls: dict[int, str] = {}
        for i, obs in enumerate(msg.observations):
            if obs.value_type != "ED":
                observation_urls[i] = self.add(
                    f"obx-{obs.position}", self.observation(obs, subject)
                )
        for order in msg.orders:
            where = ("OBR", order.position)
            report: dict[str, Any] = {"resourceType": "DiagnosticReport"}
            if order.filler:
                report["identifier"] = [{"value": order.filler}]
            report["status"] = self.table(order.status or "F", _OBR_STATUS, where, 25)
            report["code"] = self.concept(order.code, where, 4)
            report["subject"] = subject
            if order.effective:
                report["effectiveDateTime"] = self.datetime(order.effective, where, 7)
            results = [
                {"reference": observation_urls[i]}
                for i in order.observations
                if i in observation_urls
            ]
            if results:
                report["result"] = results
            if order.notes:
                report["conclusion"] = "\n".join(order.notes)
            self.add(f"obr-{order.position}", report)
        self.documents(subject)
        for n, code in enumerate(msg.diagnoses, 1):
            self.add(
                f"dg1-{n}",
                {
                    "resourceType": "Condition",
                    "code": self.concept(code, ("DG1", n), 3),
                    "subject": subject,
                },
            )
        for n, code in enumerate(msg.allergies, 1):
            self.add(
                f"al1-{n}",
                {
                    "resourceType": "AllergyIntolerance",
                    "code": self.concept(code, ("AL1", n), 3),
                    "patient": subject,
                },
            )
        for n, code in enumerate(msg.procedures, 1):
            self.add(
                f"pr1-{n}",
                {
                    "resourceType": "Procedure",
                    "status": "completed",
                    "code": self.concept(code, ("PR1", n), 3),
                    "subject": subject,
                },
            )
        out: dict[str, Any] = {
            "resourceType": "Bundle",
            "identifier": {"system": "urn:ietf:rfc:3986", "value": self.url("bundle")},
            "type": "collection",
        }
        stamp = self.instant(msg.timestamp)
        if stamp:
            out["timestamp"] = stamp
        out["entry"] = self.entries
        return out

    # -- resources --------------------------------------------------------------------------

    def patient(self) -> dict[str, Any]:
        p = self.msg.patient
        assert p is not None  # _check_header
        identifiers = []
        for value, authority, type_code in p.identifiers:
            if not value:
                continue
            ident: dict[str, Any] = {}
            if type_code:
                ident["type"] = {"coding": [{"system": _V2_0203, "code": type_code}]}
            system = _identifier_system(authority)
            if system:
                ident["system"] = system
            ident["value"] = value
            identifiers.append(ident)
        out: dict[str, Any] = {"resourceType": "Patient", "identifier": identifiers}
        names = []
        for name in p.names:
            entry: dict[str, Any] = {}
            if name.family:
                entry["family"] = name.family
            given = [g for g in name.given if g]
            if given:
                entry["given"] = given
            if entry:
                names.append(entry)
        if names:
            out["name"] = names
        if p.sex:
            out["gender"] = self.table(p.sex, _SEX, ("PID", 1), 8)
        if p.birth_date:
            out["birthDate"] = self.date_only(p.birth_date, ("PID", 1), 7)
        return out

    def observation(self, obs: Observation, subject: dict[str, str]) -> dict[str, Any]:
        where = ("OBX", obs.position)
        if not obs.status:
            raise self.error("OBX-11 (observation result status) is empty", where, 11, code=101)
        out: dict[str, Any] = {
            "resourceType": "Observation",
            "status": self.table(obs.status, _OBX_STATUS, where, 11),
            "code": self.concept(obs.code, where, 3),
            "subject": subject,
        }
        if obs.effective:
            out["effectiveDateTime"] = self.datetime(obs.effective, where, 14)
        out.update(self.value(obs, where))
        if obs.flags:
            out["interpretation"] = [
                {"coding": [{"system": _INTERPRETATION, "code": tx.unescape(flag)}]}
                for flag in obs.flags
                if flag
            ]
        if obs.reference_range:
            out["referenceRange"] = [{"text": obs.reference_range}]
        if obs.notes:
            out["note"] = [{"text": note} for note in obs.notes]
        return out

    def value(self, obs: Observation, where: tuple[str, int]) -> dict[str, Any]:
        values = [v for v in obs.values if v]
        if not values:
            return {}
        kind = obs.value_type
        raw = values[0]
        if kind == "NM":
            return {"valueQuantity": self.quantity(raw, obs, where)}
        if kind == "SN":
            return self.structured_numeric(raw, obs, where)
        if kind in ("CE", "CWE", "CNE"):
            return {"valueCodeableConcept": self.concept(self.coded(raw), where, 5)}
        if kind in ("DT", "TS", "DTM"):
            return {"valueDateTime": self.datetime(raw, where, 5)}
        if kind in ("ID", "IS"):
            return {"valueCodeableConcept": {"coding": [{"code": tx.unescape(raw)}]}}
        # ST, TX, FT and every other type: the value as text, repetitions on their own lines.
        comp = self.msg.delimiters[1]
        return {"valueString": "\n".join(tx.unescape(v.replace(comp, "^")) for v in values)}

    def quantity(
        self, raw: str, obs: Observation, where: tuple[str, int], comparator: str = ""
    ) -> dict[str, Any]:
        q: dict[str, Any] = {"value": self.number(raw, where, 5)}
        if comparator:
            q["comparator"] = comparator
        q.update(self.units(obs.units))
        return q

    def structured_numeric(
        self, raw: str, obs: Observation, where: tuple[str, int]
    ) -> dict[str, Any]:
        comp = self.msg.delimiters[1]
        parts = [tx.unescape(p) for p in raw.split(comp)] + ["", "", "", ""]
        comparator, first, separator, second = parts[:4]
        if comparator in ("<", "<=", ">=", ">") and first and not second:
            return {"valueQuantity": self.quantity(first, obs, where, comparator)}
        if not comparator and first and not separator and not second:
            return {"valueQuantity": self.quantity(first, obs, where)}
        if not comparator and separator == "-" and first and second:
            units = self.units(obs.units)
            return {
                "valueRange": {
                    "low": {"value": self.number(first, where, 5), **units},
                    "high": {"value": self.number(second, where, 5), **units},
                }
            }
        if not comparator and separator in (":", "/") and first and second:
            return {
                "valueRatio": {
                    "numerator": {"value": self.number(first, where, 5)},
                    "denominator": {"value": self.number(second, where, 5)},
                }
            }
        raise self.error(f"OBX-5: {raw!r} is not a structured numeric (SN) value", where, 5)

    def units(self, units: Coded) -> dict[str, Any]:
        if not units.code and not units.text:
            return {}
        out: dict[str, Any] = {"unit": units.text or units.code}
        if units.code and _FHIR_SYSTEMS.get(units.system) == "http://unitsofmeasure.org":
            out["system"] = "http://unitsofmeasure.org"
            out["code"] = units.code
        return out

    def documents(self, subject: dict[str, str]) -> None:
        header = self.msg.document_header
        ed = [o for o in self.msg.observations if o.value_type == "ED"]
        for obs, doc in zip(ed, self.msg.documents, strict=False):
            where = ("OBX", obs.position)
            if doc.encoding.lower() != "base64":
                raise self.error(
                    f"OBX-5.4: encoding {doc.encoding!r}; documents are taken in Base64",
                    where,
                    5,
                    component=4,
                    code=102,
                )
            if not doc.content:
                raise self.error(
                    "OBX-5.5: the document holds no data", where, 5, component=5, code=101
                )
            out: dict[str, Any] = {"resourceType": "DocumentReference"}
            if header is not None and header.number:
                out["masterIdentifier"] = {"value": header.number}
            out["status"] = "current"
            out["type"] = self.concept(obs.code, where, 3)
            out["subject"] = subject
            if header is not None and header.activity:
                stamp = self.instant(header.activity)
                if stamp:
                    out["date"] = stamp
            out["content"] = [
                {
                    "attachment": {
                        "contentType": _media_type(doc.type_of_data, doc.subtype),
                        "data": base64.b64encode(doc.content).decode("ascii"),
                    }
                }
            ]
            self.add(f"obx-{obs.position}", out)

    # -- values -----------------------------------------------------------------------------

    def coded(self, raw: str) -> Coded:
        comp, sub = self.msg.delimiters[1], self.msg.delimiters[4:5] or "&"
        parts = [tx.unescape(p.split(sub)[0]) for p in raw.split(comp)] + [""] * 6
        return Coded(*parts[:6])

    def concept(self, coded: Coded, where: tuple[str, int], field: int) -> dict[str, Any]:
        codings = []
        for code, display, system in (
            (coded.code, coded.text, coded.system),
            (coded.alt_code, coded.alt_text, coded.alt_system),
        ):
            if not code:
                continue
            coding: dict[str, Any] = {}
            fhir_system = _FHIR_SYSTEMS.get(system)
            if fhir_system:
                coding["system"] = fhir_system
            coding["code"] = code
            if display:
                coding["display"] = display
            codings.append(coding)
        out: dict[str, Any] = {}
        if codings:
            out["coding"] = codings
        text = coded.text or coded.alt_text
        if text:
            out["text"] = text
        if not out:
            raise self.error(f"{where[0]}-{field}: no code and no text", where, field, code=101)
        return out

    def number(self, raw: str, where: tuple[str, int], field: int) -> Decimal:
        text = raw.strip()
        if not _NUMBER.match(text):
            raise self.error(f"{where[0]}-{field}: {raw!r} is not a number (NM)", where, field)
        try:
            return Decimal(text)
        except InvalidOperation:
            raise self.error(f"{where[0]}-{field}: {raw!r} is not a number", where, field) from None

    def table(self, value: str, table: dict[str, str], where: tuple[str, int], field: int) -> str:
        if value not in table:
            raise self.error(
                f"{where[0]}-{field}: {value!r} is not one of {', '.join(sorted(table))}",
                where,
                field,
                code=103,
            )
        return table[value]

    def date_only(self, raw: str, where: tuple[str, int], field: int) -> str:
        m = _DTM.match(raw)
        if not m:
            raise self.error(f"{where[0]}-{field}: {raw!r} is not an HL7 date", where, field)
        year, month, day = m.group(1), m.group(2), m.group(3)
        self.calendar(raw, year, month, day, where, field)
        return "-".join(p for p in (year, month, day) if p)

    def calendar(
        self,
        raw: str,
        year: str,
        month: str | None,
        day: str | None,
        where: tuple[str, int],
        field: int,
    ) -> None:
        try:
            date(int(year), int(month or 1), int(day or 1))
        except ValueError:
            raise self.error(
                f"{where[0]}-{field}: {raw!r} is not a calendar date", where, field
            ) from None

    def datetime(self, raw: str, where: tuple[str, int], field: int) -> str:
        m = _DTM.match(raw)
        if not m:
            raise self.error(
                f"{where[0]}-{field}: {raw!r} is not an HL7 date/time (DTM)", where, field
            )
        year, month, day, hour, minute, second, zone = m.groups()
        self.calendar(raw, year, month, day, where, field)
        if (
            (hour and int(hour) > 23)
            or (minute and int(minute) > 59)
            or (second and float(second) >= 60)
        ):
            raise self.error(f"{where[0]}-{field}: {raw!r} is not a time of day", where, field)
        day_part = "-".join(p for p in (year, month, day) if p)
        zone = zone or self.offset
        if hour is None or day is None or not zone:
            return day_part
        return f"{day_part}T{hour}:{minute or '00'}:{second or '00'}{zone[:3]}:{zone[3:]}"

    def instant(self, raw: str) -> str:
        """A FHIR instant (seconds and offset required) of a DTM, or "" when it has no such form."""
        m = _DTM.match(raw)
        if not m or m.group(6) is None or not (m.group(7) or self.offset):
            return ""
        return self.datetime(raw, ("MSH", 1), 7)

    def error(
        self,
        text: str,
        where: tuple[str, int],
        field: int | None = None,
        *,
        component: int | None = None,
        code: int = 102,
    ) -> MessageError:
        return MessageError(
            text, segment=where[0], sequence=where[1], field=field, component=component, code=code
        )


def _offset(timestamp: str) -> str:
    m = _DTM.match(timestamp)
    return (m.group(7) or "") if m else ""


def _identifier_system(authority: str) -> str:
    if not authority:
        return ""
    if re.fullmatch(r"[0-2](\.\d+)+", authority):
        return f"urn:oid:{authority}"
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:\S+$", authority):
        return authority
    return _AUTHORITY + quote(authority, safe="")


def _media_type(type_of_data: str, subtype: str) -> str:
    kind, sub = type_of_data.strip().lower(), subtype.strip().lower()
    if kind in _MEDIA_TYPES and sub:
        return f"{kind}/{sub}"
    if kind == "ap" and sub:
        return f"application/{sub}"
    if kind in ("tx", "text") and not sub:
        return "text/plain"
    return "application/octet-stream"
