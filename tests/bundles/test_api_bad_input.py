"""Hostile and malformed submissions: each is a 4xx OperationOutcome, none reaches the log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.intake import IntakeLimits
from tests.api_helpers import VECTORS, Api, is_outcome, observation_bundle, open_api, wrap

MAX_BYTES = IntakeLimits().max_bytes


def _entries(n: int) -> bytes:
    entry = b'{"resource":{"resourceType":"Basic","code":{"text":"x"}}}'
    return (
        b'{"resourceType":"Bundle","type":"collection","entry":[' + b",".join([entry] * n) + b"]}"
    )


def _with_status(status: str) -> bytes:
    return observation_bundle().replace(b'"status":"final"', b'"status":"' + status.encode() + b'"')


def _raw_observation(value: str) -> bytes:
    return wrap(
        [
            b'{"resourceType":"Observation","status":"final","code":{"text":"x"},'
            b'"valueQuantity":{"value":' + value.encode() + b"}}"
        ]
    )


# (body, content type, expected status, expected FHIRPath of the first issue or None)
CORPUS: dict[str, tuple[bytes, str | None, int, str | None]] = {
    "empty body": (b"", "application/fhir+json", 400, None),
    "whitespace only": (b" \n\t ", "application/fhir+json", 400, None),
    "top-level array": (b"[]", "application/fhir+json", 400, None),
    "top-level string": (b'"Bundle"', "application/fhir+json", 400, None),
    "XML as FHIR XML": (
        b'<Bundle xmlns="http://hl7.org/fhir"><type value="collection"/></Bundle>',
        "application/fhir+xml",
        415,
        None,
    ),
    "XML sent as JSON": (
        b'<Bundle xmlns="http://hl7.org/fhir"><type value="collection"/></Bundle>',
        "application/fhir+json",
        400,
        None,
    ),
    "not a Bundle": (b'{"hello":1}', "application/fhir+json", 422, "Bundle.resourceType"),
    "a bare resource": (
        b'{"resourceType":"Patient","id":"p1"}',
        "application/fhir+json",
        422,
        "Bundle.resourceType",
    ),
    "10,001 entries": (_entries(10_001), "application/fhir+json", 422, "Bundle.entry"),
    "5,000-digit integer": (
        b'{"resourceType":"Bundle","type":"collection","total":' + b"9" * 5000 + b"}",
        "application/fhir+json",
        400,
        None,
    ),
    "nesting depth 10,000": (b"[" * 10_000 + b"]" * 10_000, "application/fhir+json", 400, None),
    "object nesting depth 10,000": (
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        "application/fhir+json",
        400,
        None,
    ),
    "UTF-8 BOM": (b"\xef\xbb\xbf" + observation_bundle(), "application/fhir+json", 400, None),
    "UTF-16": (observation_bundle().decode().encode("utf-16"), "application/fhir+json", 400, None),
    "invalid UTF-8": (
        observation_bundle().replace(b"final", b"fin\xc3\x28l"),
        "application/fhir+json",
        400,
        None,
    ),
    "duplicate keys": (
        b'{"resourceType":"Bundle","type":"collection","type":"batch"}',
        "application/fhir+json",
        400,
        None,
    ),
    "NaN": (_raw_observation("NaN"), "application/fhir+json", 400, None),
    "Infinity": (_raw_observation("Infinity"), "application/fhir+json", 400, None),
    "-Infinity": (_raw_observation("-Infinity"), "application/fhir+json", 400, None),
    "decimal beyond FHIR's 18 digits": (
        _raw_observation("1234567890.1234567890"),
        "application/fhir+json",
        400,
        None,
    ),
    "exponent beyond a double": (_raw_observation("1e400"), "application/fhir+json", 400, None),
    "lone surrogate": (
        observation_bundle().replace(b'"final"', b'"fin\\ud800al"'),
        "application/fhir+json",
        400,
        None,
    ),
    "trailing garbage": (observation_bundle() + b" x", "application/fhir+json", 400, None),
    "truncated": (observation_bundle()[:-3], "application/fhir+json", 400, None),
    "no content type": (observation_bundle(), None, 415, None),
    "text/plain": (observation_bundle(), "text/plain", 415, None),
    "charset latin-1": (
        observation_bundle(),
        "application/fhir+json; charset=iso-8859-1",
        415,
        None,
    ),
    "FHIR version 3.0": (observation_bundle(), "application/fhir+json; fhirVersion=3.0", 415, None),
    "searchset Bundle": (
        b'{"resourceType":"Bundle","type":"searchset"}',
        "application/fhir+json",
        422,
        "Bundle.type",
    ),
    "unknown status code": (
        _with_status("bogus"),
        "application/fhir+json",
        422,
        "Bundle.entry[0].resource.status",
    ),
    "entry is not a list": (
        b'{"resourceType":"Bundle","type":"collection","entry":{}}',
        "application/fhir+json",
        422,
        "Bundle.entry",
    ),
    "unknown element": (
        observation_bundle().replace(b'"status":"final"', b'"status":"final","colour":"red"'),
        "application/fhir+json",
        422,
        "Bundle.entry[0].resource.colour",
    ),
    "over the size limit": (b" " * (MAX_BYTES + 1), "application/fhir+json", 413, None),
}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with open_api(tmp_path / "data") as a:
        yield a


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_refused_with_an_operation_outcome(api: Api, case: str) -> None:
    body, content_type, status, expression = CORPUS[case]
    r = api.post(body, api.credential(), content_type=content_type)
    assert r.status_code == status, r.text[:500]
    issue = is_outcome(r)["issue"][0]
    if expression is not None:
        assert issue["expression"][0] == expression
    assert api.log_size() == 0 and api.bundle_rows() == 0


def test_a_body_streamed_past_the_limit_is_413(tmp_path: Path) -> None:
    chunk = b" " * 65_536

    def body() -> Iterator[bytes]:  # no Content-Length: the server counts as it reads
        yield b'{"resourceType":"Bundle","type":"collection","entry":[],"x":"'
        for _ in range(40):
            yield chunk

    with open_api(tmp_path / "data", limits=IntakeLimits(max_bytes=1_000_000)) as api:
        headers = {**api.credential(), "Content-Type": "application/fhir+json"}
        r = api.client.post("/fhir/Bundle", content=body(), headers=headers)
        assert r.status_code == 413
        is_outcome(r)
        assert api.log_size() == 0


def test_the_whole_corpus_appends_nothing(api: Api) -> None:
    headers = api.credential()
    statuses = [
        api.post(body, headers, content_type=ct).status_code for body, ct, _, _ in CORPUS.values()
    ]
    assert all(400 <= s < 500 for s in statuses)
    assert api.log_size() == 0 and api.bundle_rows() == 0
    # ... and the log still takes a good submission afterwards.
    assert api.post(observation_bundle(), headers).status_code == 201
    assert api.log_size() == 1


@pytest.mark.parametrize(
    "name",
    [
        "Bundle-Batch.json",
        "Bundle-Transaction.json",
        "Bundle-TransactionWithDuplicateResources.json",
    ],
)
def test_edge_bundles_with_a_bom_are_refused(api: Api, name: str) -> None:
    path = VECTORS / "fhir-edge" / name
    if not path.is_file():
        pytest.skip(f"public test vectors not present at {VECTORS}")
    r = api.post(path.read_bytes(), api.credential())
    assert r.status_code == 400
    is_outcome(r)
    assert api.log_size() == 0
