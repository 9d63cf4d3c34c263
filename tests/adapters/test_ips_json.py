"""The adapters' canonical JSON writer: what it writes reads back as what was written, with
every decimal's lexeme, for all inputs; what FHIR forbids is refused."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.base import AdaptError
from adapters.ips_json import dumps

_text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))
_decimals = st.decimals(allow_nan=False, allow_infinity=False, places=None)
_scalars = st.none() | st.booleans() | st.integers() | _decimals | _text
_trees = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=30,
)


def _lexemes(value: Any) -> Any:
    """The value with each decimal as its exact text, so 5.20 and 5.2 differ."""
    if isinstance(value, dict):
        return {k: _lexemes(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lexemes(v) for v in value]
    if isinstance(value, Decimal):
        return ("decimal", str(value))
    return value


@given(_trees, st.booleans())
def test_what_is_written_reads_back_the_same(value: Any, compact: bool) -> None:
    written = dumps(value, compact=compact)
    back = json.loads(written, parse_float=Decimal, parse_int=int)
    # An integral decimal (Decimal("5")) is written as 5 and read back as an int.
    assert _lexemes(back) == _lexemes(_ints_as_read(value))
    assert dumps(back, compact=compact) == written


def _ints_as_read(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _ints_as_read(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints_as_read(v) for v in value]
    if isinstance(value, Decimal) and "." not in str(value) and "E" not in str(value).upper():
        return int(str(value))
    return value


@given(st.dictionaries(_text, st.integers(), min_size=1, max_size=8))
def test_keys_are_in_code_point_order_with_resource_type_first(obj: dict[str, int]) -> None:
    obj = {**obj, "resourceType": 1}
    keys = list(json.loads(dumps(obj)))
    assert keys == ["resourceType", *sorted(k for k in obj if k != "resourceType")]


def test_a_decimal_keeps_its_digits() -> None:
    assert dumps({"value": Decimal("5.20"), "n": [Decimal("1E+2")]}, compact=True) == (
        b'{"n":[1E+2],"value":5.20}'
    )


@pytest.mark.parametrize(
    "value",
    [
        {"text": "a\x00b"},
        {"a\x000": 1},
        {"v": Decimal("NaN")},
        {"v": float("inf")},
        {"v": object()},
    ],
)
def test_what_json_or_fhir_cannot_hold_is_refused(value: Any) -> None:
    with pytest.raises(AdaptError):
        dumps(value)
