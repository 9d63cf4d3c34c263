"""A Bundle is checked, indexed and summarised for every kind of content it carries.

The ledger files a Bundle under one kind (exchange.intake.kind.derive_kind: any Consent makes
it ``consent``, any Invoice or Claim ``settlement``). The pack checks, the recall index and the
IPS follow the resource types present instead: an administration that travels with its
Invoice is still an administration, a discharge that carries the patient's Consent is still
a discharge.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle as R4BBundle
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.ips import build_ips, contributes
from adapters.ips_json import dumps
from adapters.rwd_identity import (
    carries_rwd,
    check_rwd_bundle,
    checks_for,
    pack_identities,
    recall_identities,
)
from adapters.trace_export import rwd_export
from adapters.trace_fhir import FMA_EXT
from adapters.trace_index import RecallIndex, recall_query
from exchange.intake.kind import derive_kind

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MED = "Bundle.entry[7].resource"  # the Medication of the administration fixture
PATIENT = "Patient/pt-ru-01"
NOW = datetime.fromisoformat("2026-11-28T10:00:00+08:00")

# Resources that make a Bundle another kind and say nothing about packs.
INVOICE = {
    "resourceType": "Invoice",
    "id": "inv-2026-1120",
    "status": "issued",
    "subject": {"reference": PATIENT},
    "date": "2026-11-20T17:00:00+08:00",
    "totalGross": {"value": 48600.00, "currency": "CNY"},
}
CLAIM = {
    "resourceType": "Claim",
    "id": "claim-2026-1120",
    "status": "active",
    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type",
                         "code": "institutional"}]},
    "use": "claim",
    "patient": {"reference": PATIENT},
    "created": "2026-11-20T17:00:00+08:00",
    "provider": {"reference": "Organization/org-hospital"},
    "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority",
                             "code": "normal"}]},
    "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "travel cover"}}],
}  # fmt: skip
CONSENT = {
    "resourceType": "Consent",
    "id": "consent-2026-1120",
    "status": "active",
    "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                          "code": "patient-privacy"}]},
    "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
    "patient": {"reference": PATIENT},
    "dateTime": "2026-11-20T08:30:00+08:00",
    "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                               "code": "OPTIN"}]},
}  # fmt: skip
EXTRAS = {"Invoice": INVOICE, "Claim": CLAIM, "Consent": CONSENT}


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def administration() -> dict[str, Any]:
    return load("trace/lecheng-rwd-administration.json")


def with_entries(doc: dict[str, Any], *resources: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    for resource in resources:
        out["entry"].append({"resource": copy.deepcopy(resource)})
    return out


def lose_the_lot(doc: dict[str, Any]) -> dict[str, Any]:
    """The Lecheng RWD fixture with its lot removed (from the batch and the trace code)."""
    med = doc["entry"][7]["resource"]
    del med["batch"]["lotNumber"]
    del med["extension"][1]
    return doc


def errors(issues: list[Any]) -> list[tuple[str, str | None]]:
    return [(i.code, i.expression) for i in issues if i.severity == "error"]


# -- the pack checks -------------------------------------------------------------------------------


def test_rwd_with_an_invoice_is_filed_as_settlement_and_still_checked() -> None:
    bad = lose_the_lot(administration())
    mixed = with_entries(bad, INVOICE)
    R4BBundle.model_validate(mixed)  # a valid R4 Bundle, not a made-up shape
    assert derive_kind(bad) == "rwd"
    assert derive_kind(mixed) == "settlement"  # filed under the bills it also carries ...
    assert carries_rwd(mixed)
    # ... and refused for the lot it lost, at the same place as without the Invoice.
    assert errors(checks_for(mixed)) == [("required", f"{MED}.batch.lotNumber")]
    assert checks_for(mixed) == checks_for(bad) == check_rwd_bundle(bad)


def test_rwd_with_a_consent_is_filed_as_consent_and_still_checked() -> None:
    doc = administration()
    subs = doc["entry"][7]["resource"]["extension"][0]["extension"]
    subs[:] = [s for s in subs if s["url"] != "importApproval"]
    mixed = with_entries(doc, CONSENT)
    assert derive_kind(mixed) == "consent"
    assert errors(checks_for(mixed)) == [
        ("required", f"{MED}.extension[0].extension('importApproval')")
    ]


EXTRA_TYPES = st.lists(st.sampled_from(sorted(EXTRAS)), max_size=4)
BREAKAGES = {
    "none": lambda doc: doc,
    "lot": lose_the_lot,
    "gtin": lambda doc: (
        doc["entry"][7]["resource"]["code"]["coding"][0].update(code="00312345678907") or doc
    ),
    "approval": lambda doc: doc["entry"][9]["resource"]["extension"][0]["extension"].pop(3) and doc,
}


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(BREAKAGES)), EXTRA_TYPES)
def test_what_a_bundle_also_carries_changes_no_check_and_no_identity(
    breakage: str, extras: list[str]
) -> None:
    # Whatever bills and consents ride along, the issues and the recall identities of the
    # administration are the ones it has alone: the checks follow content, not kind.
    alone = BREAKAGES[breakage](administration())
    mixed = with_entries(alone, *(EXTRAS[name] for name in extras))
    assert checks_for(mixed) == checks_for(alone)
    assert recall_identities(mixed) == recall_identities(alone) == pack_identities(alone)
    assert bool(errors(checks_for(mixed))) == (breakage != "none")


def test_a_bundle_without_rwd_content_is_not_checked_or_indexed() -> None:
    patient = administration()["entry"][0]["resource"]
    consent_only = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": patient}, {"resource": CONSENT}],
    }
    assert not carries_rwd(consent_only) and checks_for(consent_only) == []
    # A clinical record's medication list, without a use and without a special import: the
    # pack checks are not its business (a Medication alone is no use of a pack).
    record = administration()
    record["entry"] = [
        e
        for e in record["entry"]
        if e["resource"]["resourceType"] not in ("MedicationAdministration", "Device", "Procedure")
    ]
    med = record["entry"][7]["resource"]
    med["extension"] = [e for e in med["extension"] if e["url"] != FMA_EXT]
    med["code"]["coding"][0]["code"] = "00312345678907"
    assert not carries_rwd(record)
    assert checks_for(record) == [] and recall_identities(record) == []
    # The same Medication named as a special import is checked wherever it travels.
    med["extension"].insert(0, administration()["entry"][7]["resource"]["extension"][0])
    assert carries_rwd(record)
    assert ("value", f"{MED}.code.coding[0].code") in errors(checks_for(record))


def test_a_valid_mixed_bundle_is_found_by_the_recall_and_the_export() -> None:
    mixed = with_entries(administration(), INVOICE, CLAIM)
    assert derive_kind(mixed) == "settlement" and checks_for(mixed) == []
    index = RecallIndex()
    index.add(7, "org-hospital", recall_identities(mixed))
    assert index.query("00312345678906", lot="AB12C34") == [7]
    assert index.query(approval="琼特药审〔2026〕0158号") == [7]
    assert index.query(cn_code="83741290012345678901") == [7]
    data = json.dumps(mixed, ensure_ascii=False, indent=2).encode()
    assert rwd_export([(7, data)], recall_query(approval="琼特械审[2026]0211号")).count(b"\n") == 1
    # ... and it is in the patient's summary: its Procedure is listed, the Invoice is not.
    assert contributes(mixed)
    ips = build_ips([mixed], now=NOW, document_id="ips-mixed")
    sections = {s["code"]["coding"][0]["code"]: s for s in ips["entry"][0]["resource"]["section"]}
    assert len(sections["47519-4"]["entry"]) == 1
    assert "Invoice" not in {e["resource"]["resourceType"] for e in ips["entry"]}


# -- the summary -----------------------------------------------------------------------------------


def continuity(consent: bool) -> list[dict[str, Any]]:
    inpatient = load("continuity/boao-kr-inpatient-record.json")
    discharge = load("continuity/boao-kr-discharge-meds.json")
    if consent:
        patient = next(e for e in discharge["entry"] if e["resource"]["resourceType"] == "Patient")
        discharge["entry"].append(
            {
                "fullUrl": "urn:uuid:0c9a6e11-5b7d-4f2a-8e3c-1d2e3f4a5bff",
                "resource": {**CONSENT, "patient": {"reference": patient["fullUrl"]}},
            }
        )
    return [inpatient, discharge]


def test_a_discharge_that_carries_a_consent_stays_in_the_summary() -> None:
    inpatient, discharge = continuity(consent=True)
    R4BBundle.model_validate(discharge)
    assert derive_kind(discharge) == "consent"
    assert contributes(discharge) and contributes(inpatient)
    with_consent = build_ips([inpatient, discharge], now=NOW, document_id="ips-1")
    without = build_ips(continuity(consent=False), now=NOW, document_id="ips-1")
    # The Consent is listed nowhere and changes nothing; the discharge medication is there.
    assert dumps(with_consent) == dumps(without)
    medications = next(
        s
        for s in with_consent["entry"][0]["resource"]["section"]
        if s["code"]["coding"][0]["code"] == "10160-0"
    )
    assert len(medications["entry"]) >= 3


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        (["Consent"], False),
        (["Invoice", "Claim"], False),
        (["Invoice", "Procedure"], True),
        (["Consent", "Observation"], True),
        (["MedicationAdministration"], False),  # no IPS section lists an administration
    ],
)
def test_what_the_summary_reads_is_decided_by_content(resources: list[str], expected: bool) -> None:
    source = {e["resource"]["resourceType"]: e["resource"] for e in administration()["entry"]}
    source.update(EXTRAS)
    source["Observation"] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": PATIENT},
        "valueQuantity": {"value": 72, "unit": "/min"},
    }
    doc = {"resourceType": "Bundle", "type": "collection",
           "entry": [{"resource": source[t]} for t in resources]}  # fmt: skip
    assert contributes(doc) is expected
    assert contributes(with_entries(administration(), INVOICE))  # its Procedure
    assert not contributes([]) and not contributes({"entry": "x"})
