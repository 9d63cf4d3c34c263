"""Genomic data needs a human genetic resources approval named in the Bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exchange.intake import IntakeError, check_bundle
from exchange.intake.genomic import APPROVAL_SYSTEM, genomic_findings
from tests.api_helpers import is_outcome, open_api

PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:example:mrn", "value": "G-1"}],
}
SUBJECT = {"reference": "urn:uuid:00000000-0000-0000-0000-000000000001"}
ATTACHMENT_DOC = {
    "resourceType": "DocumentReference",
    "status": "current",
    "subject": SUBJECT,
    "content": [{"attachment": {"contentType": "text/vcf", "url": "https://h.example/a.vcf"}}],
}
GENOMIC: dict[str, tuple[dict[str, Any], str]] = {
    "molecular-sequence": (
        {"resourceType": "MolecularSequence", "coordinateSystem": 0, "patient": SUBJECT},
        "Bundle.entry[1].resource",
    ),
    "genetics-category": (
        {
            "resourceType": "Observation",
            "status": "final",
            "category": [
                {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "GE"}
                    ]
                }
            ],
            "code": {"text": "BRCA1 variant"},
            "subject": SUBJECT,
        },
        "Bundle.entry[1].resource",
    ),
    "genetic-report-loinc": (
        {
            "resourceType": "DiagnosticReport",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "51969-4"}]},
            "subject": SUBJECT,
        },
        "Bundle.entry[1].resource",
    ),
    "vcf-attachment": (ATTACHMENT_DOC, "Bundle.entry[1].resource.content[0].attachment"),
    "bam-by-name": (
        {
            **ATTACHMENT_DOC,
            "content": [
                {
                    "attachment": {
                        "contentType": "application/octet-stream",
                        "url": "https://h.example/tumour.BAM",
                    }
                }
            ],
        },
        "Bundle.entry[1].resource.content[0].attachment",
    ),
    "contained-sequence": (
        {
            **ATTACHMENT_DOC,
            "content": [{"attachment": {"contentType": "application/pdf"}}],
            "contained": [
                {
                    "resourceType": "MolecularSequence",
                    "id": "seq",
                    "coordinateSystem": 1,
                }
            ],
        },
        "Bundle.entry[1].resource.contained[0]",
    ),
}
NOT_GENOMIC = {
    "vital-sign": {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": SUBJECT,
    },
    "pdf-report": {
        **ATTACHMENT_DOC,
        "content": [{"attachment": {"contentType": "application/pdf", "title": "discharge.pdf"}}],
    },
}


def bundle(resource: dict[str, Any], approval: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": SUBJECT["reference"], "resource": PATIENT},
            {"fullUrl": "urn:uuid:00000000-0000-0000-0000-000000000002", "resource": resource},
        ],
    }
    if approval is not None:
        doc["meta"] = {"tag": [{"system": APPROVAL_SYSTEM, "code": approval}]}
    return doc


def body(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


@pytest.mark.parametrize("case", sorted(GENOMIC))
def test_genomic_data_without_approval_is_refused_where_it_is(case: str) -> None:
    resource, where = GENOMIC[case]
    with pytest.raises(IntakeError) as refused:
        check_bundle(body(bundle(resource)), "application/fhir+json")
    assert refused.value.status == 422
    issue = refused.value.issues[0]
    assert (issue.code, issue.expression) == ("business-rule", where)
    assert APPROVAL_SYSTEM in issue.diagnostics


@pytest.mark.parametrize("case", sorted(GENOMIC))
def test_genomic_data_with_an_approval_is_accepted(case: str) -> None:
    resource, _ = GENOMIC[case]
    checked = check_bundle(body(bundle(resource, "国科遗办审字[2026]1234号")), "application/json")
    assert checked.kind == "record"


@pytest.mark.parametrize("case", sorted(NOT_GENOMIC))
def test_other_data_needs_no_approval(case: str) -> None:
    assert genomic_findings(bundle(NOT_GENOMIC[case])) == []
    check_bundle(body(bundle(NOT_GENOMIC[case])), "application/fhir+json")


def test_a_blank_approval_is_no_approval() -> None:
    resource, _ = GENOMIC["molecular-sequence"]
    with pytest.raises(IntakeError):
        check_bundle(body(bundle(resource, "  ")), "application/fhir+json")


def test_refused_genomic_bundle_appends_nothing(tmp_path: Path) -> None:
    resource, where = GENOMIC["vcf-attachment"]
    with open_api(tmp_path) as api:
        hospital = api.credential()
        r = api.post(body(bundle(resource)), hospital)
        assert r.status_code == 422
        assert is_outcome(r)["issue"][0]["expression"] == [where]
        assert api.log_size() == 0 and api.bundle_rows() == 0
        r = api.post(body(bundle(resource, "HGR-2026-0042")), hospital)
        assert r.status_code == 201, r.text
