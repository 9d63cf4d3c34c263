"""JSON in and out of the adapters: strict reading of Bundle bytes, canonical writing of results.

Reading follows RFC 8259 strictly where Python's ``json`` is lax (duplicate keys, NaN, a byte
order mark) and keeps every number's lexeme: FHIR decimals carry their precision in the digits
(FHIR R4 datatypes, "decimal"), so ``5.20`` must leave as ``5.20``, never ``5.2``.

Writing is canonical so that the same input gives the same bytes on every run: UTF-8 without
escapes for non-ASCII text, two-space indentation, ``resourceType`` first and then the keys in
code-point order, a final newline.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from adapters.base import AdaptError

__all__ = ["dumps", "loads_bundle"]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _Duplicate(key)
        obj[key] = value
    return obj


class _Duplicate(Exception):
    pass


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_bundle(data: bytes, where: str) -> dict[str, Any]:
    """Parse one FHIR JSON Bundle; ``where`` names the input in error messages.

    Decimals come back as :class:`decimal.Decimal` so their lexeme survives a round trip.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        raise AdaptError(f"{where}: starts with a byte order mark; FHIR JSON is UTF-8 without one")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AdaptError(f"{where}: not UTF-8 (byte {e.start})") from None
    try:
        doc = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=Decimal,
            parse_constant=_refuse_constant,
        )
    except _Duplicate as e:
        raise AdaptError(f"{where}: duplicate JSON key {e.args[0]!r}") from None
    except (json.JSONDecodeError, ValueError, RecursionError) as e:
        raise AdaptError(f"{where}: not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("resourceType") != "Bundle":
        raise AdaptError(f"{where}: resourceType is not Bundle")
    return doc


# A decimal's lexeme leaves the standard library's encoder as this mark and its digits, in a
# JSON string, and is written back unquoted. FHIR forbids U+0000 in every string (R4
# datatypes, "string"), so no string of a resource can carry the mark: one that does is refused.
_MARK = "\x00"
_MARKED = re.compile(r'"\\u0000([-+.0-9eE]+)"')


def _canonical(value: Any) -> Any:
    """A copy of ``value`` with every object's keys in canonical order and decimals marked,
    for the standard library's (C) encoder to write."""
    if isinstance(value, dict):
        keys = sorted(value)
        if "resourceType" in value:
            keys.remove("resourceType")
            keys.insert(0, "resourceType")
        for k in keys:
            if _MARK in k:
                raise AdaptError("a key holds U+0000, which FHIR JSON forbids")
        return {k: _canonical(value[k]) for k in keys}
    if isinstance(value, (list, tuple)):
        return [_canonical(item) for item in value]
    if isinstance(value, str):
        if _MARK in value:
            raise AdaptError("a string holds U+0000, which FHIR forbids")
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise AdaptError(f"number {value} has no JSON form")
        return _MARK + str(value)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        # A float reaches here only from callers that parsed with the standard library; its
        # shortest repr is the closest lexeme left.
        if value != value or value in (float("inf"), float("-inf")):
            raise AdaptError(f"number {value} has no JSON form")
        return value
    raise AdaptError(f"cannot write {type(value).__name__} as JSON")


def dumps(value: Any, *, compact: bool = False) -> bytes:
    """Canonical JSON: UTF-8, ``resourceType`` first, other keys sorted.

    Pretty (two-space indent, newline at the end) by default; ``compact`` drops all
    insignificant whitespace, for payloads embedded in other messages.
    """
    text = json.dumps(
        _canonical(value),
        ensure_ascii=False,
        indent=None if compact else 2,
        separators=(",", ":") if compact else (",", ": "),
    )
    text = _MARKED.sub(r"\1", text)
    try:
        return (text if compact else text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        raise AdaptError("a string holds an unpaired surrogate; it has no UTF-8 form") from None
