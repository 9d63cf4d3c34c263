"""exchange.bundles.splice: the server's id and meta set in a resource's bytes, nothing else."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.bundles.splice import splice_identity

SERVER = ("srv-1", "3", "2026-01-01T00:00:00.000Z")

_keys = st.sampled_from(
    ["id", "meta", "type", "entry", "resourceType", "x", "total", "versionId"]
) | st.text(max_size=5)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=6)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=8,
)
_metas = st.dictionaries(
    st.sampled_from(["versionId", "lastUpdated", "profile", "tag", "source"]), _values, max_size=4
)


def _dump(value: Any, ws: str) -> str:
    """JSON with `ws` around every token, and decimals exactly as written (1.500 stays)."""
    if isinstance(value, dict):
        members = (json.dumps(k) + ws + ":" + ws + _dump(v, ws) for k, v in value.items())
        return "{" + ws + ("," + ws).join(members) + ws + "}"
    if isinstance(value, list):
        return "[" + ws + ("," + ws).join(_dump(v, ws) for v in value) + ws + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


@settings(max_examples=300)
@given(
    st.dictionaries(_keys, _values, max_size=5),
    st.none() | _metas,
    st.booleans(),
    st.sampled_from(["", " ", "\n  "]),
)
def test_only_id_and_the_server_meta_change(
    body: dict[str, Any], meta: dict[str, Any] | None, type_first: bool, ws: str
) -> None:
    body.pop("resourceType", None)
    if meta is not None:
        body["meta"] = meta
    doc = {"resourceType": "Bundle", **body} if type_first else {**body, "resourceType": "Bundle"}
    raw = _dump(doc, ws).encode()
    out = splice_identity(raw, *SERVER)

    want = json.loads(raw, parse_float=Decimal)
    submitted_meta = want.get("meta") if isinstance(want.get("meta"), dict) else {}
    kept = {k: v for k, v in submitted_meta.items() if k not in ("versionId", "lastUpdated")}
    want["id"] = SERVER[0]
    want["meta"] = {"versionId": SERVER[1], "lastUpdated": SERVER[2], **kept}
    assert json.loads(out, parse_float=Decimal) == want
    # Every other top-level member survives as text: decimals, spacing, order within it.
    for key, value in doc.items():
        if key not in ("id", "meta"):
            assert (json.dumps(key) + ws + ":" + ws + _dump(value, ws)).encode() in out


def test_decimals_and_other_meta_members_are_kept_as_submitted() -> None:
    raw = (
        b'{"resourceType":"Bundle","id":"client-chosen","meta":{"versionId":"7",'
        b'"profile":["http://example.org/p"],"lastUpdated":"2020-01-01T00:00:00Z"},'
        b'"type":"collection","entry":[{"resource":{"resourceType":"Observation",'
        b'"valueQuantity":{"value":1.50}}}]}'
    )
    out = splice_identity(raw, *SERVER)
    assert out == (
        b'{"resourceType":"Bundle","id":"srv-1","meta":{"versionId":"3",'
        b'"lastUpdated":"2026-01-01T00:00:00.000Z","profile":["http://example.org/p"]},'
        b'"type":"collection","entry":[{"resource":{"resourceType":"Observation",'
        b'"valueQuantity":{"value":1.50}}}]}'
    )


def test_a_resource_without_id_or_meta_gets_both_after_its_type() -> None:
    out = splice_identity(b'{ "type" : "batch", "resourceType" : "Bundle" }', *SERVER)
    assert out == (
        b'{ "type" : "batch", "resourceType" : "Bundle","id":"srv-1","meta":{"versionId":"3",'
        b'"lastUpdated":"2026-01-01T00:00:00.000Z"} }'
    )
