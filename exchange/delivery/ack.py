"""HL7 v2 acknowledgements: reading a peer's ACK, and writing ours with hl7apy.

Reading (:func:`parse_ack`). The ACK is found by its MSA segment (HL7 v2.5.1 Chapter 2,
§2.15.8): MSA-1 is the acknowledgement code of table 0008, MSA-2 must repeat the MSH-10 of the
message it answers, and ERR segments (§2.15.5) say what was wrong. Original-mode codes
(AA accept, AE error, AR reject) and enhanced-mode commit codes (CA, CE, CR) map onto the
transport verdicts the same way: accept means delivered, error means try again, reject means
the peer will never take this message. An ACK whose MSA-2 names another message, or with no
MSA, or with a code outside table 0008, is :class:`MalformedAck`: it proves nothing about our
message, so the delivery stays pending.

Writing (:func:`build_ack`). Our ACKs are built and validated with hl7apy at STRICT level:
MSH, MSA, and one ERR per problem with ERR-2 (error location: segment, sequence, field,
repetition, component), ERR-3 (HL7 error code, table 0357), ERR-4 (severity, table 0516) and
ERR-7 (diagnostic text). MSA-3 repeats the text for senders that read only original-mode
fields. When a sender's own values (its control id, its application names) break the v2.5.1
lengths, the ACK is written at hl7apy's TOLERANT level with the same values instead: an ACK
whose MSA-2 differs from the sender's MSH-10 would be no answer at all.

:func:`read_header` reads what it can of a message's MSH, however broken the rest is, so that
even unreadable bytes are answered with an ACK addressed to their sender.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.exceptions import HL7apyException

from adapters.hl7v2 import text as tx
from exchange.delivery.result import Outcome

__all__ = [
    "ACK_CODES",
    "ERROR_CODES",
    "Ack",
    "ErrDetail",
    "ErrorLocation",
    "Header",
    "MalformedAck",
    "Problem",
    "build_ack",
    "parse_ack",
    "read_header",
]

# HL7 table 0008, acknowledgement code -> verdict.
ACK_CODES = {
    "AA": Outcome.DELIVERED,
    "CA": Outcome.DELIVERED,
    "AE": Outcome.RETRY,
    "CE": Outcome.RETRY,
    "AR": Outcome.PERMANENT,
    "CR": Outcome.PERMANENT,
}

# HL7 table 0357 (v2.5.1), message error condition codes.
ERROR_CODES = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}

_SEGMENTS = re.compile(r"\r\n|\r|\n")


class MalformedAck(Exception):
    """The peer's answer is not an acknowledgement of our message; ``raw`` is what came."""

    def __init__(self, reason: str, raw: bytes) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


@dataclass(frozen=True)
class ErrDetail:
    """One ERR segment of a peer's ACK, as sent (values unescaped)."""

    location: str  # ERR-2, components joined by ^
    code: str  # ERR-3.1, table 0357 (or the sender's own table)
    code_text: str  # ERR-3.2
    severity: str  # ERR-4: E, W or I
    diagnostic: str  # ERR-7, else ERR-8


@dataclass(frozen=True)
class Ack:
    """A peer's acknowledgement of one message: MSA-1, MSA-2, MSA-3, ERRs, the exact bytes."""

    code: str
    control_id: str
    text: str
    errors: tuple[ErrDetail, ...]
    raw: bytes = field(repr=False)

    @property
    def outcome(self) -> Outcome:
        return ACK_CODES[self.code]


@dataclass(frozen=True)
class ErrorLocation:
    """ERR-2 (ERL): the segment (and its occurrence, from 1), field, repetition, component."""

    segment: str
    sequence: int = 1
    field: int | None = None
    repetition: int | None = None
    component: int | None = None

    def er7(self) -> str:
        parts = [self.segment, str(self.sequence)]
        for n in (self.field, self.repetition, self.component):
            parts.append("" if n is None else str(n))
        return tx.components(*parts)

    def __str__(self) -> str:
        out = self.segment if self.sequence == 1 else f"{self.segment}[{self.sequence}]"
        if self.field is not None:
            out += f"-{self.field}"
            if self.component is not None:
                out += f".{self.component}"
        return out


@dataclass(frozen=True)
class Problem:
    """What one ERR segment of our ACK says: where, which table 0357 code, and why."""

    code: int
    text: str
    location: ErrorLocation | None = None
    severity: str = "E"  # table 0516: E error, W warning, I information


@dataclass(frozen=True)
class Header:
    """The MSH fields an ACK echoes, as far as they could be read (components unescaped)."""

    sending_application: tuple[str, ...] = ()
    sending_facility: tuple[str, ...] = ()
    receiving_application: tuple[str, ...] = ()
    receiving_facility: tuple[str, ...] = ()
    message_code: str = ""
    trigger: str = ""
    control_id: str = ""
    processing_id: str = ""
    version: str = ""
    charset: str = ""


def read_header(raw: bytes) -> Header:
    """The MSH fields of ``raw`` that can be read; empty ones for what cannot.

    Never raises: this is what an answer to unreadable bytes is addressed with.
    """
    text = raw.decode("utf-8", errors="replace").lstrip("\ufeff")
    if not text.startswith("MSH") or len(text) < 8:
        return Header()
    first = _SEGMENTS.split(text, maxsplit=1)[0]
    if len(first) < 5:
        return Header()
    field_sep, comp_sep = first[3], first[4]
    if field_sep.isalnum() or comp_sep.isalnum() or field_sep == comp_sep:
        return Header()
    fields = ["MSH", field_sep, *first.split(field_sep)[1:]]

    def get(n: int) -> tuple[str, ...]:
        raw_field = fields[n] if n < len(fields) else ""
        raw_field = raw_field.split(first[5])[0] if len(first) > 5 else raw_field
        comps = [
            _printable(tx.unescape(c.split(first[7] if len(first) > 7 else "&")[0]))
            for c in raw_field.split(comp_sep)
        ]
        while comps and not comps[-1]:
            comps.pop()
        return tuple(comps)

    def one(n: int, comp: int = 0) -> str:
        values = get(n)
        return values[comp] if comp < len(values) else ""

    return Header(
        sending_application=get(3),
        sending_facility=get(4),
        receiving_application=get(5),
        receiving_facility=get(6),
        message_code=one(9, 0),
        trigger=one(9, 1),
        control_id=one(10),
        processing_id=one(11),
        version=one(12),
        charset=one(18),
    )


def parse_ack(raw: bytes, *, control_id: str) -> Ack:
    """Read a peer's ACK to the message whose MSH-10 was ``control_id``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = text.lstrip("\ufeff")
    if not text.startswith("MSH") or len(text) < 8:
        raise MalformedAck("the answer is not an HL7 v2 message: it does not start with MSH", raw)
    delimiters = text[3:8]
    field_sep, comp_sep, sub_sep = delimiters[0], delimiters[1], delimiters[4]
    segments = [s for s in _SEGMENTS.split(text) if s]
    msa = next((s.split(field_sep) for s in segments if s[:4] == f"MSA{field_sep}"), None)
    if msa is None:
        raise MalformedAck("the answer has no MSA segment", raw)

    def value(fields: list[str], n: int, comp: int = 1) -> str:
        if n >= len(fields):
            return ""
        comps = fields[n].split(delimiters[2])[0].split(comp_sep)
        return tx.unescape(comps[comp - 1].split(sub_sep)[0]) if comp <= len(comps) else ""

    code = value(msa, 1)
    if code not in ACK_CODES:
        raise MalformedAck(f"MSA-1 {code!r} is not an acknowledgement code (HL7 table 0008)", raw)
    answered = value(msa, 2)
    if answered != control_id:
        raise MalformedAck(
            f"MSA-2 {answered!r} acknowledges another message than ours ({control_id!r})", raw
        )
    errors = []
    for segment in segments:
        if segment[:4] != f"ERR{field_sep}":
            continue
        err = segment.split(field_sep)
        location = err[2].split(delimiters[2])[0] if len(err) > 2 else ""
        errors.append(
            ErrDetail(
                location=tx.unescape(location.replace(comp_sep, "^")),
                code=value(err, 3, 1),
                code_text=value(err, 3, 2),
                severity=value(err, 4),
                diagnostic=value(err, 7) or value(err, 8),
            )
        )
    return Ack(code, answered, value(msa, 3), tuple(errors), raw)


def build_ack(
    header: Header,
    code: str,
    *,
    control_id: str,
    now: datetime | None = None,
    text: str = "",
    problems: tuple[Problem, ...] = (),
    application: str = "MEDLEDGER",
    facility: str = "MEDLEDGER",
) -> bytes:
    """Our ACK to the message whose MSH is ``header``: UTF-8, segments ended by CR.

    ``control_id`` is the ACK's own MSH-10; ``text`` goes to MSA-3; each of ``problems``
    becomes an ERR segment. ``application``/``facility`` name us in MSH-3/MSH-4 when the
    message did not name its receiver in MSH-5/MSH-6.
    """
    if code not in ACK_CODES:
        raise ValueError(f"ack code {code!r}: not one of {', '.join(ACK_CODES)}")
    when = now if now is not None else datetime.now(UTC)
    values = _ack_fields(header, code, control_id, when, text, problems, application, facility)
    try:
        message = _message(values, VALIDATION_LEVEL.STRICT)
        message.validate()
    except HL7apyException:
        # The sender's own values break a v2.5.1 limit; the ACK must still repeat them.
        message = _message(values, VALIDATION_LEVEL.TOLERANT)
    er7: str = message.to_er7()
    return (er7 + "\r").encode("utf-8")


_Fields = list[tuple[str, list[tuple[str, str]]]]


def _ack_fields(
    header: Header,
    code: str,
    control_id: str,
    now: datetime,
    text: str,
    problems: tuple[Problem, ...],
    application: str,
    facility: str,
) -> _Fields:
    msh = [
        ("MSH_3", _hd(header.receiving_application) or _esc(application)),
        ("MSH_4", _hd(header.receiving_facility) or _esc(facility)),
        ("MSH_5", _hd(header.sending_application)),
        ("MSH_6", _hd(header.sending_facility)),
        ("MSH_7", tx.dtm_now(now)),
        ("MSH_9", tx.components("ACK", _esc(header.trigger), "ACK")),
        ("MSH_10", _esc(control_id)),
        ("MSH_11", header.processing_id if header.processing_id in ("P", "T", "D") else "P"),
        ("MSH_12", tx.VERSION),
        ("MSH_18", tx.CHARSET),
    ]
    msa = [("MSA_1", code), ("MSA_2", _esc(header.control_id)), ("MSA_3", _esc(text[:80]))]
    out: _Fields = [("MSH", msh), ("MSA", msa)]
    for p in problems:
        if p.code not in ERROR_CODES:
            raise ValueError(f"error code {p.code}: not in HL7 table 0357")
        if p.severity not in ("E", "W", "I"):
            raise ValueError(f"severity {p.severity!r}: not in HL7 table 0516 (E, W, I)")
        out.append(
            (
                "ERR",
                [
                    ("ERR_2", p.location.er7() if p.location else ""),
                    ("ERR_3", tx.components(str(p.code), ERROR_CODES[p.code], "HL70357")),
                    ("ERR_4", p.severity),
                    ("ERR_7", _esc(p.text[:2048])),
                ],
            )
        )
    return out


def _message(values: _Fields, level: int) -> Any:
    message = Message("ACK", version=tx.VERSION, validation_level=level)
    for name, assignments in values:
        segment = (
            message.msh
            if name == "MSH"
            else (message.msa if name == "MSA" else message.add_segment(name))
        )
        for field_name, value in assignments:
            if value:
                setattr(segment, field_name.lower(), value)
    return message


def _printable(value: str) -> str:
    """Line breaks and control characters become spaces, lone surrogates "?": neither can
    travel raw in a field, and neither is part of a name, an id or an error text."""
    out = []
    for ch in value:
        kind = unicodedata.category(ch)
        out.append(" " if kind in ("Cc", "Zl", "Zp") else "?" if kind == "Cs" else ch)
    return "".join(out)


def _esc(value: str) -> str:
    # Outer whitespace would need a hex escape, which hl7apy would write as literal text.
    return tx.escape(_printable(value).strip(), "ACK")


def _hd(components: tuple[str, ...]) -> str:
    return tx.components(*(_esc(c) for c in components))
