"""Bounded reading of what a verifier must not trust: files, streams, server answers, JSON.

Every byte `medledger verify`, `audit` and `verify-evidence` take from outside passes through
here before any parser sees it. Reads stop at a size cap, so an endless stream or an enormous
file costs at most the cap. JSON is read strictly and within bounds:

  - at most `limit` bytes of UTF-8, without a byte order mark;
  - nesting at most `max_depth` levels (MAX_DEPTH unless given), measured on the text before
    json.loads runs, so the parser's recursion never meets a hostile document;
  - numbers are integers of at most 20 digits (a uint64), turned into int only once measured:
    the formats read here carry only strings and integers, and int() of a 5,000-digit literal
    is an error of its own (Python's int_max_str_digits);
  - no NaN or Infinity, no duplicate object keys, no unpaired UTF-16 surrogate escapes.

Everything refused raises InputRejected, a ValueError whose message says which bound or rule
the input broke. Standard library only.
"""

from __future__ import annotations

import base64
import json
import re
from itertools import accumulate
from pathlib import Path
from typing import Any, BinaryIO

MAX_DEPTH = 16
"""No format read here nests deeper than 4 levels."""

MAX_INT_DIGITS = 20
"""A uint64 has at most 20 decimal digits; tree sizes and indexes are uint64."""

_UINT64 = 1 << 64


class InputRejected(ValueError):
    """The input breaks a bound or a rule of this module; the message says which."""


# --- bytes -----------------------------------------------------------------------------------


def read_stream(stream: BinaryIO, limit: int) -> bytes:
    """At most `limit` bytes of `stream`; InputRejected when it holds more (not read further)."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise InputRejected(f"more than {limit:,} bytes (the limit for it)")
    return data


def read_file(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of the file; raises InputRejected beyond it, OSError as usual."""
    with path.open("rb") as f:
        return read_stream(f, limit)


# --- numbers in text formats -----------------------------------------------------------------


def read_uint64(text: str) -> int:
    """A decimal of at most 20 digits, without sign or leading zeros, below 2^64."""
    if not (text.isascii() and text.isdigit()) or (text != "0" and text[0] == "0"):
        raise InputRejected(f"{_show(text)} is not a decimal without leading zeros")
    if len(text) > MAX_INT_DIGITS or int(text) >= _UINT64:
        raise InputRejected(f"{_show(text)} is larger than 2^64 - 1")
    return int(text)


# --- values inside a JSON document ----------------------------------------------------------


def read_uint(value: object, what: str) -> int:
    """A JSON integer >= 0 (not a boolean), as read_json returns one; `what` names it."""
    if type(value) is not int or value < 0:
        raise InputRejected(f"{what} must be a non-negative integer")
    return value


def read_base64(value: object, what: str, *, size: int | None = None, empty: bool = False) -> bytes:
    """The bytes of a standard base64 string (RFC 4648 section 4: its alphabet and padding
    only), `size` of them when given, or none at all when `empty` allows it."""
    if not isinstance(value, str):
        raise InputRejected(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error, or a plain ValueError for non-ASCII text
        raise InputRejected(f"{what} is not base64") from None
    if size is not None and len(raw) != size and not (empty and raw == b""):
        raise InputRejected(f"{what} must be a {size}-byte hash")
    return raw


def _show(text: str) -> str:
    return repr(text) if len(text) <= 40 else f"{text[:20]!r}...({len(text):,} characters)"


# --- JSON ------------------------------------------------------------------------------------

# A string (the closing quote optional, so an unterminated string swallows the rest instead of
# exposing its contents as structure); the unrolled loop never backtracks.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# Only \u escapes can make a lone surrogate: the UTF-8 decoder refuses encoded ones.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def read_json(data: bytes, limit: int, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of `data`, read within the bounds of the module docstring."""
    if len(data) > limit:
        raise InputRejected(f"{len(data):,} bytes, more than the {limit:,} allowed")
    if data.startswith(b"\xef\xbb\xbf"):
        raise InputRejected("starts with a byte order mark, which JSON forbids")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputRejected(f"not UTF-8 (byte {e.start:,}: {e.reason})") from None
    if text.count("[") + text.count("{") > max_depth:  # else no nesting can be deeper
        brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
        if brackets and max(accumulate(map(_DEPTH_STEP.__getitem__, brackets))) > max_depth:
            raise InputRejected(f"nested deeper than {max_depth} levels")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object,
            parse_int=_int,
            parse_float=_no_fraction,
            parse_constant=_no_constant,
        )
    except json.JSONDecodeError as e:
        raise InputRejected(f"not JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    if _SURROGATE_ESCAPE.search(text):
        _check_surrogates(value)
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InputRejected(f"an object repeats the key {_show(key)}")
            seen.add(key)
    return obj


def _int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise InputRejected(
            f"an integer of {len(literal.lstrip('-')):,} digits (at most {MAX_INT_DIGITS})"
        )
    return int(literal)


def _no_fraction(literal: str) -> Any:
    raise InputRejected(f"the number {_show(literal)} is not an integer")


def _no_constant(literal: str) -> Any:
    raise InputRejected(f"{literal} is not a JSON number")


def _check_surrogates(value: Any) -> None:
    stack = [value]
    while stack:  # iterative: depth is bounded, but no recursion is needed either
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, str) and not v.isascii():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise InputRejected("a string holds an unpaired surrogate escape") from None
