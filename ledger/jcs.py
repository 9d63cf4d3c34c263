"""RFC 8785 JSON Canonicalization Scheme (JCS).

Entries use only strings and integers, but the whole scheme is implemented so the public
RFC 8785 vectors can be checked and so a reader need not wonder which part was left out.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

_MAX_SAFE_INTEGER = 2**53 - 1


class CanonicalizationError(ValueError):
    """The value has no RFC 8785 form (NaN, infinity, a lone surrogate, a foreign type)."""


def canonicalize(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of a JSON value."""
    parts: list[str] = []
    _write(value, parts)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as e:
        raise CanonicalizationError("string holds a lone surrogate") from e


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(serialize_string(value))
    elif isinstance(value, int):
        safe = abs(value) <= _MAX_SAFE_INTEGER
        out.append(str(value) if safe else serialize_number(float(value)))
    elif isinstance(value, float):
        out.append(serialize_number(value))
    elif isinstance(value, dict):
        out.append("{")
        # RFC 8785 section 3.2.3: keys sorted by their UTF-16 code units.
        for i, key in enumerate(sorted(value, key=_utf16_key)):
            if not isinstance(key, str):
                raise CanonicalizationError(f"object key {key!r} is not a string")
            if i:
                out.append(",")
            out.append(serialize_string(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise CanonicalizationError(f"{type(value).__name__} is not a JSON value")


def _utf16_key(key: Any) -> bytes:
    if not isinstance(key, str):
        raise CanonicalizationError(f"object key {key!r} is not a string")
    return key.encode("utf-16-be", "surrogatepass")


def serialize_string(s: str) -> str:
    """RFC 8785 section 3.2.2.2: ECMAScript JSON.stringify string form.

    Python's encoder with ensure_ascii=False escapes exactly the same set (quote, backslash,
    \\b \\f \\n \\r \\t, other controls as lower-case \\u00xx) and nothing else.
    """
    return json.dumps(s, ensure_ascii=False)


def serialize_number(x: float) -> str:
    """RFC 8785 section 3.2.2.3: ECMAScript Number.prototype.toString of an IEEE 754 double."""
    if math.isnan(x) or math.isinf(x):
        raise CanonicalizationError("NaN and Infinity have no JSON form")
    if x == 0:
        return "0"
    if x < 0:
        return "-" + serialize_number(-x)
    # repr() gives the shortest digits that round-trip, as ECMAScript requires.
    sign, digits_t, exp = Decimal(repr(x)).normalize().as_tuple()
    digits = "".join(map(str, digits_t))
    k = len(digits)
    n = k + int(exp)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + digits
    e = n - 1
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
