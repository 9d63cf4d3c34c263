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


def _key_order(obj: dict[str, Any]) -> list[str]:
    keys = sorted(obj)
    if "resourceType" in obj:
        keys.remove("resourceType")
        keys.insert(0, "resourceType")
    return keys


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise AdaptError(f"number {value} has no JSON form")
        return str(value)
    if isinstance(value, float):
        # A float reaches here only from callers that parsed with the standard library; its
        # shortest repr is the closest lexeme left.
        text = json.dumps(value, allow_nan=False)
        return text
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    raise AdaptError(f"cannot write {type(value).__name__} as JSON")


def _write(value: Any, indent: int | None, out: list[str]) -> None:
    """Append ``value``; ``indent`` None writes the compact form."""
    if isinstance(value, (dict, list, tuple)) and not value:
        out.append("{}" if isinstance(value, dict) else "[]")
        return
    items: list[tuple[str | None, Any]]
    if isinstance(value, dict):
        items = [(json.dumps(k, ensure_ascii=False), value[k]) for k in _key_order(value)]
        open_, close = "{", "}"
    elif isinstance(value, (list, tuple)):
        items = [(None, item) for item in value]
        open_, close = "[", "]"
    else:
        out.append(_scalar(value))
        return
    out.append(open_)
    for i, (key, item) in enumerate(items):
        if indent is not None:
            out.append("\n" + "  " * (indent + 1))
        if key is not None:
            out.append(key + (": " if indent is not None else ":"))
        _write(item, None if indent is None else indent + 1, out)
        if i < len(items) - 1:
            out.append(",")
    if indent is not None:
        out.append("\n" + "  " * indent)
    out.append(close)


def dumps(value: Any, *, compact: bool = False) -> bytes:
    """Canonical JSON: UTF-8, ``resourceType`` first, other keys sorted.

    Pretty (two-space indent, newline at the end) by default; ``compact`` drops all
    insignificant whitespace, for payloads embedded in other messages.
    """
    out: list[str] = []
    _write(value, None if compact else 0, out)
    if not compact:
        out.append("\n")
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError:
        raise AdaptError("a string holds an unpaired surrogate; it has no UTF-8 form") from None
