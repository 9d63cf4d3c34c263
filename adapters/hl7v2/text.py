"""HL7 v2.5.1 text: escaping values, writing dates, and the hl7apy structures we validate against.

Escaping follows HL7 v2.5.1 Chapter 2, §2.7 "Use of escape sequences in text fields": the five
delimiters become ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``, and characters that cannot travel raw are
sent as ``\\Xhh..\\`` (§2.7.4, hexadecimal data; with MSH-18 ``UNICODE UTF-8`` the hex digits
are the UTF-8 bytes of the character). Raw are never sent: C0/C1 control characters, Unicode
line and paragraph separators, and whitespace at either end of a value (parsers, hl7apy among
them, strip it). CR, LF, VT and FS are refused outright: they frame segments and MLLP blocks
(Chapter 2, §2.5.1 and Appendix C), and a value holding one is a value that was never meant to
be a single field.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from datetime import datetime
from typing import Any

from adapters.base import AdaptError

VERSION = "2.5.1"
CHARSET = "UNICODE UTF-8"  # MSH-18, HL7 table 0211

_DELIMITERS = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}
_REFUSED = {
    "\r": "carriage return (U+000D)",
    "\n": "line feed (U+000A)",
    "\x0b": "vertical tab (U+000B)",
    "\x1c": "file separator (U+001C)",
}
_UNESCAPE = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\"}


def _needs_hex(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp")


def escape(value: str, where: str) -> str:
    """Escape one leaf value (component or subcomponent) for ER7.

    ``where`` names the source element and the HL7 field (e.g. ``Patient/p1 name[0].family
    (PID-5.1)``) in the :class:`AdaptError` raised for CR, LF, VT or FS.
    """
    for ch, name in _REFUSED.items():
        if ch in value:
            raise AdaptError(
                f"{where}: {name} inside a value; HL7 v2 uses it to frame segments and "
                "messages, so it cannot be sent inside a field"
            )
    lead = len(value) - len(value.lstrip())
    tail = len(value.rstrip())
    out = []
    for i, ch in enumerate(value):
        if ch in _DELIMITERS:
            out.append(_DELIMITERS[ch])
        elif i < lead or i >= tail or _needs_hex(ch):
            out.append("\\X" + ch.encode("utf-8").hex().upper() + "\\")
        else:
            out.append(ch)
    return "".join(out)


_TOKEN = re.compile(r"\\([^\\]*)\\")


def unescape(value: str) -> str:
    """Undo :func:`escape`, and read the escapes other senders use.

    ``\\.br\\`` (formatted text line break) becomes a newline, ``\\H\\``/``\\N\\`` (highlight
    on/off) are dropped; adjacent ``\\Xhh\\`` runs are decoded together as UTF-8. Any other
    escape is kept as it stands.
    """
    out: list[str] = []
    pending = bytearray()
    pos = 0

    def flush() -> None:
        if pending:
            out.append(pending.decode("utf-8", errors="replace"))
            pending.clear()

    for m in _TOKEN.finditer(value):
        if m.start() > pos:
            flush()
            out.append(value[pos : m.start()])
        token = m.group(1)
        if token.startswith("X") and re.fullmatch(r"X(?:[0-9A-Fa-f]{2})+", token):
            pending.extend(bytes.fromhex(token[1:]))
        else:
            flush()
            if token in _UNESCAPE:
                out.append(_UNESCAPE[token])
            elif token == ".br":
                out.append("\n")
            elif token in ("H", "N"):
                pass
            else:
                out.append(m.group(0))
        pos = m.end()
    flush()
    out.append(value[pos:])
    return "".join(out)


def join(parts: list[str] | tuple[str, ...], sep: str) -> str:
    """Join already-escaped parts, dropping empty trailing ones (ER7 leaves them out)."""
    items = list(parts)
    while items and not items[-1]:
        items.pop()
    return sep.join(items)


def components(*parts: str) -> str:
    return join(parts, "^")


def subcomponents(*parts: str) -> str:
    return join(parts, "&")


_FHIR_DATETIME = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def dtm(value: Any, where: str) -> str:
    """A FHIR date/dateTime/instant as HL7 v2 DTM (YYYY[MM[DD[HHMM[SS[.S[S[S[S]]]]]]]][+/-ZZZZ])."""
    if not isinstance(value, str):
        raise AdaptError(f"{where}: not a FHIR date or dateTime")
    m = _FHIR_DATETIME.match(value)
    if not m:
        raise AdaptError(f"{where}: {value!r} is not a FHIR date or dateTime")
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    out = year + (month or "") + (day or "")
    if hour is not None:
        out += hour + minute + (second or "")
        if fraction and second:
            out += "." + fraction[:4]
        if zone == "Z":
            out += "+0000"
        elif zone:
            out += zone.replace(":", "")
    return out


def dtm_now(now: datetime) -> str:
    """The injected clock as DTM with its UTC offset, to the second."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise AdaptError("now: a timezone-aware time is required")
    offset = now.strftime("%z")
    return now.strftime("%Y%m%d%H%M%S") + offset


def date_only(value: Any, where: str) -> str:
    """YYYY[MM[DD]] of a FHIR date/dateTime (for DT fields)."""
    return dtm(value, where)[:8]


def segments(element: Any) -> list[Any]:
    """The segments of an hl7apy message (or group), in message order, groups flattened."""
    out = []
    for child in element.children:
        if child.classname == "Segment":
            out.append(child)
        else:
            out.extend(segments(child))
    return out


@functools.cache
def profile(structure: str) -> dict[str, Any] | None:
    """An hl7apy message profile for ``structure``, or None to use the standard one.

    HL7 v2 leaves OBX-5 "varies" and a conformance profile fixes its type. hl7apy, given no
    profile, reads every OBX-5 component as ST (199 characters), which no encapsulated
    document fits. For MDM^T02 - whose OBX carries the document - the profile types OBX-5 as
    ED (its data component TX, 65536 characters), exactly as a conformance profile would.
    """
    if structure != "MDM_T02":
        return None
    from hl7apy import load_reference

    ed = load_reference("ED", "Datatypes_Structs", VERSION)

    def patch(node: Any) -> Any:
        if isinstance(node, (tuple, list)):
            if len(node) == 4 and node[0] == "OBX_5":
                return (
                    "OBX_5",
                    ("sequence", ed, "ED", "OBSERVATION_VALUE", None, -1),
                    node[2],
                    node[3],
                )
            return type(node)(patch(x) for x in node)
        return node

    return {structure: patch(load_reference(structure, "Message", VERSION))}
