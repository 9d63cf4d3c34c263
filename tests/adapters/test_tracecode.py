"""Trace codes: GS1 element strings (valid and broken), Chinese 20-digit codes, the rest.

The GS1 rules are those of the GS1 General Specifications (sections 3, 4.14, 7.8, 7.9, 7.12);
where the public GS1 Barcode Syntax Dictionary is present it is checked that the AIs the
parser relies on have the format and FNC1 flag it gives.
"""

from __future__ import annotations

import re
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.base import AdaptError
from adapters.tracecode import (
    GS,
    NHRN_AIS,
    TraceCodeError,
    gtin_check_digit,
    is_cset82,
    normalise_cn_code,
    normalise_gtin,
    parse_trace_code,
    render_element_string,
    render_hri,
)
from tests.paths import VECTORS

GTIN = "00312345678906"
CSET82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"


# -- valid GS1 data ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scan", "symbology"),
    [
        (f"]d201{GTIN}1727063010AB12C34{GS}217TK2PQ9R4M1X", "]d2"),  # GS1 DataMatrix
        (f"]C101{GTIN}1727063010AB12C34{GS}217TK2PQ9R4M1X", "]C1"),  # GS1-128
        (f"]Q301{GTIN}1727063010AB12C34{GS}217TK2PQ9R4M1X", "]Q3"),  # GS1 QR
        (f"01{GTIN}1727063010AB12C34{GS}217TK2PQ9R4M1X", None),  # no identifier sent
        (f"]d2{GS}01{GTIN}1727063010AB12C34{GS}217TK2PQ9R4M1X", "]d2"),  # FNC1 first as GS
        (f"01{GTIN}1727063010AB12C34\u241d217TK2PQ9R4M1X", None),  # visible GS stand-in
        (f"]d201{GTIN}217TK2PQ9R4M1X{GS}1727063010AB12C34", "]d2"),  # other order
        (f"(01){GTIN}(17)270630(10)AB12C34(21)7TK2PQ9R4M1X", None),  # HRI
        (f"https://id.gs1.org/01/{GTIN}/10/AB12C34/21/7TK2PQ9R4M1X?17=270630", None),  # DL
        (f"https://dl.example.com/p/01/{GTIN}/10/AB12C34/21/7TK2PQ9R4M1X?17=270630", None),
    ],
)
def test_serialised_pack_in_every_carrier(scan: str, symbology: str | None) -> None:
    tc = parse_trace_code(scan)
    assert tc.kind == "gs1"
    assert tc.symbology == symbology
    assert (tc.gtin, tc.lot, tc.serial) == (GTIN, "AB12C34", "7TK2PQ9R4M1X")
    assert tc.expiry == date(2027, 6, 30) and tc.expiry_day_given
    assert dict(tc.elements) == {
        "01": GTIN,
        "17": "270630",
        "10": "AB12C34",
        "21": "7TK2PQ9R4M1X",
    }
    assert tc.digital_link() == (
        f"https://id.gs1.org/01/{GTIN}/10/AB12C34/21/7TK2PQ9R4M1X?17=270630"
    )


def test_nhrn_ais_are_kept() -> None:
    tc = parse_trace_code(f"]d201{GTIN}712ES-658372{GS}715312345678{GS}10L1{GS}21S1")
    assert tc.nhrn == (("712", "ES-658372"), ("715", "312345678"))
    assert tc.value("715") == "312345678"


def test_day_00_expiry_is_the_last_day_of_the_month() -> None:
    # GenSpecs 7.12: DD = 00 means the day is not given; the last day of the month applies.
    tc = parse_trace_code(f"]d201{GTIN}1728020010AB12{GS}21S1")
    assert tc.expiry == date(2028, 2, 29)  # a leap year
    assert not tc.expiry_day_given
    assert tc.expiry_fhir() == "2028-02"
    assert tc.notes and "last day of the month" in tc.notes[0]


def test_century_follows_the_sliding_window_of_an_injected_today() -> None:
    scan = f"]d201{GTIN}1799123110L{GS}21S"
    assert parse_trace_code(scan).expiry == date(2099, 12, 31)
    assert parse_trace_code(scan, today=date(2026, 11, 28)).expiry == date(1999, 12, 31)
    assert parse_trace_code(scan, today=date(2060, 1, 1)).expiry == date(2099, 12, 31)


def test_linear_gtin_symbols() -> None:
    assert parse_trace_code("]E04006381333931").gtin == "04006381333931"
    assert parse_trace_code("4006381333931").gtin == "04006381333931"
    with pytest.raises(TraceCodeError, match="check digit"):
        parse_trace_code("]E04006381333932")
    # Without a symbology identifier a number that is no valid GTIN is just another number.
    assert parse_trace_code("4006381333932").kind == "other"


def test_lot_level_code_whose_lot_contains_21_when_declared_unserialised() -> None:
    tc = parse_trace_code(f"01{GTIN}1727063010LOT2103A", serialised=False)
    assert (tc.lot, tc.serial) == ("LOT2103A", None)


# -- broken GS1 data ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scan", "message"),
    [
        ("]d2010031234567890717270630", "check digit"),
        (f"]d201{GTIN}1727130010AB", r"\(17\)271300 does not match .* YYMMDD"),
        (f"]d201{GTIN}1727000010AB", "month 00 does not exist"),
        (f"]d201{GTIN}1727023010AB", "has no day 30"),
        (f"]d201{GTIN}1727063210AB", r"\(17\)270632 does not match"),
        (f"]d201{GTIN}1727063110AB", "has no day 31"),
        (f"]d201{GTIN}1727063", "date"),
        (f"]d201{GTIN}{GS}2399ABC", "unknown GS1 Application Identifier"),
        (f"]d201{GTIN}{GS}8899X", "unknown GS1 Application Identifier"),
        ("]d221SERIAL1", r"needs a GTIN \(01\)"),
        ("]d210LOT1", r"needs a GTIN \(01\)"),
        (f"]d201{GTIN}10A{GS}10B", "twice with different values"),
        ("]d2019501101530003", r"\(01\)9501101530003 does not match .* N2\+N14"),
        ("(01)123(10)A", "human readable"),
        (f"https://id.gs1.org/01/{GTIN}/21", "Digital Link"),
        ("]!0123", "symbology identifier"),
        ("", "empty"),
        (GS, "empty"),
    ],
)
def test_broken_element_strings_are_refused(scan: str, message: str) -> None:
    with pytest.raises(TraceCodeError, match=message):
        parse_trace_code(scan)


def test_swallowed_separator_before_serial_is_an_error_not_a_wrong_lot() -> None:
    # (10)AB12 then (21)S1, with the GS after the lot lost by the scanner: it would read as
    # the lot "AB1221S1" of an unserialised pack.
    with pytest.raises(TraceCodeError, match=r"reads as a serial number \(21\)"):
        parse_trace_code(f"]d201{GTIN}1727063010AB1221S1")
    # A longer serial fills the lot to its 20 characters and leaves the rest unparseable.
    with pytest.raises(TraceCodeError, match=r"ran to its maximum length .* separator"):
        parse_trace_code(f"]d201{GTIN}1727063010AB12C34217TK2PQ9R4M1X")
    # The same with the expiry swallowed into the lot.
    with pytest.raises(TraceCodeError, match=r"reads as an expiry date \(17\)"):
        parse_trace_code(f"]d201{GTIN}10AB12C3417270630{GS}21S1")


def test_a_product_known_to_be_serialised_needs_its_serial() -> None:
    scan = f"]d201{GTIN}1727063010AB12C34"
    assert parse_trace_code(scan).serial is None  # unknown product: a lot-level code is legal
    with pytest.raises(TraceCodeError, match=r"lacks \(21\)"):
        parse_trace_code(scan, serialised=True)


def test_trace_code_error_is_an_adapt_error() -> None:
    # The offline CLI maps AdaptError to exit code 3 (malformed input).
    assert issubclass(TraceCodeError, AdaptError)


# -- Chinese 20-digit codes and the rest --------------------------------------------------------


def test_chinese_code_is_kept_whole_and_split() -> None:
    tc = parse_trace_code("83741290012345678901")
    assert tc.kind == "cn20"
    assert tc.cn_code == "83741290012345678901"
    assert (tc.cn_product, tc.cn_serial, tc.cn_check) == ("8374129", "001234567", "8901")
    assert tc.gtin is None and tc.hri() == "83741290012345678901"
    assert tc.notes == ()


@pytest.mark.parametrize(
    "scan",
    [
        "]C083741290012345678901",  # plain Code 128, the carrier these codes use
        "8374 1290 0123 4567 8901",  # as printed under the bars
        "８３７４１２９００１２３４５６７８９０１",  # full-width digits from an IME
    ],
)
def test_chinese_code_forms(scan: str) -> None:
    assert parse_trace_code(scan).cn_code == "83741290012345678901"


@pytest.mark.parametrize(
    "typed", ["83741290012345678901", "8374 1290 0123 4567 8901", "8374-1290-0123-4567-8901",
              "８３７４１２９００１２３４５６７８９０１", " 83741290012345678901\n"],
)  # fmt: skip
def test_a_chinese_code_asked_for_is_read_as_scanned(typed: str) -> None:
    # What a regulator types into a recall query compares with what the scanner stored.
    assert normalise_cn_code(typed) == parse_trace_code(typed.strip()).cn_code


@pytest.mark.parametrize(
    "typed", ["8374129001234567890", "837412900123456789012", "8374129001234567890X", "", "٨" * 20]
)
def test_a_chinese_code_has_twenty_ascii_digits(typed: str) -> None:
    with pytest.raises(ValueError, match="20 digits"):
        normalise_cn_code(typed)


def test_twenty_digits_are_routed_to_the_chinese_code_before_gs1() -> None:
    # 01 + GTIN + 10 + "12" is also a valid GS1 element string of 20 digits.
    digits = f"01{GTIN}1012"
    assert parse_trace_code(digits).kind == "cn20"
    # ... unless a GS1 symbology identifier says it is GS1 data.
    tc = parse_trace_code("]d2" + digits)
    assert (tc.kind, tc.gtin, tc.lot) == ("gs1", GTIN, "12")


def test_chinese_code_structure_is_checked() -> None:
    with pytest.raises(TraceCodeError, match="20 digits"):
        parse_trace_code("]C08374129001234567890")  # 19 digits from a Code 128 symbol
    with pytest.raises(TraceCodeError, match="20 digits"):
        parse_trace_code("]C0837412900123456789012")  # 21
    assert "does not begin with 8" in parse_trace_code("13741290012345678901").notes[0]


@pytest.mark.parametrize(
    "scan", ["HOSP-LABEL-0042", "https://example.com/leaflet.pdf", "+A99912345"]
)
def test_other_codes_are_kept_as_scanned(scan: str) -> None:
    tc = parse_trace_code(scan)
    assert (tc.kind, tc.raw, tc.gtin) == ("other", scan, None)


# -- helpers ------------------------------------------------------------------------------------


def test_gtin_normalisation() -> None:
    assert normalise_gtin("4006381333931") == "04006381333931"
    assert normalise_gtin("96385074") == "00000096385074"
    assert gtin_check_digit("0031234567890") == 6
    for bad in ("4006381333932", "123", "40063813339a1", "123456789012345"):
        with pytest.raises(ValueError):
            normalise_gtin(bad)


def test_rendering_puts_separators_only_after_variable_length_fields() -> None:
    elements = [("01", GTIN), ("10", "AB1"), ("17", "270630"), ("21", "S1")]
    assert render_element_string(elements) == f"01{GTIN}10AB1{GS}1727063021S1"
    assert render_hri(elements) == f"(01){GTIN}(10)AB1(17)270630(21)S1"
    with pytest.raises(TraceCodeError):
        render_element_string([("2399", "x")])


def test_syntax_dictionary_agrees_with_the_parser_table() -> None:
    """The AIs a pack code uses: fixed length (no FNC1) exactly where the dictionary says."""
    path = VECTORS / "gs1" / "gs1-syntax-dictionary.txt"
    if not path.is_file():
        pytest.skip(f"public test vectors not present at {VECTORS}")
    spec: dict[str, tuple[bool, str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^(\d{2,4})\s+(\S*?)\s+(\S+)", line)
        if m and not line.startswith("#"):
            flags = m.group(2) if not re.match(r"[NXYZ\[]", m.group(2) or "N") else ""
            spec[m.group(1)] = ("*" in flags, m.group(3) if flags else m.group(2))
    from biip.gs1_application_identifiers import _GS1_APPLICATION_IDENTIFIERS as table

    for ai in ("01", "10", "17", "21", *NHRN_AIS):
        fixed, fmt = spec[ai]
        assert table[ai].separator_required is (not fixed), ai
        max_len = int(re.search(r"(\d+)", fmt.split(",")[0].split("..")[-1]).group(1))
        assert str(max_len) in table[ai].format, (ai, fmt, table[ai].format)


# -- property: render then parse gives the same AIs ---------------------------------------------


@st.composite
def gtins(draw: st.DrawFn) -> str:
    body = draw(st.text("0123456789", min_size=13, max_size=13))
    return body + str(gtin_check_digit(body))


def _yymmdd(d: date, day_open: bool) -> str:
    return f"{d.year % 100:02d}{d.month:02d}{0 if day_open else d.day:02d}"


cset82 = st.text(CSET82, min_size=1, max_size=20)


@st.composite
def pack_elements(draw: st.DrawFn, *, hri_safe: bool = False) -> list[tuple[str, str]]:
    values = st.text(CSET82.replace("(", "").replace(")", ""), min_size=1, max_size=20)
    text = values if hri_safe else cset82
    expiry = draw(st.dates(min_value=date(2000, 1, 1), max_value=date(2049, 12, 31)))
    elements = [
        ("01", draw(gtins())),
        ("17", _yymmdd(expiry, draw(st.booleans()))),
        ("10", draw(text)),
        ("21", draw(text)),
    ]
    for ai in draw(st.lists(st.sampled_from(NHRN_AIS), unique=True, max_size=2)):
        elements.append((ai, draw(text)))
    return draw(st.permutations(elements))


@settings(max_examples=300, deadline=None)
@given(pack_elements(), st.sampled_from([None, "]d2", "]C1", "]Q3"]))
def test_render_then_parse_element_string(
    elements: list[tuple[str, str]], prefix: str | None
) -> None:
    scan = (prefix or "") + render_element_string(elements)
    tc = parse_trace_code(scan)
    assert tc.kind == "gs1"
    assert list(tc.elements) == elements
    assert tc.gtin == dict(elements)["01"] and tc.serial == dict(elements)["21"]


@settings(max_examples=150, deadline=None)
@given(pack_elements(hri_safe=True))
def test_render_then_parse_hri_and_digital_link(elements: list[tuple[str, str]]) -> None:
    from_hri = parse_trace_code(render_hri(elements))
    assert sorted(from_hri.elements) == sorted(elements)
    from_dl = parse_trace_code(from_hri.digital_link())
    assert sorted(from_dl.elements) == sorted(elements)


@given(cset82)
def test_cset82_predicate(value: str) -> None:
    assert is_cset82(value)
    assert not is_cset82(value + " ")
