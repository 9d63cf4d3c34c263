"""The strict JSON gate: media type, size, encoding and JSON hygiene, before any FHIR model.

``parse_strict`` refuses what RFC 8259 leaves to implementations and what Python's ``json``
accepts silently: duplicate object keys, NaN and Infinity, unpaired UTF-16 surrogate escapes,
numbers no FHIR decimal can hold, and nesting deep enough to exhaust the interpreter's stack.
Depth and number literals are checked on the text before ``json.loads`` runs, by regular
expressions and iteration (never recursion), so neither the parser's recursion nor ``int()`` on
a huge literal ever meets a hostile document.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal
from itertools import accumulate
from typing import Any

from .outcome import IntakeError, Issue

UTF8_BOM = b"\xef\xbb\xbf"

# FHIR decimals carry at most 18 significant digits (R4 datatypes, "decimal"); 18 digits also
# keep every integer literal inside int64, so int() never meets a long string.
MAX_SIGNIFICANT_DIGITS = 18
# Beyond the IEEE double range no clinical or financial quantity exists, and peers that read
# JSON numbers as doubles would turn such a value into infinity or zero.
MAX_DECIMAL_EXPONENT = 308
# An exponent is converted with int() only when it is this short.
_MAX_EXPONENT_CHARS = 6

_MAX_REPORTED = 20

ACCEPTED_MEDIA_TYPES = frozenset({"application/fhir+json", "application/json"})
# FHIR's mime-type parameter naming the FHIR version (http.html#version-parameter).
ACCEPTED_FHIR_VERSIONS = frozenset({"4.0"})


@dataclass(frozen=True)
class IntakeLimits:
    """Resource limits for one submission.

    ``max_string_chars`` follows the FHIR rule that strings SHALL NOT exceed 1 MiB characters;
    attachments larger than that belong in a Binary/DocumentReference fetched by URL.
    """

    max_bytes: int = 8 * 1024 * 1024
    max_depth: int = 64
    max_entries: int = 10_000
    max_string_chars: int = 1_048_576
    max_issues: int = 100


DEFAULT_LIMITS = IntakeLimits()

# One token of the pre-scan: a string (the closing quote is optional so an unterminated
# string swallows the rest instead of exposing its contents as structure), a bracket, one of
# Python's non-standard constants, or a number-like run. The string branch is the unrolled
# loop form, which never backtracks.
_TOKEN = re.compile(
    r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]|-?Infinity|NaN|-?[0-9][0-9.eE+\-]*',
    re.DOTALL,
)
_NUMBER = re.compile(r"(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE]([+-]?[0-9]+))?")
# Only \u escapes can produce a lone surrogate: the UTF-8 decoder already refuses encoded ones.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def check_media_type(content_type: str | None) -> None:
    """Refuse (415) anything but FHIR JSON in UTF-8.

    Accepted: ``application/fhir+json`` and ``application/json``, with optional parameters;
    ``charset`` must be utf-8 (JSON is UTF-8 by RFC 8259) and ``fhirVersion``, when present,
    must be 4.0 (R4).
    """
    if not isinstance(content_type, str) or not content_type.strip():
        raise IntakeError.one(
            415,
            "not-supported",
            "no Content-Type: send the Bundle as application/fhir+json; charset=utf-8",
        )
    media, *params = content_type.split(";")
    media = media.strip().lower()
    if media not in ACCEPTED_MEDIA_TYPES:
        hint = " (FHIR XML is not accepted)" if "xml" in media else ""
        raise IntakeError.one(
            415,
            "not-supported",
            f"media type {media!r} is not accepted{hint}: send application/fhir+json",
        )
    for param in params:
        name, _, value = param.partition("=")
        name = name.strip().lower()
        value = value.strip().strip('"').strip()
        if name == "charset" and value.lower() not in ("utf-8", "utf8"):
            raise IntakeError.one(
                415,
                "not-supported",
                f"charset {value!r} is not accepted: FHIR JSON is sent as charset=utf-8",
            )
        if name == "fhirversion" and value not in ACCEPTED_FHIR_VERSIONS:
            raise IntakeError.one(
                415,
                "not-supported",
                f"fhirVersion {value!r} is not accepted: this service takes FHIR R4 (4.0)",
            )


def parse_strict(body: bytes, limits: IntakeLimits = DEFAULT_LIMITS) -> Any:
    """Parse a request body as strict JSON whose top level is an object.

    Numbers come back as ``int`` (no fraction or exponent) or ``decimal.Decimal`` (so
    ``120.00`` keeps its precision). Raises only :class:`IntakeError`: 413 when the body
    exceeds ``limits.max_bytes``, 400 for everything else refused here.
    """
    data = _as_bytes(body)
    if len(data) > limits.max_bytes:
        raise IntakeError.one(
            413,
            "too-long",
            f"the body is {len(data)} bytes; the limit is {limits.max_bytes} bytes: "
            "split the Bundle or move attachments out of it",
        )
    text = _decode(data)
    if not text.strip():
        raise IntakeError.one(400, "structure", "the body is empty: send a FHIR JSON Bundle")
    _prescan(text, limits)
    doc, duplicates = _loads(text)
    if duplicates:
        _raise_duplicates(doc)
    if _SURROGATE_ESCAPE.search(text):
        _check_surrogates(doc)
    if not isinstance(doc, dict):
        raise IntakeError.one(
            400,
            "structure",
            f"the top level is a JSON {_json_type(doc)}; it must be a JSON object (a FHIR Bundle)",
        )
    return doc


def _as_bytes(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    raise IntakeError.one(400, "structure", f"the body must be bytes, not {type(body).__name__}")


def _decode(data: bytes) -> str:
    if data.startswith(UTF8_BOM):
        raise IntakeError.one(
            400,
            "structure",
            "the body starts with a UTF-8 byte order mark (EF BB BF), which JSON forbids "
            "(RFC 8259 section 8.1): remove the byte order mark",
        )
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise IntakeError.one(
            400,
            "structure",
            "the body is UTF-16 (it starts with a UTF-16 byte order mark): send UTF-8",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 1].hex()
        raise IntakeError.one(
            400,
            "structure",
            f"the body is not valid UTF-8: byte 0x{bad} at byte offset {exc.start} "
            f"({exc.reason}); send UTF-8 encoded JSON",
        ) from None


def _position(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"line {line} column {column} (character offset {pos})"


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
# Blanks everything between scalar tokens once strings are gone, so str.split() yields the
# number literals (and true/false/null) at C speed.
_BETWEEN_SCALARS = re.compile(r'[\s"{}\[\]:,]+')
_NOT_FINITE = frozenset({"NaN", "Infinity", "-Infinity"})
_LITERALS = frozenset({"true", "false", "null"})
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _prescan(text: str, limits: IntakeLimits) -> None:
    """Check nesting depth and every number literal without recursion or conversion.

    The common case runs at C speed on the text with its strings blanked out; only when that
    finds a problem does the token-by-token scan run again to say where it is.
    """
    skeleton = _STRING.sub('""', text)
    brackets = _NOT_BRACKET.sub("", skeleton)
    too_deep = bool(brackets) and max(accumulate(map(_DEPTH_STEP.__getitem__, brackets))) > (
        limits.max_depth
    )
    if too_deep or any(_numberish_problem(lexeme) for lexeme in _suspicious_scalars(skeleton)):
        _locate_problems(text, limits)


def _suspicious_scalars(skeleton: str) -> list[str]:
    """The scalar tokens that could break a number limit.

    Fewer than 19 characters without an exponent can hold neither 19 significant digits nor a
    magnitude beyond 1e-18, so only longer literals, exponents and non-finite names are kept.
    """
    return [
        lexeme
        for lexeme in _BETWEEN_SCALARS.sub(" ", skeleton).split()
        if len(lexeme) > MAX_SIGNIFICANT_DIGITS
        or lexeme in _NOT_FINITE
        or (("e" in lexeme or "E" in lexeme) and lexeme not in _LITERALS)
    ]


def _numberish_problem(lexeme: str) -> bool:
    return lexeme[0] in "NI" or lexeme.startswith("-I") or number_problem(lexeme) is not None


def _locate_problems(text: str, limits: IntakeLimits) -> None:
    """Scan token by token and raise for the problems found, with their positions."""
    depth = 0
    issues: list[Issue] = []
    for match in _TOKEN.finditer(text):
        lexeme = match.group()
        first = lexeme[0]
        if first == '"':
            continue
        if first in "[{":
            depth += 1
            if depth > limits.max_depth:
                raise IntakeError.one(
                    400,
                    "structure",
                    f"JSON nesting deeper than {limits.max_depth} levels at "
                    f"{_position(text, match.start())}: flatten the document",
                )
        elif first in "]}":
            depth -= 1
        elif first in "NI" or lexeme.startswith("-I"):
            issues.append(_constant_issue(lexeme, _position(text, match.start())))
        else:
            problem = number_problem(lexeme)
            if problem is not None:
                where = _position(text, match.start())
                issues.append(Issue("error", "value", f"at {where}: {problem}", None))
        if len(issues) >= _MAX_REPORTED:
            break
    if issues:
        raise IntakeError(400, issues)


def _constant_issue(lexeme: str, where: str) -> Issue:
    return Issue(
        "error",
        "value",
        f"at {where}: {lexeme} is not a JSON number (RFC 8259); FHIR numbers are finite decimals",
        None,
    )


def number_problem(lexeme: str) -> str | None:
    """Why a JSON number literal cannot be a FHIR number, or None when it can.

    Works on the text alone: a 5,000-digit literal is measured, never converted. Text that is
    not a JSON number at all returns None and is left for the JSON parser to report.
    """
    match = _NUMBER.fullmatch(lexeme)
    if match is None:
        return None
    _, whole, fraction, exponent = match.groups()
    fraction = fraction or ""
    digits = (whole + fraction).lstrip("0")
    shown = lexeme if len(lexeme) <= 40 else f"{lexeme[:20]}...{lexeme[-8:]}"
    if len(digits) > MAX_SIGNIFICANT_DIGITS:
        return (
            f"number {shown} has {len(digits)} significant digits; FHIR decimals allow at "
            f"most {MAX_SIGNIFICANT_DIGITS} (send identifiers and long integers as strings)"
        )
    if exponent is not None and len(exponent.lstrip("+-").lstrip("0")) > _MAX_EXPONENT_CHARS:
        return f"number {shown} has an exponent out of range"
    power = int(exponent) if exponent else 0
    if digits:
        whole_digits = len(whole.lstrip("0"))
        if whole_digits:
            magnitude = power + whole_digits - 1
        else:
            magnitude = power - (len(fraction) - len(fraction.lstrip("0")) + 1)
    else:
        magnitude = power - len(fraction)
    if abs(magnitude) > MAX_DECIMAL_EXPONENT:
        return (
            f"number {shown} is of magnitude 1e{magnitude}; FHIR decimals here are limited "
            f"to magnitudes within 1e-{MAX_DECIMAL_EXPONENT}..1e{MAX_DECIMAL_EXPONENT}"
        )
    return None


class _NumberRefused(Exception):
    """Raised from a json hook; the pre-scan should already have refused the literal."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class _Duplicates(dict):  # type: ignore[type-arg]
    """A JSON object that repeated a key; ``keys_repeated`` names them."""

    keys_repeated: list[str]


def _mark_duplicates(pairs: list[tuple[str, Any]], obj: dict[str, Any]) -> _Duplicates:
    seen: set[str] = set()
    repeated: list[str] = []
    for key, _ in pairs:
        if key in seen and key not in repeated:
            repeated.append(key)
        seen.add(key)
    marked = _Duplicates(obj)
    marked.keys_repeated = repeated
    return marked


def _parse_int(lexeme: str) -> int:
    problem = number_problem(lexeme)
    if problem is not None:
        raise _NumberRefused(problem)
    return int(lexeme)


def _parse_decimal(lexeme: str) -> Decimal:
    problem = number_problem(lexeme)
    if problem is not None:
        raise _NumberRefused(problem)
    return Decimal(lexeme)


def _parse_constant(lexeme: str) -> Any:
    raise _NumberRefused(f"{lexeme} is not a JSON number (RFC 8259)")


def _loads(text: str) -> tuple[Any, bool]:
    """``json.loads`` with strict hooks; also says whether some object repeated a key."""
    repeated: list[_Duplicates] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            marked = _mark_duplicates(pairs, obj)
            repeated.append(marked)
            return marked
        return obj

    try:
        doc = json.loads(
            text,
            object_pairs_hook=hook,
            parse_int=_parse_int,
            parse_float=_parse_decimal,
            parse_constant=_parse_constant,
        )
    except json.JSONDecodeError as exc:
        raise IntakeError.one(400, "structure", _syntax_message(text, exc)) from None
    except _NumberRefused as exc:
        raise IntakeError.one(400, "value", exc.problem) from None
    except RecursionError:
        # Only reachable when a caller raises max_depth beyond what the stack can hold.
        raise IntakeError.one(
            400, "structure", "JSON nesting too deep to parse: flatten the document"
        ) from None
    return doc, bool(repeated)


def _syntax_message(text: str, exc: json.JSONDecodeError) -> str:
    head = text.lstrip()[:1]
    hint = ""
    if head == "<":
        hint = " (this looks like XML: send FHIR JSON)"
    return f"the body is not valid JSON: {exc.msg} ({_position(text, exc.pos)}){hint}"


def _render_path(path: tuple[str | int, ...]) -> str:
    out = ["$"]
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            out.append(f".{part}")
        else:
            out.append(f"[{json.dumps(part)}]")
    return "".join(out)


def _walk(doc: Any) -> list[tuple[Any, tuple[str | int, ...]]]:
    """Every value of ``doc`` with its path, in document order, iteratively."""
    out: list[tuple[Any, tuple[str | int, ...]]] = []
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(doc, ())]
    while stack:
        node, path = stack.pop()
        out.append((node, path))
        if isinstance(node, dict):
            stack.extend((v, (*path, k)) for k, v in reversed(list(node.items())))
        elif isinstance(node, list):
            stack.extend((v, (*path, i)) for i, v in reversed(list(enumerate(node))))
    return out


def _raise_duplicates(doc: Any) -> None:
    issues = [
        Issue(
            "error",
            "duplicate",
            f"the object at {_render_path(path)} repeats the key {key!r}; "
            "JSON object keys must be unique: keep one",
            None,
        )
        for node, path in _walk(doc)
        if isinstance(node, _Duplicates)
        for key in node.keys_repeated
    ]
    raise IntakeError(400, issues[:_MAX_REPORTED])


def _is_lone_surrogate_free(s: str) -> bool:
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_surrogates(doc: Any) -> None:
    issues: list[Issue] = []
    for node, path in _walk(doc):
        if isinstance(node, dict):
            for key in node:
                if not _is_lone_surrogate_free(key):
                    issues.append(_surrogate_issue(f"a key of the object at {_render_path(path)}"))
        elif isinstance(node, str) and not _is_lone_surrogate_free(node):
            issues.append(_surrogate_issue(f"the string at {_render_path(path)}"))
    if issues:
        raise IntakeError(400, issues[:_MAX_REPORTED])


def _surrogate_issue(where: str) -> Issue:
    return Issue(
        "error",
        "value",
        f"{where} holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), which is not "
        "a Unicode character: escape characters outside the BMP as a surrogate pair",
        None,
    )


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"
