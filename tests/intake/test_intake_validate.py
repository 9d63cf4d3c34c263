"""FHIR validation of submitted Bundles: real examples accepted, each kind of fault located."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.intake import (
    IntakeError,
    IntakeLimits,
    check_bundle,
    parse_strict,
    validate_bundle,
)
from exchange.intake.models import loc_to_fhirpath
from exchange.intake.specs import RESOURCE_TYPES, element_specs
from tests.paths import VECTORS

FHIR_JSON = "application/fhir+json"


def vector_files(folder: str, pattern: str = "*.json") -> list[Any]:
    """Files for parametrization; one skipped case when the vectors are absent."""
    root = VECTORS / folder
    if not root.is_dir():
        reason = f"public test vectors not present at {VECTORS}"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="absent")]
    return [pytest.param(path, id=path.name) for path in sorted(root.glob(pattern))]


def wrap(raws: list[bytes], bundle_type: bytes = b"collection") -> bytes:
    """A collection Bundle around raw resource bytes, so their lexemes (120.00) survive."""
    entries = [
        b'{"fullUrl":"urn:uuid:'
        + str(uuid.UUID(int=i + 1)).encode()
        + b'","resource":'
        + raw
        + b"}"
        for i, raw in enumerate(raws)
    ]
    return (
        b'{"resourceType":"Bundle","type":"'
        + bundle_type
        + b'","entry":['
        + b",".join(entries)
        + b"]}"
    )


def bundle(
    *resources: dict[str, Any], bundle_type: str = "collection", **extra: Any
) -> dict[str, Any]:
    entries = [
        {"fullUrl": f"urn:uuid:{uuid.UUID(int=i + 1)}", "resource": resource}
        for i, resource in enumerate(resources)
    ]
    doc = {"resourceType": "Bundle", "type": bundle_type, **extra}
    if entries:
        doc["entry"] = entries
    return doc


def refusal(doc: Any, limits: IntakeLimits | None = None) -> IntakeError:
    with pytest.raises(IntakeError) as caught:
        validate_bundle(doc, limits or IntakeLimits())
    return caught.value


def expressions(error: IntakeError) -> list[str | None]:
    return [issue.expression for issue in error.issues]


def only_issue(error: IntakeError) -> tuple[int, str, str | None]:
    assert len(error.issues) == 1, error.issues
    issue = error.issues[0]
    return error.status, issue.code, issue.expression


def decimals(value: Any) -> Iterator[Decimal]:
    if isinstance(value, Decimal):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from decimals(item)
    elif isinstance(value, list):
        for item in value:
            yield from decimals(item)


REF = {"reference": "Patient/1"}
CONCEPT = {"text": "x"}
# Smallest valid instance of each resource whose codes intake must enforce.
MINIMAL: dict[str, dict[str, Any]] = {
    "Patient": {"resourceType": "Patient", "gender": "female"},
    "Consent": {
        "resourceType": "Consent",
        "status": "active",
        "scope": CONCEPT,
        "category": [CONCEPT],
        "dateTime": "2024-01-01",  # intake refuses a Consent without one (exchange.consent)
    },
    "Claim": {
        "resourceType": "Claim",
        "status": "active",
        "type": CONCEPT,
        "use": "claim",
        "patient": REF,
        "created": "2024-01-01",
        "provider": REF,
        "priority": CONCEPT,
        "insurance": [{"sequence": 1, "focal": True, "coverage": REF}],
    },
    "ClaimResponse": {
        "resourceType": "ClaimResponse",
        "status": "active",
        "type": CONCEPT,
        "use": "claim",
        "patient": REF,
        "created": "2024-01-01",
        "insurer": REF,
        "outcome": "complete",
    },
    "ExplanationOfBenefit": {
        "resourceType": "ExplanationOfBenefit",
        "status": "active",
        "type": CONCEPT,
        "use": "claim",
        "patient": REF,
        "created": "2024-01-01",
        "insurer": REF,
        "provider": REF,
        "outcome": "complete",
        "insurance": [{"focal": True, "coverage": REF}],
    },
    "Coverage": {
        "resourceType": "Coverage",
        "status": "active",
        "beneficiary": REF,
        "payor": [REF],
    },
    "Invoice": {"resourceType": "Invoice", "status": "issued"},
    "MedicationAdministration": {
        "resourceType": "MedicationAdministration",
        "status": "completed",
        "medicationCodeableConcept": CONCEPT,
        "subject": REF,
        "effectiveDateTime": "2024-01-01",
    },
    "MedicationDispense": {
        "resourceType": "MedicationDispense",
        "status": "completed",
        "medicationCodeableConcept": CONCEPT,
    },
    "MedicationStatement": {
        "resourceType": "MedicationStatement",
        "status": "active",
        "medicationCodeableConcept": CONCEPT,
        "subject": REF,
    },
    "Observation": {"resourceType": "Observation", "status": "final", "code": CONCEPT},
    "Encounter": {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}},
    "Composition": {
        "resourceType": "Composition",
        "status": "final",
        "type": CONCEPT,
        "date": "2024-01-01",
        "author": [REF],
        "title": "t",
    },
    "AdverseEvent": {"resourceType": "AdverseEvent", "actuality": "actual", "subject": REF},
    "PaymentReconciliation": {
        "resourceType": "PaymentReconciliation",
        "status": "active",
        "created": "2024-01-01",
        "paymentDate": "2024-01-01",
        "paymentAmount": {"value": 1, "currency": "CNY"},
    },
}

# (resource type, element, a code of its required value set, whether it is 1..1)
CODED_ELEMENTS = [
    ("Patient", "gender", "unknown", False),
    ("Consent", "status", "entered-in-error", True),
    ("Claim", "status", "cancelled", True),
    ("Claim", "use", "preauthorization", True),
    ("ClaimResponse", "status", "draft", True),
    ("ClaimResponse", "use", "predetermination", True),
    ("ClaimResponse", "outcome", "partial", True),
    ("ExplanationOfBenefit", "status", "entered-in-error", True),
    ("ExplanationOfBenefit", "use", "claim", True),
    ("ExplanationOfBenefit", "outcome", "queued", True),
    ("Coverage", "status", "cancelled", True),
    ("Invoice", "status", "balanced", True),
    ("MedicationAdministration", "status", "not-done", True),
    ("MedicationDispense", "status", "declined", True),
    ("MedicationStatement", "status", "not-taken", True),
    ("Observation", "status", "corrected", True),
    ("Encounter", "status", "entered-in-error", True),
    ("Composition", "status", "amended", True),
    ("AdverseEvent", "actuality", "potential", True),
    ("PaymentReconciliation", "status", "draft", True),
]


# --- acceptance of public examples --------------------------------------------------------


@pytest.mark.parametrize("path", vector_files("fhir/ips"))
def test_ips_documents_accepted(path: Path) -> None:
    intake = check_bundle(path.read_bytes(), FHIR_JSON)
    assert intake.bundle_type == "document"
    assert intake.resource_types[0] == "Composition"
    expected = {"bundle-minimal.json": "rwd", "bundle-no-info-required-sections.json": "record"}
    assert intake.kind == expected[path.name]


@pytest.mark.parametrize("path", vector_files("fhir/nphies"))
def test_nphies_messages_accepted(path: Path) -> None:
    intake = check_bundle(path.read_bytes(), "application/fhir+json; charset=utf-8")
    assert intake.bundle_type == "message"
    assert intake.resource_types[:2] == ["MessageHeader", "Claim"]
    assert intake.kind == "settlement"
    assert intake.patients


def test_prerelease_explanation_of_benefit_accepted_with_its_decimals() -> None:
    path = VECTORS / "fhir" / "r4" / "explanationofbenefit-example.json"
    if not path.is_file():
        pytest.skip(f"public test vectors not present at {VECTORS}")
    intake = check_bundle(wrap([path.read_bytes()]), FHIR_JSON)
    assert intake.kind == "settlement"
    assert intake.resource_types == ["ExplanationOfBenefit"]
    lexemes = {str(number) for number in decimals(intake.doc)}
    assert {"120.00", "0.80", "96.00"} <= lexemes


SPEC_KINDS = {
    "AdverseEvent": "rwd",
    "Claim": "settlement",
    "ClaimResponse": "settlement",
    "Consent": "consent",
    "ExplanationOfBenefit": "settlement",
    "Invoice": "settlement",
    "MedicationAdministration": "rwd",
}


@pytest.mark.parametrize("path", vector_files("fhir/r4/spec-4.0.1"))
def test_spec_examples_accepted(path: Path) -> None:
    intake = check_bundle(wrap([path.read_bytes()]), FHIR_JSON)
    resource_type = path.name.split("-")[0]
    assert intake.resource_types == [resource_type]
    assert intake.kind == SPEC_KINDS[resource_type]


SERVER_KINDS = {
    "auditevent-example.json": "record",
    "claim-example.json": "settlement",
    "claimresponse-example.json": "settlement",
    "consent-example.json": "consent",
    "explanationofbenefit-example.json": "settlement",
    "medicationadministration0301.json": "rwd",
    "provenance-example.json": "record",
}


@pytest.mark.parametrize("path", vector_files("fhir/r4/fhir-server"))
def test_fhir_server_resources_accepted(path: Path) -> None:
    intake = check_bundle(wrap([path.read_bytes()]), FHIR_JSON)
    assert intake.kind == SERVER_KINDS[path.name]


def test_all_spec_examples_in_one_bundle_are_consent() -> None:
    folder = VECTORS / "fhir" / "r4" / "spec-4.0.1"
    if not folder.is_dir():
        pytest.skip(f"public test vectors not present at {VECTORS}")
    raws = [path.read_bytes() for path in sorted(folder.glob("*.json"))]
    intake = check_bundle(wrap(raws), FHIR_JSON)
    assert intake.kind == "consent"
    assert len(intake.resource_types) == len(raws)


@pytest.mark.parametrize("path", vector_files("fhir/synthea-10", "*.ndjson"))
def test_synthea_samples_accepted(path: Path) -> None:
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    sample = lines[:: max(1, len(lines) // 20)][:20]
    intake = check_bundle(wrap(sample), FHIR_JSON)
    assert intake.kind == "record"
    assert intake.resource_types == [path.name.split(".")[0]] * len(sample)


# --- fhir-edge ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", vector_files("fhir-edge"))
def test_edge_bundles_with_bom_are_400(path: Path) -> None:
    with pytest.raises(IntakeError) as caught:
        check_bundle(path.read_bytes(), FHIR_JSON)
    assert caught.value.status == 400
    assert "remove the byte order mark" in caught.value.issues[0].diagnostics


def edge(name: str) -> bytes:
    path = VECTORS / "fhir-edge" / name
    if not path.is_file():
        pytest.skip(f"public test vectors not present at {VECTORS}")
    return path.read_bytes()[3:]


def test_edge_transaction_without_bom_is_accepted() -> None:
    intake = check_bundle(edge("Bundle-Transaction.json"), FHIR_JSON)
    assert intake.bundle_type == "transaction"
    assert intake.kind == "record"
    # DELETE and GET entries carry no resource
    assert len(intake.resource_types) < len(intake.doc["entry"])


def test_edge_batch_repeats_a_full_url() -> None:
    with pytest.raises(IntakeError) as caught:
        check_bundle(edge("Bundle-Batch.json"), FHIR_JSON)
    assert only_issue(caught.value) == (422, "duplicate", "Bundle.entry[4].fullUrl")
    assert "Bundle.entry[2]" in caught.value.issues[0].diagnostics
    assert "bdl-7" in caught.value.issues[0].diagnostics


def test_edge_transaction_with_same_full_url() -> None:
    name = "Bundle-TransactionWithMultipleResourcesWithSameFullUrl.json"
    with pytest.raises(IntakeError) as caught:
        check_bundle(edge(name), FHIR_JSON)
    error = caught.value
    assert error.status == 422
    first = error.issues[0]
    assert (first.code, first.expression) == ("duplicate", "Bundle.entry[1].fullUrl")
    assert "Bundle.entry[0]" in first.diagnostics
    assert ("business-rule", "Bundle.entry[1].request.url") in [
        (issue.code, issue.expression) for issue in error.issues
    ]


def test_edge_transaction_touching_one_resource_twice() -> None:
    with pytest.raises(IntakeError) as caught:
        check_bundle(edge("Bundle-TransactionWithDuplicateResources.json"), FHIR_JSON)
    assert only_issue(caught.value) == (422, "business-rule", "Bundle.entry[5].request.url")
    assert "Bundle.entry[2]" in caught.value.issues[0].diagnostics


# --- not a Bundle -------------------------------------------------------------------------


def test_object_without_resource_type() -> None:
    error = refusal({"hello": 1})
    assert only_issue(error) == (422, "required", "Bundle.resourceType")
    assert "Bundle" in error.issues[0].diagnostics


def test_bare_resource_is_not_a_bundle() -> None:
    error = refusal({"resourceType": "Patient"})
    assert only_issue(error) == (422, "invalid", "Bundle.resourceType")
    assert "wrap it" in error.issues[0].diagnostics


@pytest.mark.parametrize("value", ["Bundel", 5, None, ["Bundle"]])
def test_wrong_resource_type_values(value: Any) -> None:
    error = refusal({"resourceType": value, "type": "collection"})
    assert error.status == 422
    assert expressions(error) == ["Bundle.resourceType"]


@pytest.mark.parametrize("doc", [[], "Bundle", 3, None, True])
def test_non_object_documents_are_422(doc: Any) -> None:
    assert refusal(doc).status == 422


def test_python_values_that_are_not_json_are_400() -> None:
    assert refusal({"resourceType": "Bundle", "x": {1, 2}}).status == 400
    assert refusal({"resourceType": "Bundle", 1: "x"}).status == 400
    assert refusal({"resourceType": "Bundle", "x": float("nan")}).status == 400


def test_deep_python_document_is_400_without_recursion() -> None:
    doc: Any = 1
    for _ in range(100_000):
        doc = [doc]
    assert refusal({"resourceType": "Bundle", "x": doc}).status == 400


# --- Bundle.type and size -----------------------------------------------------------------


def test_missing_type() -> None:
    error = refusal({"resourceType": "Bundle"})
    assert only_issue(error) == (422, "required", "Bundle.type")


def test_unknown_type() -> None:
    error = refusal({"resourceType": "Bundle", "type": "bag"})
    assert only_issue(error) == (422, "code-invalid", "Bundle.type")


@pytest.mark.parametrize(
    "bundle_type", ["transaction-response", "batch-response", "history", "searchset"]
)
def test_server_bundle_types_are_not_submissions(bundle_type: str) -> None:
    error = refusal({"resourceType": "Bundle", "type": bundle_type})
    assert (error.status, error.issues[0].code, error.issues[0].expression) == (
        422,
        "not-supported",
        "Bundle.type",
    )
    assert "server" in error.issues[0].diagnostics


@pytest.mark.parametrize("bundle_type", ["collection", "batch", "transaction"])
def test_empty_bundles_of_submittable_types(bundle_type: str) -> None:
    validate_bundle({"resourceType": "Bundle", "type": bundle_type})


def test_ten_thousand_and_one_entries_refused_fast() -> None:
    entry = {"resource": {"resourceType": "Basic", "code": CONCEPT}}
    doc = {"resourceType": "Bundle", "type": "collection", "entry": [entry] * 10_001}
    started = time.perf_counter()
    error = refusal(doc)
    assert time.perf_counter() - started < 1.0
    assert only_issue(error) == (422, "too-long", "Bundle.entry")
    assert "10001" in error.issues[0].diagnostics


def test_ten_thousand_and_one_entries_through_check_bundle() -> None:
    body = (
        b'{"resourceType":"Bundle","type":"collection","entry":['
        + b",".join([b'{"resource":{"resourceType":"Basic","code":{"text":"x"}}}'] * 10_001)
        + b"]}"
    )
    started = time.perf_counter()
    with pytest.raises(IntakeError) as caught:
        check_bundle(body, FHIR_JSON)
    assert time.perf_counter() - started < 2.0
    assert only_issue(caught.value) == (422, "too-long", "Bundle.entry")


def test_entry_limit_is_configurable() -> None:
    doc = bundle(MINIMAL["Patient"], MINIMAL["Patient"])
    validate_bundle(doc, IntakeLimits(max_entries=2))
    assert only_issue(refusal(doc, IntakeLimits(max_entries=1)))[1] == "too-long"


# --- resources ----------------------------------------------------------------------------


@pytest.mark.parametrize("resource_type", sorted(MINIMAL))
def test_minimal_resources_accepted(resource_type: str) -> None:
    validate_bundle(bundle(MINIMAL[resource_type]))


@pytest.mark.parametrize("name", ["Foo", "patient", "HumanName", "Resource", "DomainResource", ""])
def test_unknown_resource_type(name: str) -> None:
    error = refusal(bundle(MINIMAL["Patient"], {"resourceType": name}))
    assert only_issue(error) == (422, "not-supported", "Bundle.entry[1].resource.resourceType")


def test_r4b_knows_the_r4_resources_intake_classifies() -> None:
    assert {"Consent", "Claim", "AdverseEvent", "MedicationStatement", "Bundle"} <= RESOURCE_TYPES
    assert "HumanName" not in RESOURCE_TYPES


def test_the_resource_types_are_exactly_the_models_resources() -> None:
    """The written-out list is what the R4B models define (importing them all takes seconds,
    which is why intake does not derive it)."""
    from fhir.resources.R4B import fhirtypes, get_fhir_model_class
    from fhir_core.types import FhirBase

    models = [
        get_fhir_model_class(name.removesuffix("Type"))
        for name in fhirtypes.__all__
        if isinstance(getattr(fhirtypes, name), type)
        and issubclass(getattr(fhirtypes, name), FhirBase)
    ]
    assert len(models) > 600  # every model, not the primitives
    derived = {
        model.get_resource_type()
        for model in models
        if model.has_resource_base()
        and model.get_resource_type() not in ("Resource", "DomainResource")
    }
    assert derived == RESOURCE_TYPES


def test_resource_without_resource_type() -> None:
    error = refusal(bundle({"id": "x"}))
    assert only_issue(error) == (422, "required", "Bundle.entry[0].resource.resourceType")


@pytest.mark.parametrize(("resource_type", "element", "good", "required"), CODED_ELEMENTS)
def test_wrong_code(resource_type: str, element: str, good: str, required: bool) -> None:
    resource = dict(MINIMAL[resource_type], **{element: good})
    validate_bundle(bundle(resource))
    resource[element] = "bogus"
    error = refusal(bundle(MINIMAL["Patient"], resource))
    expression = f"Bundle.entry[1].resource.{element}"
    assert only_issue(error) == (422, "code-invalid", expression)
    assert good in error.issues[0].diagnostics


@pytest.mark.parametrize(
    ("resource_type", "element", "good", "required"),
    [row for row in CODED_ELEMENTS if row[3]],
)
def test_missing_required_code(resource_type: str, element: str, good: str, required: bool) -> None:
    resource = {k: v for k, v in MINIMAL[resource_type].items() if k != element}
    error = refusal(bundle(resource))
    assert only_issue(error) == (422, "required", f"Bundle.entry[0].resource.{element}")


@pytest.mark.parametrize(
    ("resource", "element"),
    [
        (dict(MINIMAL["Observation"], valueQuantity={"value": 1}), "valueQuantity"),
        ({"resourceType": "Condition", "subject": REF, "onsetAge": {"value": 1}}, "onsetAge"),
    ],
)
def test_quantity_comparator_codes(resource: dict[str, Any], element: str) -> None:
    """QuantityComparator is a required binding the R4B models do not list."""
    resource[element]["comparator"] = "<="
    validate_bundle(bundle(resource))
    resource[element]["comparator"] = "~"
    error = refusal(bundle(resource))
    assert only_issue(error) == (
        422,
        "code-invalid",
        f"Bundle.entry[0].resource.{element}.comparator",
    )


def test_codes_are_case_sensitive() -> None:
    error = refusal(bundle(dict(MINIMAL["Patient"], gender="Female")))
    assert only_issue(error) == (422, "code-invalid", "Bundle.entry[0].resource.gender")


def test_code_in_a_primitive_array() -> None:
    allergy = {
        "resourceType": "AllergyIntolerance",
        "patient": REF,
        "category": ["food", "drink"],
    }
    error = refusal(bundle(allergy))
    assert only_issue(error) == (422, "code-invalid", "Bundle.entry[0].resource.category[1]")


def test_codes_below_the_resource() -> None:
    patient = {"resourceType": "Patient", "telecom": [{"system": "pager", "value": "1"}]}
    validate_bundle(bundle(patient))
    patient["telecom"][0]["system"] = "carrier-pigeon"
    error = refusal(bundle(patient))
    assert only_issue(error) == (422, "code-invalid", "Bundle.entry[0].resource.telecom[0].system")


def test_all_missing_required_elements_in_one_round() -> None:
    error = refusal(bundle({"resourceType": "Claim", "status": "zz", "use": "claim"}))
    assert error.status == 422
    found = set(expressions(error))
    base = "Bundle.entry[0].resource."
    assert {
        base + name
        for name in ("status", "type", "patient", "created", "provider", "priority", "insurance")
    } == found


@pytest.mark.parametrize(
    ("resource", "expression", "code"),
    [
        ({"active": "true"}, "active", "structure"),
        ({"active": 1}, "active", "structure"),
        ({"birthDate": 19800101}, "birthDate", "structure"),
        ({"multipleBirthInteger": Decimal("1.5")}, "multipleBirthInteger", "structure"),
        ({"multipleBirthInteger": True}, "multipleBirthInteger", "structure"),
        ({"multipleBirthInteger": 2**31}, "multipleBirthInteger", "value"),
        ({"identifier": [{"system": 5}]}, "identifier[0].system", "structure"),
        ({"name": ['{"family":"x"}']}, "name[0]", "structure"),
        ({"name": {"family": "x"}}, "name", "structure"),
        ({"gender": ["male"]}, "gender", "structure"),
        ({"name": []}, "name", "structure"),
        ({"name": [None]}, "name[0]", "structure"),
        ({"gender": None}, "gender", "structure"),
        ({"address": [{}]}, "address[0]", "invalid"),
        ({"id": ""}, "id", "value"),
        ({"nickname": "Bob"}, "nickname", "structure"),
        ({"fhir_comments": ["x"]}, "fhir_comments", "structure"),
        ({"active__ext": {"id": "x"}}, "active__ext", "structure"),
        ({"_nickname": {"id": "x"}}, "nickname", "structure"),
        ({"birthDate": "1980-13-01"}, "birthDate", "value"),
        ({"id": "has space"}, "id", "value"),
        ({"deceasedBoolean": True, "deceasedDateTime": "2020"}, "deceased", "invalid"),
        (
            {
                "contained": [
                    {"resourceType": "Patient", "contained": [{"resourceType": "Patient"}]}
                ]
            },
            "contained[0].contained",
            "invalid",
        ),
        (
            {"contained": [{"resourceType": "HumanName", "family": "x"}]},
            "contained[0].resourceType",
            "not-supported",
        ),
        ({"contained": [[1]]}, "contained[0]", "structure"),
        (
            {"_birthDate": {"extension": [{"url": 5}]}, "birthDate": "1980"},
            "birthDate.extension[0].url",
            "structure",
        ),
        ({"name": [{"given": ["a", None], "_given": [None]}]}, "name[0].given", "structure"),
    ],
)
def test_shape_faults_the_models_would_let_through(
    resource: dict[str, Any], expression: str, code: str
) -> None:
    doc = bundle(dict({"resourceType": "Patient"}, **resource))
    error = refusal(doc)
    assert error.status == 422
    found = [(issue.code, issue.expression) for issue in error.issues]
    assert (code, f"Bundle.entry[0].resource.{expression}") in found


def test_required_choice_element() -> None:
    resource = {k: v for k, v in MINIMAL["MedicationStatement"].items() if not k.startswith("med")}
    error = refusal(bundle(resource))
    assert only_issue(error) == (422, "required", "Bundle.entry[0].resource.medication")
    assert "medicationReference" in error.issues[0].diagnostics


def test_primitive_extensions_are_accepted() -> None:
    patient = {
        "resourceType": "Patient",
        "birthDate": "1980-01-01",
        "_birthDate": {"extension": [{"url": "http://example.org/x", "valueString": "y"}]},
        "name": [
            {
                "given": ["Ann", None],
                "_given": [
                    None,
                    {"extension": [{"url": "http://example.org/y", "valueCode": "z"}]},
                ],
            }
        ],
        "_gender": {
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                    "valueCode": "unknown",
                }
            ]
        },
    }
    validate_bundle(bundle(patient))


def test_nested_bundle_and_parameters_are_walked() -> None:
    inner = bundle({"resourceType": "Patient", "gender": "x"})
    error = refusal(bundle(inner))
    assert only_issue(error) == (
        422,
        "code-invalid",
        "Bundle.entry[0].resource.entry[0].resource.gender",
    )
    parameters = {
        "resourceType": "Parameters",
        "parameter": [{"name": "p", "resource": {"resourceType": "Observation", "code": CONCEPT}}],
    }
    error = refusal(bundle(parameters))
    assert only_issue(error) == (
        422,
        "required",
        "Bundle.entry[0].resource.parameter[0].resource.status",
    )


def test_long_strings() -> None:
    patient = {"resourceType": "Patient", "name": [{"text": "x" * 101}]}
    limits = IntakeLimits(max_string_chars=100)
    error = refusal(bundle(patient), limits)
    assert only_issue(error) == (422, "too-long", "Bundle.entry[0].resource.name[0].text")
    validate_bundle(bundle(patient))


def test_issue_cap() -> None:
    patients = [{"resourceType": "Patient", "gender": "x"} for _ in range(30)]
    error = refusal(bundle(*patients), IntakeLimits(max_issues=10))
    assert len(error.issues) == 11
    assert error.issues[-1].severity == "warning"
    assert error.issues[-1].code == "too-costly"
    assert refusal(bundle(*patients)).issues[29].expression == "Bundle.entry[29].resource.gender"


def test_validation_does_not_change_the_document() -> None:
    doc = bundle(*(copy.deepcopy(resource) for resource in MINIMAL.values()))
    before = copy.deepcopy(doc)
    validate_bundle(doc)
    assert doc == before


# --- Bundle invariants --------------------------------------------------------------------


def test_transaction_entry_without_request() -> None:
    doc = bundle(MINIMAL["Patient"], bundle_type="transaction")
    error = refusal(doc)
    assert only_issue(error) == (422, "required", "Bundle.entry[0].request")
    assert "bdl-3" in error.issues[0].diagnostics


def test_batch_entry_without_request() -> None:
    assert only_issue(refusal(bundle(MINIMAL["Patient"], bundle_type="batch"))) == (
        422,
        "required",
        "Bundle.entry[0].request",
    )


def test_request_needs_method_and_url() -> None:
    doc = bundle(MINIMAL["Patient"], bundle_type="transaction")
    doc["entry"][0]["request"] = {"url": "Patient"}
    assert only_issue(refusal(doc)) == (422, "required", "Bundle.entry[0].request.method")
    doc["entry"][0]["request"] = {"method": "POST"}
    assert only_issue(refusal(doc)) == (422, "required", "Bundle.entry[0].request.url")
    doc["entry"][0]["request"] = {"method": "SEND", "url": "Patient"}
    assert only_issue(refusal(doc)) == (422, "code-invalid", "Bundle.entry[0].request.method")
    doc["entry"][0]["request"] = {"method": "POST", "url": "Patient"}
    validate_bundle(doc)


def test_request_outside_batch_and_transaction() -> None:
    doc = bundle(MINIMAL["Patient"])
    doc["entry"][0]["request"] = {"method": "POST", "url": "Patient"}
    error = refusal(doc)
    assert only_issue(error) == (422, "invalid", "Bundle.entry[0].request")
    assert "bdl-3" in error.issues[0].diagnostics


def test_response_in_a_submission() -> None:
    doc = bundle(MINIMAL["Patient"])
    doc["entry"][0]["response"] = {"status": "201"}
    error = refusal(doc)
    assert only_issue(error) == (422, "invalid", "Bundle.entry[0].response")
    assert "bdl-4" in error.issues[0].diagnostics


def test_response_bundle_without_responses() -> None:
    error = refusal(bundle(MINIMAL["Patient"], bundle_type="batch-response"))
    assert ("required", "Bundle.entry[0].response") in [
        (issue.code, issue.expression) for issue in error.issues
    ]


def test_total_outside_searchset() -> None:
    error = refusal(bundle(MINIMAL["Patient"], total=1))
    assert only_issue(error) == (422, "invalid", "Bundle.total")
    assert "bdl-1" in error.issues[0].diagnostics


def test_search_outside_searchset() -> None:
    doc = bundle(MINIMAL["Patient"])
    doc["entry"][0]["search"] = {"mode": "match"}
    error = refusal(doc)
    assert only_issue(error) == (422, "invalid", "Bundle.entry[0].search")
    assert "bdl-2" in error.issues[0].diagnostics


def test_entry_without_resource() -> None:
    doc = {"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": "urn:uuid:1"}]}
    error = refusal(doc)
    assert only_issue(error) == (422, "required", "Bundle.entry[0].resource")
    assert "bdl-5" in error.issues[0].diagnostics


def test_entry_with_only_a_resource() -> None:
    validate_bundle(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": MINIMAL["Patient"]}],
        }
    )


def test_transaction_delete_and_get_need_no_resource_but_post_does() -> None:
    doc: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "DELETE", "url": "Patient/1"}},
            {"request": {"method": "GET", "url": "Patient?name=x"}},
        ],
    }
    validate_bundle(doc)
    doc["entry"].append({"request": {"method": "POST", "url": "Patient"}})
    assert only_issue(refusal(doc)) == (422, "required", "Bundle.entry[2].resource")


def test_duplicate_full_url() -> None:
    doc = bundle(MINIMAL["Patient"], MINIMAL["Observation"], MINIMAL["Patient"])
    doc["entry"][2]["fullUrl"] = doc["entry"][0]["fullUrl"]
    error = refusal(doc)
    assert only_issue(error) == (422, "duplicate", "Bundle.entry[2].fullUrl")
    assert "Bundle.entry[0]" in error.issues[0].diagnostics


def test_same_full_url_with_different_version_ids() -> None:
    first = dict(MINIMAL["Patient"], meta={"versionId": "1"})
    second = dict(MINIMAL["Patient"], meta={"versionId": "2"})
    doc = bundle(first, second)
    doc["entry"][1]["fullUrl"] = doc["entry"][0]["fullUrl"]
    validate_bundle(doc)
    second["meta"] = {"versionId": "1"}
    assert only_issue(refusal(doc))[2] == "Bundle.entry[1].fullUrl"


def test_version_specific_full_url() -> None:
    doc = bundle(MINIMAL["Patient"])
    doc["entry"][0]["fullUrl"] = "http://example.org/fhir/Patient/1/_history/2"
    error = refusal(doc)
    assert only_issue(error) == (422, "invalid", "Bundle.entry[0].fullUrl")
    assert "bdl-8" in error.issues[0].diagnostics


def document(*resources: dict[str, Any], **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "identifier": {
            "system": "urn:ietf:rfc:3986",
            "value": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0",
        },
        "timestamp": "2024-01-01T00:00:00Z",
    }
    fields.update(extra)
    return bundle(
        *resources, bundle_type="document", **{k: v for k, v in fields.items() if v is not None}
    )


def test_document_rules() -> None:
    validate_bundle(document(MINIMAL["Composition"], MINIMAL["Patient"]))
    error = refusal(document(MINIMAL["Composition"], identifier={"value": "x"}))
    assert only_issue(error) == (422, "required", "Bundle.identifier")
    assert "bdl-9" in error.issues[0].diagnostics
    error = refusal(document(MINIMAL["Composition"], timestamp=None))
    assert only_issue(error) == (422, "required", "Bundle.timestamp")
    assert "bdl-10" in error.issues[0].diagnostics
    error = refusal(document(MINIMAL["Patient"], MINIMAL["Composition"]))
    assert only_issue(error) == (422, "invalid", "Bundle.entry[0].resource")
    assert "bdl-11" in error.issues[0].diagnostics
    error = refusal(document())
    assert only_issue(error) == (422, "invalid", "Bundle.entry")


def test_message_rules() -> None:
    header = {
        "resourceType": "MessageHeader",
        "eventCoding": {"system": "http://example.org/events", "code": "claim"},
        "source": {"endpoint": "http://example.org/source"},
    }
    validate_bundle(bundle(header, MINIMAL["Claim"], bundle_type="message"))
    error = refusal(bundle(MINIMAL["Claim"], header, bundle_type="message"))
    assert only_issue(error) == (422, "invalid", "Bundle.entry[0].resource")
    assert "bdl-12" in error.issues[0].diagnostics


def test_bundle_level_shape() -> None:
    doc = bundle(MINIMAL["Patient"])
    doc["timestamp"] = 20240101
    doc["entry"][0]["fullUrl"] = ["urn:uuid:1"]
    doc["entry"][0]["extra"] = 1
    error = refusal(doc)
    assert set(expressions(error)) == {
        "Bundle.timestamp",
        "Bundle.entry[0].fullUrl",
        "Bundle.entry[0].extra",
    }


def test_issues_from_all_layers_in_one_round() -> None:
    doc = bundle({"resourceType": "Patient", "gender": "x"}, bundle_type="transaction", total=2)
    error = refusal(doc)
    assert set(expressions(error)) == {
        "Bundle.total",
        "Bundle.entry[0].request",
        "Bundle.entry[0].resource.gender",
    }


# --- error locations ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loc", "expression"),
    [
        (("status",), "Bundle.entry[3].resource.status"),
        (("identifier", 0, "system"), "Bundle.entry[3].resource.identifier[0].system"),
        (("_gender", "extension", 0, "url"), "Bundle.entry[3].resource.gender.extension[0].url"),
        (("gender__ext", "extension", 1), "Bundle.entry[3].resource.gender.extension[1]"),
        (
            ("name", 0, "_given", 1, "extension"),
            "Bundle.entry[3].resource.name[0].given[1].extension",
        ),
        (("contained", 0, "root"), "Bundle.entry[3].resource.contained[0]"),
        ((), "Bundle.entry[3].resource"),
    ],
)
def test_pydantic_locations_as_fhirpath(loc: tuple[Any, ...], expression: str) -> None:
    assert loc_to_fhirpath("Bundle.entry[3].resource", loc) == expression


AT_DATE = {"url": "http://example.org/at", "valueDateTime": "2020-13"}


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        ({"resourceType": "Patient", "birthDate": "1980-02-30"}, "birthDate"),
        ({"resourceType": "Patient", "birthDate": "1980-2-3"}, "birthDate"),
        # A time needs its zone (FHIR's dateTime regex; fhir.resources 7.1 let it through).
        (
            {"resourceType": "Patient", "deceasedDateTime": "2020-01-01T10:00:00"},
            "deceasedDateTime",
        ),
        ({"resourceType": "Patient", "meta": {"lastUpdated": "2020-01-01"}}, "meta.lastUpdated"),
        (
            {"resourceType": "Patient", "_birthDate": {"extension": [AT_DATE]}},
            "birthDate.extension[0].valueDateTime",
        ),
        (
            {
                "resourceType": "Patient",
                "name": [{"given": ["a", "b"], "_given": [None, {"extension": [AT_DATE]}]}],
            },
            "name[0].given[1].extension[0].valueDateTime",
        ),
        (
            {"resourceType": "Patient", "contained": [{"resourceType": "Patient", "id": "a b"}]},
            "contained[0].id",
        ),
        (
            {"resourceType": "Parameters", "parameter": [{"name": "p", "valueCode": " x"}]},
            "parameter[0].valueCode",
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "p", "resource": {"resourceType": "Patient", "birthDate": "x"}}
                ],
            },
            "parameter[0].resource.birthDate",
        ),
    ],
)
def test_model_errors_name_their_element(resource: dict[str, Any], expression: str) -> None:
    """What only the models check (dates, instants, ids, codes), at every depth."""
    error = refusal(bundle(MINIMAL["Patient"], resource))
    assert only_issue(error) == (422, "value", f"Bundle.entry[1].resource.{expression}")


def test_ids_longer_than_64_characters() -> None:
    """FHIR R4 ids have at most 64 characters, where the models allow 255."""
    validate_bundle(bundle(dict(MINIMAL["Patient"], id="a" * 64)))
    error = refusal(bundle(dict(MINIMAL["Patient"], id="a" * 65)))
    assert only_issue(error) == (422, "value", "Bundle.entry[0].resource.id")
    assert "64" in error.issues[0].diagnostics
    error = refusal(
        bundle({"resourceType": "Patient", "contained": [MINIMAL["Patient"] | {"id": "b" * 65}]})
    )
    assert only_issue(error) == (422, "value", "Bundle.entry[0].resource.contained[0].id")


def test_operation_outcome_lists_expressions() -> None:
    error = refusal(bundle({"resourceType": "Patient", "gender": "x"}))
    outcome = error.operation_outcome()
    assert outcome == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "code-invalid",
                "diagnostics": error.issues[0].diagnostics,
                "expression": ["Bundle.entry[0].resource.gender"],
            }
        ],
    }


# --- properties ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=25,
)
SOME_TYPES = sorted(
    ["Patient", "Observation", "Consent", "Claim", "Bundle", "Parameters", "Basic", "Foo"]
)


@st.composite
def resource_like(draw: st.DrawFn) -> dict[str, Any]:
    """A resource whose keys are mostly real element names, with arbitrary JSON values."""
    resource_type = draw(st.sampled_from(SOME_TYPES))
    names = sorted(element_specs(resource_type)) if resource_type != "Foo" else ["x"]
    keys = draw(st.lists(st.sampled_from(names) | st.text(max_size=6), max_size=5))
    values = {key: draw(json_values) for key in keys}
    return {"resourceType": resource_type, **values}


@st.composite
def bundle_like(draw: st.DrawFn) -> dict[str, Any]:
    entries = draw(
        st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "resource": resource_like(),
                    "fullUrl": st.sampled_from(["urn:uuid:1", "urn:uuid:2", "x/_history/1"]),
                    "request": json_values,
                    "search": json_values,
                },
            ),
            max_size=4,
        )
    )
    doc: dict[str, Any] = {"resourceType": "Bundle", "entry": entries}
    doc.update(
        draw(
            st.dictionaries(
                st.sampled_from(["type", "total", "identifier", "id", "x"]), json_values, max_size=3
            )
        )
    )
    if draw(st.booleans()):
        doc["type"] = draw(
            st.sampled_from(
                sorted(["collection", "document", "message", "transaction", "batch", "history"])
            )
        )
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json_passes_or_raises_intake_error(doc: Any) -> None:
    try:
        validate_bundle(doc)
    except IntakeError as error:
        assert error.status in (400, 422)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bundle_like())
def test_bundle_shaped_json_passes_or_raises_intake_error(doc: dict[str, Any]) -> None:
    before = copy.deepcopy(doc)
    try:
        validate_bundle(doc)
    except IntakeError as error:
        assert error.status in (400, 422)
        assert error.issues
        json.dumps(error.operation_outcome())
    else:
        validate_bundle(doc)  # accepted again
    assert doc == before


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(sorted(MINIMAL)), min_size=1, max_size=6))
def test_accepted_bundles_are_accepted_again(types: list[str]) -> None:
    doc = bundle(*(copy.deepcopy(MINIMAL[name]) for name in types))
    body = json.dumps(doc).encode()
    first = check_bundle(body, FHIR_JSON)
    second = check_bundle(json.dumps(first.doc).encode(), FHIR_JSON)
    assert first == second
    validate_bundle(parse_strict(body))
