"""Trace codes: what a pack's barcode says, parsed into the identity a recall needs.

A scan is one of three kinds:

``gs1``
    GS1 element strings (GS1 General Specifications, section 3 "GS1 Application Identifier
    definitions" and section 7.8 "Processing of data from a GS1 symbol"), read with biip:
    the raw data of a GS1 DataMatrix / GS1-128 / GS1 QR symbol (with or without its ISO/IEC
    15424 symbology identifier ``]d2``, ``]C1``, ``]Q3``, ``]e0``, ``]J1``), the human readable
    interpretation ``(01)...(17)...``, a GS1 Digital Link URI, or a bare GTIN from a linear
    symbol (``]E0``, ``]E4``, ``]I1``). The AIs kept are GTIN (01), expiry (17), batch/lot (10),
    serial (21) and the national healthcare reimbursement numbers NHRN (710-717).
``cn20``
    A Chinese 20-digit drug trace code (药品追溯码; NMPA "药品追溯码编码要求", a Code 128 symbol
    without FNC1): 7-digit product code, 9-digit serial, 4 check digits. Its check digits are
    the issuing platform's and their algorithm is not public, so the code is structure-checked
    and kept whole; the whole code is the pack's identity in the Chinese traceability system.
    A bare 20-digit number is routed here *before* GS1: some are also valid GS1 element strings
    (``01`` + GTIN + ``10`` + two digits), and a Chinese pack label is the likelier source.
    A GS1 symbology identifier in front of it says otherwise and wins.
``other``
    Anything else (an HIBC code, a hospital's own label, a web address that is no GS1
    Digital Link). Kept as scanned, never guessed at.

Refusals are :class:`TraceCodeError` with a message naming the AI and value at fault: a bad
check digit, an impossible date, an unknown AI, an AI that needs a GTIN beside it (GenSpecs
4.14.2, "mandatory associations"), conflicting repeats, and a serialised pack that lost its
serial. The last is the dangerous one: when a scanner swallows the FNC1/GS that ends a
variable-length field, ``(10)ABC123`` followed by ``(21)XYZ`` reads as one lot ``ABC12321XYZ``
(GenSpecs 7.8.5 says variable-length fields end with FNC1 unless last), which is a wrong lot
that a recall would never find. A value that still contains what reads as a whole ``(21)`` or
``(17)`` element string missing from the message is refused rather than kept, and so is data
left over after a variable-length field ran to its maximum length (the longer serial that
filled the lot's 20 characters). A caller that knows the product is serialised says so and
then (01)+(21) are required outright.

Everything here is pure and deterministic: the century of two-digit years is resolved
against an injected ``today`` (GenSpecs 7.12), never the wall clock.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Literal
from urllib.parse import quote, urlsplit

from biip import ParseConfig, ParseError
from biip.gs1_application_identifiers import _GS1_APPLICATION_IDENTIFIERS as _AI_TABLE
from biip.gs1_digital_link_uris import GS1DigitalLinkURI
from biip.gs1_element_strings import GS1ElementString, GS1ElementStrings
from biip.gs1_messages import GS1Message
from biip.symbology import GS1Symbology, SymbologyIdentifier

from adapters.base import AdaptError

__all__ = [
    "GS",
    "NHRN_AIS",
    "TraceCode",
    "TraceCodeError",
    "dl_escape",
    "gtin_check_digit",
    "is_cset82",
    "normalise_cn_code",
    "normalise_gtin",
    "parse_trace_code",
    "render_element_string",
    "render_hri",
]

Kind = Literal["gs1", "cn20", "other"]

GS = "\x1d"
"""ASCII group separator: what scanners send for FNC1 (GenSpecs 7.8.5.2)."""

# U+241D SYMBOL FOR GROUP SEPARATOR: keyboard-wedge set-ups that cannot type a control
# character send this visible stand-in instead.
_GS_STANDINS = ("\u241d",)

# National Healthcare Reimbursement Numbers (GenSpecs 3.9.13): 710 Germany PZN, 711 France
# CIP, 712 Spain, 713 Brazil DRN, 714 Portugal AIM, 715 USA NDC, 716 Italy AIC, 717 Japan SRN.
NHRN_AIS = ("710", "711", "712", "713", "714", "715", "716", "717")

# GenSpecs 4.14.2 (mandatory associations): these AIs qualify a trade item and mean nothing
# without its GTIN. (02)/(03)/(8006)/(8026) would also satisfy some of them, but a pack
# identity is always an (01).
_NEEDS_GTIN = frozenset({"10", "17", "21", *NHRN_AIS})

# ISO/IEC 15424 symbology identifiers that carry GS1 data (FNC1 in first position).
_GS1_SYMBOLOGIES = frozenset(
    {
        GS1Symbology.GS1_128,
        GS1Symbology.GS1_DATAMATRIX,
        GS1Symbology.GS1_QR_CODE,
        GS1Symbology.GS1_DATABAR,
        GS1Symbology.GS1_DOTCODE,
        GS1Symbology.GS1_COMPOSITE_WITH_SEPARATOR_CHAR,
        GS1Symbology.GS1_COMPOSITE_WITH_ESCAPE_CHAR,
    }
)
# Linear symbols that carry a bare GTIN (EAN-13/UPC-A, EAN-8, ITF-14).
_GTIN_SYMBOLOGIES = frozenset(GS1Symbology.with_gtin())

# GS1 AI encodable character set 82 (GenSpecs figure 7.11-1).
_CSET82 = re.compile(r"[!\"%&'()*+,\-./0-9:;<=>?A-Z_a-z]+")
_DIGITS = re.compile(r"[0-9]+")
# Unprefixed data that opens with an SSCC (00) or a GTIN (01/02/03) is GS1 data whose
# symbology identifier the scanner did not transmit.
_GS1_LEAD = re.compile(r"00[0-9]{18}|0[1-3][0-9]{14}")

# AIs whose loss inside another field's value is refused (see the module docstring).
_HIDDEN_AIS = ("21", "17")
_DATE_AIS = frozenset({"11", "12", "13", "15", "16", "17"})

# Dates are checked here, not by biip: biip resolves the century against the wall clock, and
# this module's results must not depend on when they are computed.
_PARSE_CONFIG = ParseConfig(separator_chars=(GS,), gs1_element_strings_verify_date=False)


class TraceCodeError(AdaptError):
    """A scan that claims to be a trace code and is not a valid one; the message says why."""


@dataclass(frozen=True)
class TraceCode:
    """A parsed scan.

    ``elements`` are the GS1 (AI, value) pairs in scan order, repeats removed; ``expiry`` is
    AI (17) as a date, the last day of the month when the label gave day ``00``
    (GenSpecs 7.12), with ``expiry_day_given`` False then. ``cn_*`` split a Chinese code.
    ``notes`` are observations that are no error (the intake turns them into warnings).
    """

    kind: Kind
    raw: str
    symbology: str | None = None
    elements: tuple[tuple[str, str], ...] = ()
    gtin: str | None = None
    lot: str | None = None
    serial: str | None = None
    expiry: date | None = None
    expiry_day_given: bool = True
    nhrn: tuple[tuple[str, str], ...] = ()
    cn_code: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def cn_product(self) -> str | None:
        """The 7-digit product identification code (药品标识码) of a Chinese code."""
        return self.cn_code[:7] if self.cn_code else None

    @property
    def cn_serial(self) -> str | None:
        """The 9-digit serial number (单品序列号) of a Chinese code."""
        return self.cn_code[7:16] if self.cn_code else None

    @property
    def cn_check(self) -> str | None:
        """The 4 check digits (校验位) of a Chinese code, kept, not verifiable here."""
        return self.cn_code[16:] if self.cn_code else None

    def value(self, ai: str) -> str | None:
        """The value of one AI, or None."""
        for key, val in self.elements:
            if key == ai:
                return val
        return None

    def hri(self) -> str:
        """GS1 human readable interpretation, ``(01)...(17)...``; the whole code for cn20."""
        if self.kind == "cn20":
            return self.cn_code or ""
        if self.kind == "other":
            return self.raw
        return render_hri(self.elements)

    def expiry_fhir(self) -> str | None:
        """The expiry as a FHIR date: ``YYYY-MM`` when the label left the day open."""
        if self.expiry is None:
            return None
        if not self.expiry_day_given:
            return f"{self.expiry.year:04d}-{self.expiry.month:02d}"
        return self.expiry.isoformat()

    def digital_link(self) -> str:
        """The canonical GS1 Digital Link URI (GS1 Digital Link 1.2, section 4.11).

        Path ``/01/{gtin}[/10/{lot}][/21/{serial}]`` in the key qualifier order that standard
        fixes for (01) (22, 10, 21), data attributes such as (17) in the query string.
        """
        if self.gtin is None:
            raise TraceCodeError(f"no GTIN (01) in {self.raw!r}: no GS1 Digital Link")
        path = f"https://id.gs1.org/01/{self.gtin}"
        if self.lot is not None:
            path += f"/10/{dl_escape(self.lot)}"
        if self.serial is not None:
            path += f"/21/{dl_escape(self.serial)}"
        query = [
            f"{ai}={dl_escape(val)}" for ai, val in self.elements if ai not in ("01", "10", "21")
        ]
        return path + ("?" + "&".join(query) if query else "")


def parse_trace_code(
    scan: str, *, serialised: bool | None = None, today: date | None = None
) -> TraceCode:
    """Parse one scan into a :class:`TraceCode`; raise :class:`TraceCodeError` if it is broken.

    ``serialised`` says what the caller knows of the product: True requires (01)+(21) (EU FMD
    and DSCSA pack codes), False allows a lot-level code whose lot merely contains ``21``;
    None (unknown) requires the serial only where the scan shows it was lost. ``today`` fixes
    the century of two-digit years (GenSpecs 7.12); without it every ``YY`` is read as
    ``20YY``, which is what 7.12 gives for expiry dates in 2000-2076 when read today.
    """
    if not isinstance(scan, str):
        raise TraceCodeError(f"a scan is text, got {type(scan).__name__}")
    text = unicodedata.normalize("NFKC", scan)
    for standin in _GS_STANDINS:
        text = text.replace(standin, GS)
    text = text.strip(" \t\r\n")
    if not text.strip(GS):
        raise TraceCodeError("empty scan")

    symbology: SymbologyIdentifier | None = None
    body = text
    if text.startswith("]"):
        try:
            symbology = SymbologyIdentifier.extract(text)
        except ParseError as e:
            raise TraceCodeError(f"bad symbology identifier in {scan!r}: {e}") from None
        body = text[len(symbology) :]
    # A leading separator is FNC1 in first position as some scanners transmit it.
    body = body.lstrip(GS)
    sym_text = symbology.value if symbology else None
    gs1_symbol = symbology is not None and symbology.gs1_symbology in _GS1_SYMBOLOGIES

    if not gs1_symbol and (symbology is None or symbology.value.startswith("]C")):
        compact = re.sub(r"[ \-]", "", body)
        # Exactly 20 digits is a Chinese code; from a plain Code 128 symbol (the carrier those
        # codes use) 19 or 21 digits is one misread, not some other number.
        near = symbology is not None and len(compact) in (19, 21)
        if _DIGITS.fullmatch(compact) and (len(compact) == 20 or near):
            return _cn20(scan, compact, sym_text)

    if body.startswith(("http://", "https://")):
        return _digital_link(scan, body, sym_text, serialised, today)
    if body.startswith("("):
        return _hri(scan, body, sym_text, serialised, today)
    if symbology is not None and symbology.gs1_symbology in _GTIN_SYMBOLOGIES:
        return _bare_gtin(scan, body, sym_text)
    if gs1_symbol or GS in body or _GS1_LEAD.match(body):
        return _element_string(scan, body, sym_text, serialised, today)
    if _DIGITS.fullmatch(body) and len(body) in (8, 12, 13, 14):
        # Unannounced digits are a GTIN only when the check digit says so.
        try:
            return _bare_gtin(scan, body, sym_text)
        except TraceCodeError:
            pass
    return TraceCode(kind="other", raw=scan, symbology=sym_text)


def render_element_string(elements: Iterable[tuple[str, str]], *, separator: str = GS) -> str:
    """Concatenate (AI, value) pairs as a GS1 symbol's data (GenSpecs 7.8.5).

    A separator follows each variable-length field except the last; predefined-length AIs
    (01, 17, ...; GenSpecs figure 7.8.5-2) need none.
    """
    pairs = list(elements)
    out: list[str] = []
    for i, (ai, value) in enumerate(pairs):
        spec = _AI_TABLE.get(ai)
        if spec is None:
            raise TraceCodeError(f"unknown GS1 Application Identifier ({ai})")
        out.append(ai + value)
        if spec.separator_required and i < len(pairs) - 1:
            out.append(separator)
    return "".join(out)


def render_hri(elements: Iterable[tuple[str, str]]) -> str:
    """The human readable interpretation, ``(AI)value`` per element (GenSpecs 4.15)."""
    return "".join(f"({ai}){value}" for ai, value in elements)


def gtin_check_digit(payload: str) -> int:
    """The GS1 mod-10 check digit of the digits before it (GenSpecs 7.9.1)."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        total += int(ch) * (3 if i % 2 == 0 else 1)
    return (10 - total % 10) % 10


def normalise_gtin(code: str) -> str:
    """A GTIN-8/12/13/14 as the 14-digit form GS1 keys are compared in; ValueError if invalid.

    GenSpecs 3.3.2: shorter GTINs are right-justified in 14 digits with leading zeros, so
    ``4006381333931`` and ``04006381333931`` are the same trade item.
    """
    if not isinstance(code, str) or not _DIGITS.fullmatch(code) or len(code) not in (8, 12, 13, 14):
        raise ValueError(f"a GTIN has 8, 12, 13 or 14 digits, got {code!r}")
    expected = gtin_check_digit(code[:-1])
    if int(code[-1]) != expected:
        raise ValueError(f"GTIN {code} has check digit {code[-1]}, expected {expected}")
    return code.zfill(14)


def normalise_cn_code(code: str) -> str:
    """A Chinese 20-digit drug trace code as it is compared; ValueError if it is not one.

    The printed form's spaces and hyphens are dropped and full-width digits folded (NFKC), as
    :func:`parse_trace_code` does; what is left must be 20 ASCII digits. The check digits are
    the issuing platform's and are kept, not verified.
    """
    if not isinstance(code, str):
        raise ValueError("a Chinese drug trace code is text")
    digits = re.sub(r"[ \-]", "", unicodedata.normalize("NFKC", code).strip())
    if not (_DIGITS.fullmatch(digits) and digits.isascii() and len(digits) == 20):
        raise ValueError(
            f"a Chinese drug trace code has 20 digits (7 product, 9 serial, 4 check), got {code!r}"
        )
    return digits


def is_cset82(value: str, max_len: int = 20) -> bool:
    """True when ``value`` is 1..max_len characters of GS1 character set 82 (GenSpecs 7.11)."""
    return isinstance(value, str) and 0 < len(value) <= max_len and bool(_CSET82.fullmatch(value))


# -- the kinds ---------------------------------------------------------------------------------


def _cn20(scan: str, digits: str, symbology: str | None) -> TraceCode:
    if len(digits) != 20:
        raise TraceCodeError(
            f"a Chinese drug trace code has 20 digits (7 product, 9 serial, 4 check), "
            f"got {len(digits)} in {scan!r}"
        )
    notes: tuple[str, ...] = ()
    if not digits.startswith("8"):
        # Codes issued so far begin with 8; a different first digit is worth a look, not a
        # refusal, since the issuing rules are the platform's, not ours.
        notes = (f"Chinese trace code {digits} does not begin with 8",)
    return TraceCode(kind="cn20", raw=scan, symbology=symbology, cn_code=digits, notes=notes)


def _bare_gtin(scan: str, digits: str, symbology: str | None) -> TraceCode:
    try:
        gtin = normalise_gtin(digits)
    except ValueError as e:
        raise TraceCodeError(f"{scan!r}: {e}") from None
    return TraceCode(kind="gs1", raw=scan, symbology=symbology, elements=(("01", gtin),), gtin=gtin)


def _element_string(
    scan: str, body: str, symbology: str | None, serialised: bool | None, today: date | None
) -> TraceCode:
    try:
        message = GS1Message.parse(body, config=_PARSE_CONFIG)
    except ParseError as e:
        raise TraceCodeError(_overrun(body, scan) or _explain(str(e), scan)) from None
    return _from_elements(scan, message.element_strings, symbology, serialised, today)


def _overrun(body: str, scan: str) -> str | None:
    """Name the field that ran to its maximum length just before the data stopped parsing.

    Without its FNC1/GS a variable-length field takes what follows, up to its maximum
    length, and the parse fails on whatever is left: the field is the one to blame.
    """
    rest, last = body, None
    while rest:
        try:
            element = GS1ElementString.extract(rest, config=_PARSE_CONFIG)
        except ParseError:
            break
        last, rest = element, rest[len(element) :].lstrip(GS)
    if not rest or last is None or not last.ai.separator_required:
        return None
    limit = re.search(r"\.\.(\d+)$", last.ai.format)
    if limit is None or len(last.value) < int(limit.group(1)):
        return None
    return (
        f"({last.ai.ai}){last.value} ran to its maximum length and {rest!r} is left over: the "
        f"FNC1/GS separator after the variable-length ({last.ai.ai}) was probably lost in "
        f"{scan!r}; rescan"
    )


def _explain(error: str, scan: str) -> str:
    """biip's parse errors, said in terms of the AI at fault."""
    unknown = re.match(r"Failed to get GS1 Application Identifier from '(.*)'\.", error)
    if unknown:
        return f"unknown GS1 Application Identifier at {unknown.group(1)!r} in {scan!r}"
    mismatch = re.match(r"Failed to match '(.*)' with GS1 AI \((\d+)\) pattern", error)
    if mismatch:
        ai = mismatch.group(2)
        value = mismatch.group(1)[len(ai) :]
        spec = _AI_TABLE[ai]
        fixed = re.fullmatch(r"N\d\+[NX](\d+)", spec.format)
        if fixed:
            value = value[: int(fixed.group(1))]
        what = " (a YYMMDD date)" if ai in _DATE_AIS else ""
        return f"({ai}){value} does not match the AI's format {spec.format}{what} in {scan!r}"
    return f"not a valid GS1 element string {scan!r}: {error}"


def _hri(
    scan: str, body: str, symbology: str | None, serialised: bool | None, today: date | None
) -> TraceCode:
    try:
        message = GS1Message.parse_hri(body, config=_PARSE_CONFIG)
    except ParseError as e:
        raise TraceCodeError(
            f"not a valid GS1 human readable interpretation {scan!r}: {e}"
        ) from None
    return _from_elements(scan, message.element_strings, symbology, serialised, today)


def _digital_link(
    scan: str, body: str, symbology: str | None, serialised: bool | None, today: date | None
) -> TraceCode:
    path = urlsplit(body).path
    if not re.search(
        r"/(01|00|414|8004|8006|8003|253|255|401|402|417|8010|8017|8018)/", path + "/"
    ):
        # A web address without a GS1 primary key is not a trace code (a leaflet link, say).
        return TraceCode(kind="other", raw=scan, symbology=symbology)
    try:
        uri = GS1DigitalLinkURI.parse(body, config=_PARSE_CONFIG)
    except ParseError as e:
        raise TraceCodeError(f"not a valid GS1 Digital Link URI {scan!r}: {e}") from None
    return _from_elements(scan, uri.element_strings, symbology, serialised, today)


def _from_elements(
    scan: str,
    element_strings: GS1ElementStrings,
    symbology: str | None,
    serialised: bool | None,
    today: date | None,
) -> TraceCode:
    elements: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for es in element_strings:
        ai, value = es.ai.ai, es.value
        if es.gtin_error:
            raise TraceCodeError(f"({ai}){value}: {es.gtin_error}")
        if ai in seen:
            # GenSpecs 4.14.1: a repeated AI must repeat its value.
            if seen[ai] != value:
                raise TraceCodeError(f"({ai}) appears twice with different values in {scan!r}")
            continue
        seen[ai] = value
        elements.append((ai, value))

    present = set(seen)
    orphans = sorted((present & _NEEDS_GTIN) - {"01"})
    if orphans and "01" not in present:
        raise TraceCodeError(
            f"({orphans[0]}) qualifies a trade item and needs a GTIN (01) beside it "
            f"(GS1 General Specifications 4.14.2) in {scan!r}"
        )

    _refuse_hidden_elements(scan, elements, present, serialised)
    if serialised and not {"01", "21"} <= present:
        missing = " and ".join(f"({ai})" for ai in ("01", "21") if ai not in present)
        raise TraceCodeError(f"serialised pack code {scan!r} lacks {missing}")

    expiry: date | None = None
    day_given = True
    notes: list[str] = []
    for ai, value in elements:
        if ai in _DATE_AIS:
            parsed, given = _gs1_date(ai, value, today)
            if ai == "17":
                expiry, day_given = parsed, given
                if not given:
                    notes.append(
                        f"expiry (17){value} gives no day: read as {parsed.isoformat()}, the "
                        "last day of the month (GS1 General Specifications 7.12)"
                    )
    gtin = seen.get("01")
    return TraceCode(
        kind="gs1",
        raw=scan,
        symbology=symbology,
        elements=tuple(elements),
        gtin=gtin,
        lot=seen.get("10"),
        serial=seen.get("21"),
        expiry=expiry,
        expiry_day_given=day_given,
        nhrn=tuple((ai, v) for ai, v in elements if ai in NHRN_AIS),
        notes=tuple(notes),
    )


def _refuse_hidden_elements(
    scan: str,
    elements: Sequence[tuple[str, str]],
    present: set[str],
    serialised: bool | None,
) -> None:
    """Refuse a variable-length value that swallowed a (21) or (17) the message lacks.

    Only the tail of a value can be a swallowed field (the separator is lost at the end of a
    field), so the check is whether some suffix of the value parses, whole, as element
    strings that include a missing (21) or (17) -- with a valid date for (17).
    """
    for ai, value in elements:
        spec = _AI_TABLE[ai]
        if not spec.separator_required:
            continue
        for hidden in _HIDDEN_AIS:
            if hidden in present or (hidden == "21" and serialised is False):
                continue
            start = value.find(hidden, 1)
            while start != -1:
                tail = value[start:]
                try:
                    found = GS1Message.parse(tail, config=_PARSE_CONFIG).element_strings
                except (ParseError, ValueError):
                    found = None
                if found and found[0].ai.ai == hidden and not any(es.gtin_error for es in found):
                    what = "a serial number" if hidden == "21" else "an expiry date"
                    raise TraceCodeError(
                        f"({ai}){value} ends with {tail!r}, which reads as {what} ({hidden}) "
                        "that the code otherwise lacks: the FNC1/GS separator after the "
                        f"variable-length ({ai}) was probably lost in {scan!r}; rescan"
                        + (" (or declare the product unserialised)" if hidden == "21" else "")
                    )
                start = value.find(hidden, start + 1)


def _gs1_date(ai: str, value: str, today: date | None) -> tuple[date, bool]:
    """YYMMDD per GenSpecs 7.12: century by the sliding window, day 00 = last day of month."""
    if not (_DIGITS.fullmatch(value) and len(value) == 6):
        raise TraceCodeError(f"({ai}){value}: a date is YYMMDD")
    yy, mm, dd = int(value[:2]), int(value[2:4]), int(value[4:])
    year = _century(yy, today) + yy
    if not 1 <= mm <= 12:
        raise TraceCodeError(f"({ai}){value}: month {mm:02d} does not exist")
    last = calendar.monthrange(year, mm)[1]
    if dd == 0:
        return date(year, mm, last), False
    if dd > last:
        raise TraceCodeError(f"({ai}){value}: {year}-{mm:02d} has no day {dd}")
    return date(year, mm, dd), True


def _century(yy: int, today: date | None) -> int:
    """GenSpecs 7.12: a YY more than 50 years ahead is last century, more than 49 back next."""
    if today is None:
        return 2000
    current = today.year % 100
    century = today.year - current
    diff = yy - current
    if 51 <= diff <= 99:
        return century - 100
    if -99 <= diff <= -50:
        return century + 100
    return century


def dl_escape(value: str) -> str:
    """Percent-encode a value for a Digital Link path (GS1 Digital Link 1.2, section 6)."""
    return quote(value, safe="")
