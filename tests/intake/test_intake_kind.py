"""Classification of accepted Bundles, and the whole intake pipeline."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from exchange.intake import Intake, IntakeError, IntakeLimits, check_bundle, derive_kind
from tests.paths import VECTORS

FHIR_JSON = "application/fhir+json"


def collection(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": resource} for resource in resources],
    }


def of(*types: str) -> dict[str, Any]:
    return collection(*({"resourceType": name} for name in types))


def vector(relative: str) -> bytes:
    path = VECTORS / relative
    if not path.is_file():
        pytest.skip(f"public test vectors not present at {VECTORS}")
    return path.read_bytes()


# --- derive_kind --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("types", "kind"),
    [
        (["Consent"], "consent"),
        (["Patient", "Consent", "Claim", "AdverseEvent"], "consent"),
        (["Claim"], "settlement"),
        (["ClaimResponse"], "settlement"),
        (["Invoice"], "settlement"),
        (["ExplanationOfBenefit"], "settlement"),
        (["Coverage"], "settlement"),
        (["PaymentReconciliation"], "settlement"),
        (["MedicationAdministration", "Claim"], "settlement"),
        (["MedicationAdministration"], "rwd"),
        (["MedicationStatement"], "rwd"),
        (["MedicationDispense"], "rwd"),
        (["AdverseEvent"], "rwd"),
        (["Patient", "Medication", "AdverseEvent"], "rwd"),
        (["Medication"], "record"),
        (["MedicationRequest"], "record"),
        (["Patient", "Observation", "Condition"], "record"),
        ([], "record"),
    ],
)
def test_kind_priority(types: list[str], kind: str) -> None:
    assert derive_kind(of(*types)) == kind


def test_contained_resources_count() -> None:
    claim = {"resourceType": "Claim", "contained": [{"resourceType": "Consent"}]}
    assert derive_kind(collection(claim)) == "consent"


def test_nested_bundles_do_not_count() -> None:
    assert derive_kind(collection(of("Consent"))) == "record"


@pytest.mark.parametrize(
    "doc",
    [{}, {"entry": "x"}, {"entry": [None, 1, {"resource": []}, {"resource": {"resourceType": 3}}]}],
)
def test_kind_of_anything_else_is_record(doc: dict[str, Any]) -> None:
    assert derive_kind(doc) == "record"


# --- Intake -------------------------------------------------------------------------------


def test_ips_document_summary() -> None:
    body = vector("fhir/ips/bundle-minimal.json")
    source = json.loads(body)
    intake = check_bundle(body, FHIR_JSON)
    assert intake.kind == "rwd"
    assert intake.bundle_type == "document"
    assert intake.identifier == (source["identifier"]["system"], source["identifier"]["value"])
    assert intake.patients == [("urn:oid:2.16.840.1.113883.2.4.6.3", "574687583")]
    assert intake.resource_types == [entry["resource"]["resourceType"] for entry in source["entry"]]


def test_nphies_message_summary() -> None:
    body = vector("fhir/nphies/8 - Claim Institutional Request.json")
    intake = check_bundle(body, FHIR_JSON)
    assert intake.kind == "settlement"
    assert intake.bundle_type == "message"
    assert intake.identifier is None
    assert intake.resource_types.count("Patient") == 2
    assert intake.patients
    assert all(system.startswith("http") for system, _ in intake.patients)


def test_patient_identifiers_deduplicated_and_complete_only() -> None:
    patients = [
        {
            "resourceType": "Patient",
            "identifier": [
                {"system": "urn:oid:1.2", "value": "A"},
                {"value": "no-system"},
                {"system": "urn:oid:1.2", "value": "A"},
            ],
        },
        {"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.3", "value": "B"}]},
        {"resourceType": "Practitioner", "identifier": [{"system": "urn:oid:9", "value": "P"}]},
    ]
    intake = check_bundle(json.dumps(collection(*patients)).encode(), FHIR_JSON)
    assert intake.patients == [("urn:oid:1.2", "A"), ("urn:oid:1.3", "B")]
    assert intake.identifier is None
    assert intake.resource_types == ["Patient", "Patient", "Practitioner"]


def test_intake_is_immutable() -> None:
    intake = check_bundle(json.dumps(of("Patient")).encode(), FHIR_JSON)
    assert isinstance(intake, Intake)
    with pytest.raises(dataclasses.FrozenInstanceError):
        intake.kind = "consent"  # type: ignore[misc]


def test_settlement_example_of_the_spec() -> None:
    body = (
        b'{"resourceType":"Bundle","type":"collection","entry":[{"resource":'
        + vector("fhir/r4/spec-4.0.1/Invoice-example.json")
        + b"}]}"
    )
    assert check_bundle(body, FHIR_JSON).kind == "settlement"


# --- pipeline order -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"not even json", "text/plain", 415),
        (b"not even json", None, 415),
        (b'{"resourceType":"Bundle","type":"collection"}', "application/fhir+xml", 415),
        (b'{"resourceType":"Bundle","type":"collection"}', "application/xml", 415),
        (
            b'{"resourceType":"Bundle","type":"collection"}',
            "application/json; charset=latin-1",
            415,
        ),
        (b"", FHIR_JSON, 400),
        (b"[]", FHIR_JSON, 400),
        (b'{"a":1,"a":1}', FHIR_JSON, 400),
        (b'{"hello":1}', FHIR_JSON, 422),
        (b'{"resourceType":"Bundle","type":"searchset"}', FHIR_JSON, 422),
    ],
)
def test_each_stage_answers_with_its_status(
    body: bytes, content_type: str | None, status: int
) -> None:
    with pytest.raises(IntakeError) as caught:
        check_bundle(body, content_type)
    assert caught.value.status == status
    outcome = caught.value.operation_outcome()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"


def test_body_over_the_limit_is_413_before_parsing() -> None:
    body = b'{"resourceType":"Bundle","type":"collection"}' + b" " * 100
    with pytest.raises(IntakeError) as caught:
        check_bundle(body, FHIR_JSON, IntakeLimits(max_bytes=64))
    assert caught.value.status == 413
    assert check_bundle(body, FHIR_JSON).kind == "record"
