"""A stored resource as a FHIR read serves it: the server's id and meta spliced into its bytes.

A receipt commits to the bytes a hospital submitted, and those may carry the client's own `id`
or `meta.versionId` (R4 http.html#create: the server ignores both). A read must answer with the
server's values, yet re-serialising the resource would change decimals (`1.50` → `1.5`), key
order and whitespace. So the server edits the text: it drops the top-level `id` member and, in
`meta`, the `versionId` and `lastUpdated` members, then inserts its own right after
`resourceType`. Every other byte of the submission appears unchanged, in order, in the result.

The input is JSON that intake accepted (strict: UTF-8, no duplicate keys, an object at the top),
so the scanner here only has to find member boundaries, not to validate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

_WS = " \t\r\n"


@dataclass(frozen=True)
class _Member:
    """One member of a JSON object: `text[start:end]` is `"key" : value`."""

    key: str
    start: int
    value_start: int
    end: int


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def _string_end(text: str, i: int) -> int:
    """The index just past the JSON string starting at text[i] == '"'."""
    i += 1
    while True:
        c = text[i]
        if c == "\\":
            i += 2
        elif c == '"':
            return i + 1
        else:
            i += 1


def _value_end(text: str, i: int) -> int:
    """The index just past the JSON value starting at text[i]."""
    c = text[i]
    if c == '"':
        return _string_end(text, i)
    if c in "{[":
        depth = 0
        while True:
            c = text[i]
            if c == '"':
                i = _string_end(text, i)
                continue
            if c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
    while i < len(text) and text[i] not in ",}] \t\r\n":
        i += 1
    return i


def _members(text: str, start: int) -> tuple[list[_Member], int]:
    """The members of the object whose '{' is at text[start], and the index of its '}'."""
    out: list[_Member] = []
    i = _skip_ws(text, start + 1)
    if text[i] == "}":
        return out, i
    while True:
        key_end = _string_end(text, i)
        key = json.loads(text[i:key_end])
        v = _skip_ws(text, _skip_ws(text, key_end) + 1)  # past ':'
        end = _value_end(text, v)
        out.append(_Member(key, i, v, end))
        i = _skip_ws(text, end)
        if text[i] == "}":
            return out, i
        i = _skip_ws(text, i + 1)  # past ','


def _without(obj: list[_Member], drop: set[str]) -> list[tuple[int, int]]:
    """Spans of text to cut so the members named in `drop` go, with their commas.

    A run of dropped members goes with the comma after it, up to the next kept member; a run at
    the end goes with the comma before it, from the last kept member's end.
    """
    cuts: list[tuple[int, int]] = []
    n = 0
    while n < len(obj):
        if obj[n].key not in drop:
            n += 1
            continue
        first = n
        while n < len(obj) and obj[n].key in drop:
            n += 1
        if n < len(obj):
            cuts.append((obj[first].start, obj[n].start))
        elif first > 0:
            cuts.append((obj[first - 1].end, obj[n - 1].end))
        else:
            cuts.append((obj[first].start, obj[n - 1].end))
    return cuts


def splice_identity(raw: bytes, resource_id: str, version_id: str, last_updated: str) -> bytes:
    """`raw` with top-level `id`, `meta.versionId` and `meta.lastUpdated` set to the server's.

    Other members of `meta` (profile, security, tag ...) stay as submitted, after the server's
    two; every byte outside the removed members is kept. The result parses to the submission
    with exactly those three values replaced.
    """
    text = raw.decode("utf-8")
    top_open = _skip_ws(text, 0)
    top, _ = _members(text, top_open)
    cuts = _without(top, {"id", "meta"})
    meta = next((m for m in top if m.key == "meta"), None)
    kept_meta = ""
    if meta is not None and text[meta.value_start] == "{":
        inner, _ = _members(text, meta.value_start)
        rest = [m for m in inner if m.key not in ("versionId", "lastUpdated")]
        kept_meta = ",".join(text[m.start : m.end] for m in rest)
    server_meta = (
        '{"versionId":' + json.dumps(version_id) + ',"lastUpdated":' + json.dumps(last_updated)
    )
    server_meta += ("," + kept_meta if kept_meta else "") + "}"
    inserted = '"id":' + json.dumps(resource_id) + ',"meta":' + server_meta
    anchor = next((m for m in top if m.key == "resourceType"), None)

    pieces: list[str] = []
    pos = 0
    for a, b in cuts:
        pieces.append(text[pos:a])
        pos = b
    pieces.append(text[pos:])
    body = "".join(pieces)
    # Where resourceType's value ends in the cut text: cuts before it shift it left.
    if anchor is not None:
        shift = sum(b - a for a, b in cuts if b <= anchor.end)
        at = anchor.end - shift
        return (body[:at] + "," + inserted + body[at:]).encode("utf-8")
    at = top_open + 1
    sep = "," if any(m.key not in ("id", "meta") for m in top) else ""
    return (body[:at] + inserted + sep + body[at:]).encode("utf-8")
