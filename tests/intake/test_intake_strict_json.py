"""The strict JSON gate: media types, size, encoding, duplicates, numbers, depth, surrogates."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.intake import IntakeError, IntakeLimits, check_media_type, parse_strict
from exchange.intake.strict_json import number_problem
from tests.paths import VECTORS


def refused(body: bytes, limits: IntakeLimits | None = None) -> IntakeError:
    with pytest.raises(IntakeError) as caught:
        parse_strict(body, limits or IntakeLimits())
    return caught.value


def assert_outcome(error: IntakeError) -> dict[str, Any]:
    """The OperationOutcome is a well-formed R4 resource with a diagnostics per issue."""
    outcome = error.operation_outcome()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"]
    for issue in outcome["issue"]:
        assert issue["severity"] in ("error", "warning")
        assert issue["code"]
        assert issue["diagnostics"]
        assert "expression" not in issue or isinstance(issue["expression"], list)
    json.dumps(outcome)
    return outcome


# --- media type ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/fhir+json",
        "application/json",
        "application/fhir+json; charset=utf-8",
        "application/fhir+json;charset=UTF-8",
        'application/json; charset="utf-8"',
        "Application/FHIR+JSON; fhirVersion=4.0",
        "application/fhir+json; charset=utf-8; fhirVersion=4.0",
    ],
)
def test_media_types_accepted(content_type: str) -> None:
    check_media_type(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "application/xml",
        "application/fhir+xml",
        "text/xml",
        "application/json-patch+json",
        "multipart/form-data; boundary=x",
        "application/fhir+json; charset=latin-1",
        "application/fhir+json; charset=iso-8859-1",
        "application/json; charset=utf-16",
        "application/fhir+json; fhirVersion=3.0",
    ],
)
def test_media_types_refused_with_415(content_type: str | None) -> None:
    with pytest.raises(IntakeError) as caught:
        check_media_type(content_type)
    assert caught.value.status == 415
    outcome = assert_outcome(caught.value)
    assert outcome["issue"][0]["code"] == "not-supported"


def test_latin1_charset_is_named_in_the_message() -> None:
    with pytest.raises(IntakeError) as caught:
        check_media_type("application/fhir+json; charset=latin-1")
    assert "latin-1" in caught.value.issues[0].diagnostics


# --- size, emptiness, encoding ------------------------------------------------------------


def test_body_over_the_limit_is_413() -> None:
    body = b'{"resourceType":"Bundle","type":"collection"}'
    error = refused(body, IntakeLimits(max_bytes=len(body) - 1))
    assert error.status == 413
    assert error.issues[0].code == "too-long"
    assert parse_strict(body, IntakeLimits(max_bytes=len(body)))["type"] == "collection"


@pytest.mark.parametrize("body", [b"", b"   ", b"\r\n\t"])
def test_empty_body_is_400(body: bytes) -> None:
    error = refused(body)
    assert error.status == 400
    assert "empty" in error.issues[0].diagnostics
    assert_outcome(error)


def test_byte_order_mark_is_400_and_says_to_remove_it() -> None:
    error = refused(b'\xef\xbb\xbf{"resourceType":"Bundle"}')
    assert error.status == 400
    assert "remove the byte order mark" in error.issues[0].diagnostics


def test_utf16_is_400() -> None:
    error = refused('{"a":1}'.encode("utf-16"))
    assert error.status == 400
    assert "UTF-16" in error.issues[0].diagnostics


@pytest.mark.parametrize(
    ("body", "offset"),
    [
        (b'{"a":"\xff"}', 6),
        (b'{"name":"Jos\xe9"}', 12),  # Latin-1 é
        (b'{"a":"\xed\xa0\x80"}', 6),  # an encoded surrogate (CESU-8)
        (b'{"a":"ok\xc3"}', 8),  # truncated sequence
    ],
)
def test_invalid_utf8_is_400_naming_the_byte_offset(body: bytes, offset: int) -> None:
    error = refused(body)
    assert error.status == 400
    assert f"byte offset {offset}" in error.issues[0].diagnostics


def test_body_that_is_not_bytes_is_400() -> None:
    with pytest.raises(IntakeError) as caught:
        parse_strict('{"a":1}')  # type: ignore[arg-type]
    assert caught.value.status == 400


# --- syntax and top level -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "found"),
    [
        (b"[]", "array"),
        (b'[{"resourceType":"Bundle"}]', "array"),
        (b'"Bundle"', "string"),
        (b"42", "number"),
        (b"null", "null"),
        (b"true", "boolean"),
    ],
)
def test_top_level_must_be_an_object(body: bytes, found: str) -> None:
    error = refused(body)
    assert error.status == 400
    assert f"JSON {found}" in error.issues[0].diagnostics


def test_xml_text_is_400_with_a_hint() -> None:
    body = (
        b'<?xml version="1.0"?><Bundle xmlns="http://hl7.org/fhir">'
        b'<type value="collection"/></Bundle>'
    )
    error = refused(body)
    assert error.status == 400
    assert "XML" in error.issues[0].diagnostics
    assert "line 1 column 1" in error.issues[0].diagnostics


@pytest.mark.parametrize(
    "body",
    [b'{"a":1,}', b'{"a":1', b"{'a':1}", b'{"a":"unterminated', b'{"a":1}}', b'{"a":01}'],
)
def test_syntax_errors_are_400_with_a_position(body: bytes) -> None:
    error = refused(body)
    assert error.status == 400
    assert "line 1 column" in error.issues[0].diagnostics


def test_plain_object_parses() -> None:
    assert parse_strict(b'{"hello":1}') == {"hello": 1}


# --- duplicate keys -----------------------------------------------------------------------


def test_duplicate_key_at_top_level() -> None:
    error = refused(b'{"resourceType":"Bundle","type":"collection","type":"batch"}')
    assert error.status == 400
    assert error.issues[0].code == "duplicate"
    assert "'type'" in error.issues[0].diagnostics
    assert "the object at $ " in error.issues[0].diagnostics


def test_duplicate_key_deep_names_the_json_path() -> None:
    body = (
        b'{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient"}},'
        b'{"resource":{"resourceType":"Patient","id":"a","id":"b"}}]}'
    )
    error = refused(body)
    assert error.status == 400
    assert "$.entry[1].resource" in error.issues[0].diagnostics
    assert "'id'" in error.issues[0].diagnostics


def test_every_duplicate_is_reported() -> None:
    error = refused(b'{"a":{"x":1,"x":2},"b":[{"y":1,"y":1}],"c":3,"c":4}')
    texts = [issue.diagnostics for issue in error.issues]
    assert len(texts) == 3
    assert "the object at $ repeats the key 'c'" in texts[0]
    assert "the object at $.a repeats the key 'x'" in texts[1]
    assert "the object at $.b[0] repeats the key 'y'" in texts[2]


def test_same_key_in_sibling_objects_is_fine() -> None:
    assert parse_strict(b'{"a":{"id":1},"b":{"id":1}}') == {"a": {"id": 1}, "b": {"id": 1}}


# --- numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize("lexeme", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_400(lexeme: str) -> None:
    error = refused(b'{"valueDecimal":' + lexeme.encode() + b"}")
    assert error.status == 400
    assert lexeme in error.issues[0].diagnostics
    assert "line 1 column 17" in error.issues[0].diagnostics


def test_nan_inside_a_string_is_just_text() -> None:
    assert parse_strict(b'{"text":"NaN Infinity 1e999 [[[["}') == {
        "text": "NaN Infinity 1e999 [[[["
    }


def test_five_thousand_digit_integer_is_400_without_conversion() -> None:
    started = time.perf_counter()
    error = refused(b'{"total":' + b"7" * 5000 + b"}")
    assert error.status == 400
    assert "5000 significant digits" in error.issues[0].diagnostics
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("literal", "ok"),
    [
        ("123456789012345678", True),  # 18 digits
        ("1234567890123456789", False),  # 19
        ("-123456789012345678", True),
        ("12345678901234567.8", True),
        ("1234567890123456.789", False),
        ("0.000000000000000001", True),  # one significant digit
        ("120.00", True),
        ("1e308", True),
        ("1e309", False),
        ("1E-308", True),
        ("1e-400", False),
        ("1e99999999999999999999", False),
        ("0e-5000", False),
        ("0.5e-307", True),
        ("0", True),
        ("-0.0", True),
    ],
)
def test_number_literal_limits(literal: str, ok: bool) -> None:
    assert (number_problem(literal) is None) is ok
    body = b'{"v":' + literal.encode() + b"}"
    if ok:
        parse_strict(body)
    else:
        assert refused(body).status == 400


def test_decimals_keep_their_lexical_precision() -> None:
    doc = parse_strict(b'{"a":120.00,"b":0.80,"c":96,"d":1.5e3,"e":-0.0}')
    assert doc["a"] == Decimal("120.00") and str(doc["a"]) == "120.00"
    assert str(doc["b"]) == "0.80"
    assert doc["c"] == 96 and isinstance(doc["c"], int)
    assert isinstance(doc["d"], Decimal)
    assert str(doc["e"]) == "-0.0"


def test_all_bad_numbers_reported_together() -> None:
    body = b'{"a":' + b"1" * 30 + b',"b":NaN,"c":1e999}'
    error = refused(body)
    assert len(error.issues) == 3


# --- depth --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b'{"a":' + b"[" * 10_000,  # unbalanced as well
        b"[{" * 5_000,
    ],
    ids=["arrays", "objects", "unbalanced", "mixed"],
)
def test_deep_nesting_is_400_without_recursion(body: bytes) -> None:
    started = time.perf_counter()
    error = refused(body)
    assert error.status == 400
    assert "nesting deeper than 64" in error.issues[0].diagnostics
    assert time.perf_counter() - started < 2.0


def test_depth_limit_is_exact() -> None:
    limit = IntakeLimits().max_depth
    inside = b'{"a":' * (limit - 1) + b"[]" + b"}" * (limit - 1)
    assert isinstance(parse_strict(inside), dict)
    over = b'{"a":' * limit + b"[]" + b"}" * limit
    assert refused(over).status == 400


def test_brackets_inside_strings_do_not_count() -> None:
    body = b'{"a":"' + b"[{" * 10_000 + b'"}'
    assert parse_strict(body)["a"].startswith("[{[{")


def test_escaped_quotes_do_not_end_a_string() -> None:
    body = b'{"a":"\\"[[[[\\\\","b":[1]}'
    assert parse_strict(body) == {"a": '"[[[[\\', "b": [1]}


# --- surrogates ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":"\\ud800"}',
        b'{"a":"x\\udfffy"}',
        b'{"a":"\\ude00\\ud83d"}',  # reversed pair
        b'{"\\ud800":1}',
        b'{"a":[{"b":"\\uDBFF"}]}',
    ],
)
def test_lone_surrogates_are_400(body: bytes) -> None:
    error = refused(body)
    assert error.status == 400
    assert "surrogate" in error.issues[0].diagnostics
    assert "$" in error.issues[0].diagnostics


def test_surrogate_pairs_are_characters() -> None:
    assert parse_strict(b'{"a":"\\ud83d\\ude00"}') == {"a": "\U0001f600"}
    assert parse_strict('{"a":"\U0001f600 ü 中"}'.encode()) == {"a": "\U0001f600 ü 中"}


def test_escaped_backslash_before_u_is_not_a_surrogate() -> None:
    assert parse_strict(b'{"a":"\\\\ud800"}') == {"a": "\\ud800"}


# --- real files ---------------------------------------------------------------------------


def test_nphies_tab_indented_crlf_files_parse() -> None:
    folder = VECTORS / "fhir" / "nphies"
    if not folder.is_dir():
        pytest.skip(f"public test vectors not present at {VECTORS}")
    files = sorted(folder.glob("*.json"))
    assert files
    for path in files:
        raw = path.read_bytes()
        assert b"\r\n" in raw
        assert parse_strict(raw)["resourceType"] == "Bundle"


def test_fhir_edge_files_start_with_a_bom() -> None:
    folder = VECTORS / "fhir-edge"
    if not folder.is_dir():
        pytest.skip(f"public test vectors not present at {VECTORS}")
    for path in sorted(folder.glob("*.json")):
        error = refused(path.read_bytes())
        assert error.status == 400
        assert "remove the byte order mark" in error.issues[0].diagnostics
        assert parse_strict(path.read_bytes()[3:])["resourceType"] == "Bundle"


# --- properties ---------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**18) + 1, max_value=10**18 - 1)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_intake_error(body: bytes) -> None:
    try:
        doc = parse_strict(body)
    except IntakeError as error:
        assert error.status in (400, 413)
        assert_outcome(error)
    else:
        assert isinstance(doc, dict)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_valid_json_objects_round_trip(value: Any) -> None:
    body = json.dumps({"v": value}).encode()
    try:
        doc = parse_strict(body)
    except IntakeError as error:
        # only lone surrogates from st.text() may be refused
        assert "surrogate" in error.issues[0].diagnostics
    else:
        assert doc == {"v": value}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ['{"a":', "[", "]", "}", ",", '"x"', "1", "1e999", "NaN", ":", " ", '"\\ud800"']
        ),
        max_size=60,
    )
)
def test_json_shaped_noise_never_escapes(parts: list[str]) -> None:
    try:
        parse_strict("".join(parts).encode())
    except IntakeError as error:
        assert error.status == 400


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=65, max_value=3000), st.sampled_from(["[", '{"k":']))
def test_any_depth_over_the_limit_is_refused(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    body = (opener * depth + "0" + closer * depth).encode()
    if opener == "[":
        body = b'{"a":' + body + b"}"
    assert refused(body).status == 400
