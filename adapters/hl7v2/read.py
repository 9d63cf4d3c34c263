"""Reading HL7 v2 messages back: ours at STRICT validation, other senders' tolerantly.

One reader serves both: it parses with hl7apy (STRICT and ``validate()`` for what we emit, or
TOLERANT for the 2.3-2.8 messages hospitals already exchange), then reads each segment's ER7 as
hl7apy re-serialises it, splitting on the message's own delimiters (HL7 v2.5.1 Chapter 2, §2.5)
and unescaping values (§2.7). What comes out is a small summary of the clinical content - the
patient, results, diagnoses, allergies, procedures, documents, dispenses - so a test can compare
a message with the FHIR it came from, and a message from elsewhere with what we produce, and
``adapters.hl7v2.fhir`` can write it as a FHIR Bundle.

A message that cannot be read raises :class:`MessageError`, which says where (segment, its
occurrence, field) and which HL7 table 0357 condition it is, so a receiver can answer it with
an ERR segment.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace
from typing import Any

from hl7apy import SUPPORTED_LIBRARIES
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException, InvalidName
from hl7apy.parser import parse_message, parse_segment

from adapters.base import AdaptError
from adapters.hl7v2 import text as tx

__all__ = [
    "Coded",
    "Dispense",
    "Document",
    "DocumentHeader",
    "MessageError",
    "Name",
    "Observation",
    "Order",
    "V2Message",
    "read_message",
]


class MessageError(AdaptError):
    """A message that cannot be read or used, and where: ``segment`` (its ``sequence``-th
    occurrence, from 1), ``field`` and ``component`` when known, and ``code``, the condition
    of HL7 table 0357 (100 segment sequence, 101 required field missing, 102 data type,
    103 table value, 200 unsupported message type, 201 event, 202 processing id, 203 version).
    """

    def __init__(
        self,
        text: str,
        *,
        segment: str,
        sequence: int = 1,
        field: int | None = None,
        component: int | None = None,
        code: int = 102,
    ) -> None:
        super().__init__(text)
        self.text = text
        self.segment = segment
        self.sequence = sequence
        self.field = field
        self.component = component
        self.code = code


@dataclass(frozen=True)
class Coded:
    """A CE/CWE: primary and alternate triplets."""

    code: str = ""
    text: str = ""
    system: str = ""
    alt_code: str = ""
    alt_text: str = ""
    alt_system: str = ""


@dataclass(frozen=True)
class Name:
    family: str
    given: tuple[str, ...]
    type: str = ""


@dataclass(frozen=True)
class Patient:
    identifiers: tuple[tuple[str, str, str], ...]  # (value, assigning authority, type code)
    names: tuple[Name, ...]
    birth_date: str = ""
    sex: str = ""


@dataclass(frozen=True)
class Observation:
    set_id: str
    value_type: str
    code: Coded
    values: tuple[str, ...]
    units: Coded
    reference_range: str
    flags: tuple[str, ...]
    status: str
    notes: tuple[str, ...] = ()
    effective: str = ""  # OBX-14, DTM as sent
    position: int = 0  # which OBX of the message, from 1


@dataclass(frozen=True)
class Order:
    """An OBR and the observations that follow it (indexes into V2Message.observations)."""

    code: Coded
    filler: str  # OBR-3.1
    effective: str  # OBR-7, DTM as sent
    status: str  # OBR-25
    notes: tuple[str, ...]
    observations: tuple[int, ...]
    position: int  # which OBR of the message, from 1


@dataclass(frozen=True)
class DocumentHeader:
    """TXA: the document's type (table 0270), activity date, unique number and status."""

    type: str
    activity: str  # TXA-4, DTM as sent
    number: str  # TXA-12.1
    completion: str  # TXA-17


@dataclass(frozen=True)
class Document:
    type_of_data: str
    subtype: str
    encoding: str
    content: bytes


@dataclass(frozen=True)
class Dispense:
    code: Coded
    amount: str
    units: Coded
    prescription: str
    lots: tuple[str, ...]
    expirations: tuple[str, ...]
    manufacturers: tuple[Coded, ...]
    route: Coded
    observations: tuple[Observation, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class V2Message:
    version: str
    message_code: str
    trigger: str
    structure: str
    control_id: str
    sending_application: str
    sending_facility: str
    charset: str
    segments: tuple[str, ...]
    patient: Patient | None
    observations: tuple[Observation, ...] = ()
    order_codes: tuple[Coded, ...] = ()
    order_notes: tuple[str, ...] = ()
    diagnoses: tuple[Coded, ...] = ()
    allergies: tuple[Coded, ...] = ()
    procedures: tuple[Coded, ...] = ()
    documents: tuple[Document, ...] = ()
    dispenses: tuple[Dispense, ...] = field(default_factory=tuple)
    timestamp: str = ""  # MSH-7, DTM as sent
    processing_id: str = ""  # MSH-11.1
    delimiters: str = "|^~\\&"  # MSH-1 and MSH-2
    orders: tuple[Order, ...] = ()
    document_header: DocumentHeader | None = None


def read_message(text: str, *, strict: bool = False) -> V2Message:
    """Parse ``text`` (segments separated by CR) and summarise it.

    ``strict`` parses at hl7apy STRICT validation and runs ``validate()`` (required fields,
    cardinalities, lengths, data types); anything that fails raises :class:`AdaptError`. A
    leading byte order mark is ignored; line feeds are not segment separators here.
    """
    text = text.lstrip("\ufeff")
    if not text.startswith("MSH"):
        raise MessageError(
            "not an HL7 v2 message: it does not start with MSH", segment="MSH", code=100
        )
    first = text.split("\r", 1)[0]
    delimiters = first[3:8]
    if (
        len(delimiters) < 4
        or len(set(delimiters)) != len(delimiters)
        or any(ch.isalnum() or ch in "\r\n" for ch in delimiters)
    ):
        raise MessageError(
            f"MSH-1/MSH-2: {delimiters!r} are not HL7 delimiters", segment="MSH", field=2, code=102
        )
    field_sep, comp_sep = delimiters[0], delimiters[1]
    msh = first.split(field_sep)
    msh_9 = msh[8].split(comp_sep) if len(msh) > 8 else []
    structure = msh_9[2] if len(msh_9) > 2 else ""
    version = msh[11].split(comp_sep)[0] if len(msh) > 11 else ""
    if strict:
        segments = _parse_strict(text, structure, version)
    else:
        segments = _parse_tolerant(text, version, delimiters)
    return _summarise(segments, delimiters)


def _parse_strict(text: str, structure: str, version: str) -> list[str]:
    profile = tx.profile(structure) if version == tx.VERSION else None
    try:
        message = parse_message(
            text,
            validation_level=VALIDATION_LEVEL.STRICT,
            find_groups=True,
            message_profile=profile,
        )
        message.validate()
    except HL7apyException as e:
        raise AdaptError(f"HL7 v2 message does not validate at STRICT level: {e}") from None
    except (ValueError, KeyError, IndexError) as e:
        raise AdaptError(f"HL7 v2 message does not parse: {e}") from None
    # Values are read from the text as sent: hl7apy re-escapes on output any escape sequence
    # it does not know (\\Xhh\\ among them), so its re-serialisation is not the message.
    texts = [s for s in text.split("\r") if s.strip()]
    parsed = [s.name for s in tx.segments(message)]
    if [t[:3] for t in texts] != parsed:
        raise AdaptError(f"HL7 v2 segments {parsed} do not follow the text's order")
    return texts


def _parse_tolerant(text: str, version: str, delimiters: str) -> list[str]:
    """Segment by segment, so one segment hl7apy does not know (PRT in a 2.5.1 message,
    a site-specific Z segment) is kept as sent instead of failing the whole message."""
    if version not in SUPPORTED_LIBRARIES:
        version = tx.VERSION
    chars = {
        "FIELD": delimiters[0],
        "COMPONENT": delimiters[1],
        "REPETITION": delimiters[2],
        "ESCAPE": delimiters[3],
        "SUBCOMPONENT": delimiters[4],
        "SEGMENT": "\r",
    }
    out = []
    seen: dict[str, int] = {}
    for raw in text.split("\r"):
        if not raw.strip():
            continue
        seen[raw[:3]] = seen.get(raw[:3], 0) + 1
        # hl7apy reads the segment when it knows it; one it does not know (PRT in 2.5.1, a
        # site's Z segment) is kept as sent. Either way values are read from the text.
        try:
            parse_segment(
                raw,
                version=version,
                encoding_chars=chars,
                validation_level=VALIDATION_LEVEL.TOLERANT,
            )
        except InvalidName:
            pass
        except (HL7apyException, ValueError, KeyError, IndexError) as e:
            raise MessageError(
                f"HL7 v2 segment {raw[:3]!r} does not parse: {e}",
                segment=raw[:3],
                sequence=seen[raw[:3]],
            ) from None
        out.append(raw)
    return out


class _Er7:
    """Field access on one segment's ER7 with the message's delimiters."""

    def __init__(self, text: str, delimiters: str) -> None:
        self.f, self.c, self.r, self.e, self.s = tuple((delimiters + "\\&")[:5])
        self.name = text[:3]
        parts = text.split(self.f)
        # MSH-1 is the field separator itself, so MSH fields sit one place to the left.
        self.fields = [self.f, *parts[1:]] if self.name == "MSH" else parts[1:]

    def raw(self, n: int) -> str:
        return self.fields[n - 1] if 0 < n <= len(self.fields) else ""

    def reps(self, n: int) -> list[str]:
        raw = self.raw(n)
        return [r for r in raw.split(self.r)] if raw else []

    def comps(self, n: int, rep: int = 0) -> list[str]:
        reps = self.reps(n)
        return reps[rep].split(self.c) if rep < len(reps) else []

    def value(self, n: int, comp: int = 1, rep: int = 0) -> str:
        comps = self.comps(n, rep)
        if comp > len(comps):
            return ""
        return tx.unescape(comps[comp - 1].split(self.s)[0])

    def coded(self, raw: str) -> Coded:
        parts = [tx.unescape(p.split(self.s)[0]) for p in raw.split(self.c)] + [""] * 6
        return Coded(*parts[:6])


def _summarise(segments: list[str], delimiters: str) -> V2Message:
    rows = [_Er7(s, delimiters) for s in segments]
    msh = rows[0]
    patient = None
    observations: list[Observation] = []
    order_codes: list[Coded] = []
    order_notes: list[str] = []
    diagnoses: list[Coded] = []
    allergies: list[Coded] = []
    procedures: list[Coded] = []
    documents: list[Document] = []
    dispenses: list[Dispense] = []
    orders: list[dict[str, Any]] = []
    document_header = None
    obx_seen = 0
    context = ""  # what an NTE or OBX attaches to: "order", "obx", "dispense", "dispense-obx"
    for row in rows:
        name = row.name
        if name == "PID" and patient is None:
            patient = _patient(row)
        elif name in ("ORC", "OBR"):
            context = "order"
            if name == "OBR":
                order_codes.append(row.coded(row.raw(4)))
                orders.append(
                    {
                        "code": row.coded(row.raw(4)),
                        "filler": row.value(3),
                        "effective": row.value(7),
                        "status": row.value(25),
                        "notes": [],
                        "observations": [],
                        "position": len(orders) + 1,
                    }
                )
        elif name == "TXA" and document_header is None:
            document_header = DocumentHeader(
                row.value(2), row.value(4), row.value(12), row.value(17)
            )
        elif name == "RXD":
            dispenses.append(
                Dispense(
                    code=row.coded(row.raw(2)),
                    amount=row.value(4),
                    units=row.coded(row.raw(5)),
                    prescription=row.value(7),
                    lots=tuple(tx.unescape(r) for r in row.reps(18)),
                    expirations=tuple(row.reps(19)),
                    manufacturers=tuple(row.coded(r) for r in row.reps(20)),
                    route=Coded(),
                )
            )
            context = "dispense"
        elif name == "RXR" and dispenses and dispenses[-1].route == Coded():
            dispenses[-1] = replace(dispenses[-1], route=row.coded(row.raw(1)))
        elif name == "OBX":
            obx_seen += 1
            obs = replace(_observation(row), position=obx_seen)
            if obs.value_type == "ED":
                documents.append(_document(row))
            if context.startswith("dispense"):
                held = dispenses[-1].observations
                dispenses[-1] = replace(dispenses[-1], observations=(*held, obs))
                context = "dispense-obx"
            else:
                if orders and context in ("order", "obx"):
                    orders[-1]["observations"].append(len(observations))
                observations.append(obs)
                context = "obx"
        elif name == "NTE":
            note = tx.unescape(row.raw(3))
            if context == "obx":
                observations[-1] = _with_note(observations[-1], note)
            elif context == "dispense-obx":
                held = dispenses[-1].observations
                dispenses[-1] = replace(
                    dispenses[-1], observations=(*held[:-1], _with_note(held[-1], note))
                )
            elif context == "dispense":
                dispenses[-1] = replace(dispenses[-1], notes=(*dispenses[-1].notes, note))
            else:
                order_notes.append(note)
                if orders and context == "order":
                    orders[-1]["notes"].append(note)
        elif name == "DG1":
            diagnoses.append(row.coded(row.raw(3)))
        elif name == "AL1":
            allergies.append(row.coded(row.raw(3)))
        elif name == "PR1":
            procedures.append(row.coded(row.raw(3)))
    return V2Message(
        version=msh.value(12),
        message_code=msh.value(9, 1),
        trigger=msh.value(9, 2),
        structure=msh.value(9, 3),
        control_id=msh.value(10),
        sending_application=msh.value(3),
        sending_facility=msh.value(4),
        charset=msh.value(18),
        segments=tuple(r.name for r in rows),
        patient=patient,
        observations=tuple(observations),
        order_codes=tuple(order_codes),
        order_notes=tuple(order_notes),
        diagnoses=tuple(diagnoses),
        allergies=tuple(allergies),
        procedures=tuple(procedures),
        documents=tuple(documents),
        dispenses=tuple(dispenses),
        timestamp=msh.value(7),
        processing_id=msh.value(11),
        delimiters=delimiters,
        orders=tuple(
            Order(
                o["code"],
                o["filler"],
                o["effective"],
                o["status"],
                tuple(o["notes"]),
                tuple(o["observations"]),
                o["position"],
            )
            for o in orders
        ),
        document_header=document_header,
    )


def _patient(row: _Er7) -> Patient:
    identifiers = []
    for i in range(len(row.reps(3))):
        comps = row.comps(3, i) + [""] * 5
        authority = comps[3].split(row.s)
        identifiers.append(
            (
                tx.unescape(comps[0].split(row.s)[0]),
                tx.unescape(authority[1] if len(authority) > 1 and authority[1] else authority[0]),
                tx.unescape(comps[4].split(row.s)[0]),
            )
        )
    names = []
    for i in range(len(row.reps(5))):
        comps = row.comps(5, i) + [""] * 7
        given = [tx.unescape(comps[1].split(row.s)[0])] if comps[1] else []
        if comps[2]:
            given.append(tx.unescape(comps[2].split(row.s)[0]))
        names.append(
            Name(
                tx.unescape(comps[0].split(row.s)[0]),
                tuple(given),
                tx.unescape(comps[6].split(row.s)[0]),
            )
        )
    return Patient(tuple(identifiers), tuple(names), row.value(7), row.value(8))


def _observation(row: _Er7) -> Observation:
    value_type = row.value(2)
    if value_type in ("CE", "CWE", "SN", "ED", "RP"):
        values = tuple(row.reps(5))  # composite: kept as ER7
    else:
        values = tuple(tx.unescape(r) for r in row.reps(5))
    return Observation(
        set_id=row.value(1),
        value_type=value_type,
        code=row.coded(row.raw(3)),
        values=values,
        units=row.coded(row.raw(6)),
        reference_range=tx.unescape(row.raw(7)),
        flags=tuple(row.reps(8)),
        status=row.value(11),
        effective=row.value(14),
    )


def _document(row: _Er7) -> Document:
    comps = row.comps(5) + [""] * 5
    encoding, data = comps[3], comps[4]
    content = b""
    if encoding.lower() == "base64" and data:
        try:
            content = base64.b64decode(data, validate=True)
        except ValueError:
            content = b""
    return Document(comps[1], comps[2], encoding, content)


def _with_note(obs: Observation, note: str) -> Observation:
    return replace(obs, notes=(*obs.notes, note))
