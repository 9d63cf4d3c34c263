"""Public FHIR examples through the API: accepted, read back with the server's identity and
every other byte as submitted, the submitted bytes exactly as Binary, receipts verify.

Single resources (R4 spec examples, Microsoft FHIR server examples, Synthea NDJSON lines)
are wrapped as collection Bundles around their raw bytes, so their lexemes are kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api_helpers import VECTORS, Api, open_api, vector_params, wrap

KIND_OF_TYPE = {
    "Claim": "settlement",
    "ClaimResponse": "settlement",
    "ExplanationOfBenefit": "settlement",
    "Invoice": "settlement",
    "Consent": "consent",
    "MedicationAdministration": "rwd",
    "AdverseEvent": "rwd",
}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with open_api(tmp_path / "data") as a:
        yield a


def round_trip(api: Api, body: bytes) -> dict:
    """POSTs, checks 201, both reads back and the receipt; returns the answer."""
    headers = api.credential()
    r = api.post(body, headers)
    assert r.status_code == 201, r.text[:1000]
    answer = r.json()
    api.read_back(r.headers["location"], headers, body)
    api.check_receipt(answer, body)
    return answer


@pytest.mark.parametrize("path", vector_params("fhir/ips") + vector_params("fhir/nphies"))
def test_bundles_as_published(api: Api, path: Path) -> None:
    answer = round_trip(api, path.read_bytes())
    # NPHIES messages carry Claims; the minimal IPS lists a MedicationStatement.
    expected = {"bundle-minimal.json": "rwd", "bundle-no-info-required-sections.json": "record"}
    assert answer["kind"] == expected.get(path.name, "settlement")


@pytest.mark.parametrize(
    "path", vector_params("fhir/r4/spec-4.0.1") + vector_params("fhir/r4/fhir-server")
)
def test_r4_examples_wrapped(api: Api, path: Path) -> None:
    raw = path.read_bytes()
    answer = round_trip(api, wrap([raw]))
    resource_type = path.name.split("-")[0]
    if resource_type in KIND_OF_TYPE:
        assert answer["kind"] == KIND_OF_TYPE[resource_type]


def test_explanation_of_benefit_keeps_its_money_lexemes(api: Api) -> None:
    path = VECTORS / "fhir" / "r4" / "explanationofbenefit-example.json"
    if not path.is_file():
        pytest.skip(f"public test vectors not present at {VECTORS}")
    body = wrap([path.read_bytes()], identifier="urn:uuid:5f1c0000-0000-4000-8000-00000000eb35")
    for lexeme in (b"120.00", b"0.80", b"96.00"):
        assert lexeme in body
    assert round_trip(api, body)["kind"] == "settlement"


@pytest.mark.parametrize("path", vector_params("fhir/synthea-10", "*.ndjson"))
def test_synthea_resources_wrapped(api: Api, path: Path) -> None:
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    sample = lines[:: max(1, len(lines) // 25)][:25]
    assert round_trip(api, wrap(sample))["kind"] == "record"
