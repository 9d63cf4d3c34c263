"""Pack identity of RWD Bundles: the intake's checks (issues with FHIRPath) and the identities.

The fixtures are a Lecheng administration of a specially imported biologic (GS1 pack code and
Chinese trace code, foreign authorisation, batch) with a cochlear implant (UDI carrier), and
the adverse event that followed it.
"""

from __future__ import annotations

import base64
import copy
import json
import unicodedata
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle as R4BBundle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.rwd_identity import Issue, PackIdentity, check_rwd_bundle, pack_identities
from adapters.trace_fhir import FMA_EXT, TRACE_CODE_EXT, normalise_approval
from tests.paths import FIXTURES as TEST_FIXTURES

FIXTURES = TEST_FIXTURES / "trace"
ADMIN = "lecheng-rwd-administration.json"
EVENT = "lecheng-rwd-adverse-event.json"
MED = "Bundle.entry[7].resource"  # the Medication in the administration Bundle
DEV = "Bundle.entry[9].resource"  # the Device


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def entry(doc: dict[str, Any], path: str) -> dict[str, Any]:
    index = int(path.split("[")[1].split("]")[0])
    return doc["entry"][index]["resource"]


def issues_at(issues: list[Issue], expression: str) -> list[tuple[str, str]]:
    return [(i.severity, i.code) for i in issues if i.expression == expression]


# -- the fixtures ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [ADMIN, EVENT])
def test_fixtures_are_r4_bundles_without_issues(name: str) -> None:
    R4BBundle.model_validate_json((FIXTURES / name).read_bytes())
    assert check_rwd_bundle(load(name)) == []


def test_identities_of_the_administration() -> None:
    assert pack_identities(load(ADMIN)) == [
        PackIdentity(
            gtin="00312345678906",
            lot="AB12C34",
            serial="7TK2PQ9R4M1X",
            expiry="2027-06-30",
            path=MED,
            cn_code="83741290012345678901",
            import_approval="琼特药审〔2026〕0158号",
        ),
        PackIdentity(
            gtin="07612345000015",
            lot="L2503A",
            serial="CI24X00571",
            expiry="2030-02-28",
            path=DEV,
            cn_code=None,
            import_approval="琼特械审〔2026〕0211号",
        ),
    ]


def test_identity_of_the_adverse_event_suspect() -> None:
    (identity,) = pack_identities(load(EVENT))
    assert (identity.gtin, identity.lot, identity.serial) == (
        "00312345678906",
        "AB12C34",
        "7TK2PQ9R4M1X",
    )


def test_issue_as_operation_outcome_issue() -> None:
    issue = Issue("error", "value", "bad", "Bundle.entry[0].resource")
    assert issue.as_fhir() == {
        "severity": "error",
        "code": "value",
        "diagnostics": "bad",
        "expression": ["Bundle.entry[0].resource"],
    }


# -- what the intake refuses -------------------------------------------------------------------


def test_bad_gtin_check_digit() -> None:
    doc = load(ADMIN)
    entry(doc, MED)["code"]["coding"][0]["code"] = "00312345678907"
    issues = check_rwd_bundle(doc)
    assert ("error", "value") in issues_at(issues, f"{MED}.code.coding[0].code")


def test_trace_code_and_batch_disagree_on_the_lot() -> None:
    doc = load(ADMIN)
    entry(doc, MED)["batch"]["lotNumber"] = "AB12C35"
    issues = check_rwd_bundle(doc)
    assert issues_at(issues, f"{MED}.extension[1].valueString") == [("error", "business-rule")]
    assert "AB12C35" in issues[0].diagnostics and "(10)AB12C34" in issues[0].diagnostics


def test_trace_code_and_batch_disagree_on_the_expiry() -> None:
    doc = load(ADMIN)
    entry(doc, MED)["batch"]["expirationDate"] = "2027-07-31"
    issues = check_rwd_bundle(doc)
    assert issues_at(issues, f"{MED}.extension[1].valueString") == [("error", "business-rule")]


def test_day_00_expiry_agrees_with_a_month_precision_batch_date() -> None:
    doc = load(ADMIN)
    med = entry(doc, MED)
    med["extension"][1]["valueString"] = "(01)00312345678906(17)270600(10)AB12C34(21)7TK2PQ9R4M1X"
    med["batch"]["expirationDate"] = "2027-06"
    issues = check_rwd_bundle(doc)
    assert [(i.severity, i.code) for i in issues] == [("warning", "value")]  # the 7.12 note
    med["batch"]["expirationDate"] = "2027-06-30"
    assert [i.severity for i in check_rwd_bundle(doc)] == ["warning"]


def test_missing_lot_is_required_for_a_special_import() -> None:
    doc = load(ADMIN)
    med = entry(doc, MED)
    del med["batch"]["lotNumber"]
    del med["extension"][1]  # no trace code left to name it either
    issues = check_rwd_bundle(doc)
    assert issues_at(issues, f"{MED}.batch.lotNumber") == [("error", "required")]


def test_lot_only_in_the_trace_code_must_reach_the_batch() -> None:
    doc = load(ADMIN)
    del entry(doc, MED)["batch"]["lotNumber"]
    issues = check_rwd_bundle(doc)
    assert issues_at(issues, f"{MED}.batch.lotNumber") == [("error", "required")]


def test_swallowed_separator_in_a_stored_scan() -> None:
    doc = load(ADMIN)
    entry(doc, MED)["extension"][1]["valueString"] = "0100312345678906172706301012AB21S1"
    issues = check_rwd_bundle(doc)
    assert issues_at(issues, f"{MED}.extension[1].valueString") == [("error", "value")]
    assert "separator" in issues[0].diagnostics


def test_chinese_code_with_an_unusual_first_digit_is_a_warning() -> None:
    doc = load(ADMIN)
    entry(doc, MED)["extension"][2]["valueString"] = "13741290012345678901"
    assert issues_at(check_rwd_bundle(doc), f"{MED}.extension[2].valueString") == [
        ("warning", "value")
    ]


def test_other_codes_are_a_warning() -> None:
    doc = load(ADMIN)
    entry(doc, MED)["extension"].append({"url": TRACE_CODE_EXT, "valueString": "HOSP-0042"})
    assert issues_at(check_rwd_bundle(doc), f"{MED}.extension[3].valueString") == [
        ("warning", "value")
    ]


@pytest.mark.parametrize(
    ("country", "expected"),
    [
        (None, ("error", "required")),
        ("USA", ("error", "code-invalid")),
        ("CN", ("warning", "business-rule")),
    ],
)
def test_authorisation_country(country: str | None, expected: tuple[str, str]) -> None:
    doc = load(ADMIN)
    subs = entry(doc, MED)["extension"][0]["extension"]
    if country is None:
        subs[:] = [s for s in subs if s["url"] != "country"]
    else:
        subs[1]["valueCodeableConcept"]["coding"][0]["code"] = country
    issues = check_rwd_bundle(doc)
    assert issues_at(issues, f"{MED}.extension[0].extension('country')") == [expected]


def test_authorisation_number_and_holder() -> None:
    doc = load(ADMIN)
    subs = entry(doc, MED)["extension"][0]["extension"]
    subs[:] = [s for s in subs if s["url"] not in ("number", "holder")]
    issues = check_rwd_bundle(doc)
    assert issues_at(issues, f"{MED}.extension[0].extension('number')") == [("error", "required")]
    assert issues_at(issues, f"{MED}.extension[0].extension('holder')") == [
        ("information", "informational")
    ]


@pytest.mark.parametrize("where", [MED, DEV], ids=["medicine", "device"])
@pytest.mark.parametrize("blank", [False, True], ids=["absent", "blank"])
def test_special_import_needs_its_import_approval(where: str, blank: bool) -> None:
    # A product authorised abroad reaches a Lecheng patient only under the pilot zone's
    # special-import approval; without its number the use cannot be traced to the licence.
    doc = load(ADMIN)
    subs = entry(doc, where)["extension"][0]["extension"]
    if blank:
        next(s for s in subs if s["url"] == "importApproval")["valueString"] = "  "
    else:
        subs[:] = [s for s in subs if s["url"] != "importApproval"]
    issues = check_rwd_bundle(doc)
    missing = f"{where}.extension[0].extension('importApproval')"
    assert issues_at(issues, missing) == [("error", "required")]
    assert [i.expression for i in issues if i.severity == "error"] == [missing]
    # The pack is still read, without an approval number to be found by.
    identities = [i for i in pack_identities(doc) if i.path == where]
    assert identities and all(i.import_approval is None for i in identities)


def test_a_domestic_product_needs_no_import_approval() -> None:
    doc = load(ADMIN)
    med = entry(doc, MED)
    med["extension"] = [e for e in med["extension"] if e["url"] != FMA_EXT]
    assert [i for i in check_rwd_bundle(doc) if "importApproval" in (i.expression or "")] == []


@pytest.mark.parametrize(
    "spelling",
    [
        "琼特药审[2026]0158号",
        "琼特药审（2026）0158号",
        "琼特药审【2026】０１５８号",
        " 琼特药审〔2026〕 0158号 ",
    ],
)
def test_approval_numbers_are_read_in_one_spelling(spelling: str) -> None:
    # GB/T 9704 writes the year of a document number in 〔〕; copies typed on other keyboards
    # use other brackets and full-width digits. They name the same approval.
    doc = load(ADMIN)
    subs = entry(doc, MED)["extension"][0]["extension"]
    next(s for s in subs if s["url"] == "importApproval")["valueString"] = spelling
    assert check_rwd_bundle(doc) == []
    assert pack_identities(doc)[0].import_approval == "琼特药审〔2026〕0158号"


@given(st.text(max_size=30))
def test_approval_normalisation_is_idempotent(text: str) -> None:
    try:
        once = normalise_approval(text)
    except ValueError:
        assert not "".join(unicodedata.normalize("NFKC", text).split())
        return
    assert normalise_approval(once) == once
    assert not any(ch.isspace() for ch in once)


def test_special_import_without_gtin() -> None:
    doc = load(ADMIN)
    med = entry(doc, MED)
    med["code"]["coding"] = []
    del med["extension"][1]
    assert ("error", "required") in issues_at(check_rwd_bundle(doc), f"{MED}.code")


def test_gtin_only_in_the_trace_code_must_reach_the_coding() -> None:
    doc = load(ADMIN)
    entry(doc, MED)["code"]["coding"] = []
    assert issues_at(check_rwd_bundle(doc), f"{MED}.code") == [("error", "required")]


def test_two_gtins_for_one_pack() -> None:
    doc = load(ADMIN)
    codings = entry(doc, MED)["code"]["coding"]
    codings.append({"system": "https://www.gs1.org/gtin", "code": "00312345678913"})
    assert issues_at(check_rwd_bundle(doc), f"{MED}.code.coding[1].code") == [
        ("error", "business-rule")
    ]


def test_device_udi_carrier_must_agree_with_the_device() -> None:
    doc = load(ADMIN)
    entry(doc, DEV)["serialNumber"] = "CI24X00572"
    issues = check_rwd_bundle(doc)
    at = f"{DEV}.udiCarrier[0]"
    assert ("error", "business-rule") in issues_at(issues, f"{at}.carrierHRF")
    assert ("error", "business-rule") in issues_at(issues, f"{at}.carrierAIDC")


def test_device_aidc_and_hrf_must_agree() -> None:
    doc = load(ADMIN)
    raw = "0107612345000015112503011730022810L2503B\x1d21CI24X00571"
    entry(doc, DEV)["udiCarrier"][0]["carrierAIDC"] = base64.b64encode(raw.encode()).decode()
    issues = check_rwd_bundle(doc)
    assert ("error", "business-rule") in issues_at(issues, f"{DEV}.udiCarrier[0].carrierAIDC")


def test_device_identifier_must_be_a_gtin() -> None:
    doc = load(ADMIN)
    entry(doc, DEV)["udiCarrier"][0]["deviceIdentifier"] = "07612345000016"
    issues = check_rwd_bundle(doc)
    assert issues_at(issues, f"{DEV}.udiCarrier[0].deviceIdentifier") == [("error", "value")]


def test_special_import_device_needs_a_gs1_udi() -> None:
    doc = load(ADMIN)
    device = entry(doc, DEV)
    del device["udiCarrier"]
    del device["lotNumber"]
    del device["serialNumber"]
    issues = check_rwd_bundle(doc)
    assert issues_at(issues, f"{DEV}.udiCarrier") == [("error", "required")]
    assert issues_at(issues, f"{DEV}.lotNumber") == [("error", "required")]


def test_use_of_a_product_without_a_pack() -> None:
    doc = load(ADMIN)
    admin = entry(doc, "Bundle.entry[8].resource")
    admin["medicationCodeableConcept"] = admin.pop("medicationReference")
    admin["medicationCodeableConcept"] = {"text": "Exemplumab"}
    issues = check_rwd_bundle(doc)
    assert issues_at(issues, "Bundle.entry[8].resource.medicationCodeableConcept") == [
        ("warning", "business-rule")
    ]


def test_unresolvable_medication_reference() -> None:
    doc = load(ADMIN)
    entry(doc, "Bundle.entry[8].resource")["medicationReference"] = {"reference": "Medication/x"}
    issues = check_rwd_bundle(doc)
    assert issues_at(issues, "Bundle.entry[8].resource.medicationReference") == [
        ("warning", "business-rule")
    ]


def test_domestic_product_is_noted_not_refused() -> None:
    doc = load(ADMIN)
    med = entry(doc, MED)
    med["extension"] = [e for e in med["extension"] if e["url"] != FMA_EXT]
    issues = check_rwd_bundle(doc)
    assert issues_at(issues, MED) == [("information", "informational")]
    assert all(i.severity != "error" for i in issues)


def test_adverse_event_without_suspect() -> None:
    doc = load(EVENT)
    ae = next(
        e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "AdverseEvent"
    )
    del ae["suspectEntity"]
    index = [e["resource"]["resourceType"] for e in doc["entry"]].index("AdverseEvent")
    issues = check_rwd_bundle(doc)
    assert issues_at(issues, f"Bundle.entry[{index}].resource.suspectEntity") == [
        ("warning", "required")
    ]


def test_suspect_through_the_administration_and_contained_medication() -> None:
    doc = load(EVENT)
    types = [e["resource"]["resourceType"] for e in doc["entry"]]
    ae = doc["entry"][types.index("AdverseEvent")]["resource"]
    admin = doc["entry"][types.index("MedicationAdministration")]["resource"]
    med = doc["entry"][types.index("Medication")]["resource"]
    # The administration carries its Medication contained; the AE points at the administration.
    contained = copy.deepcopy(med)
    contained["id"] = "pack"
    contained["batch"]["lotNumber"] = "WRONG1"
    admin["contained"] = [contained]
    admin["medicationReference"] = {"reference": "#pack"}
    ae["suspectEntity"][0]["instance"] = {"reference": "MedicationAdministration/ma-2026-1120-01"}
    at = f"Bundle.entry[{types.index('MedicationAdministration')}].resource.contained[0]"
    issues = check_rwd_bundle(doc)
    assert issues_at(issues, f"{at}.extension[1].valueString") == [("error", "business-rule")]
    assert {i.path for i in pack_identities(doc)} >= {at}


def test_not_a_bundle() -> None:
    assert check_rwd_bundle([]) == [Issue("error", "structure", "not a JSON object", None)]  # type: ignore[arg-type]
    assert pack_identities("x") == []  # type: ignore[arg-type]


# -- totality: any JSON in, issues out, never an exception -------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_checks_are_total_on_mutated_bundles(data: st.DataObject) -> None:
    doc = load(ADMIN)
    resource = doc["entry"][data.draw(st.integers(0, len(doc["entry"]) - 1))]["resource"]
    keys = sorted(resource)
    key = data.draw(st.sampled_from(keys))
    resource[key] = data.draw(json_values)
    issues = check_rwd_bundle(doc)
    assert all(isinstance(i, Issue) for i in issues)
    pack_identities(doc)
