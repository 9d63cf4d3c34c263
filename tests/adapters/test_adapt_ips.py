"""IPS documents from the continuity fixtures and the public IPS examples.

Conformance is checked with FHIRPath (fhirpathpy, R4 model): the IPS invariants bdl-ips-1 and
ips-comp-1, ips-pat-1/ips-2/ips-3, the FHIR document Bundle invariants (bdl-7, bdl-9, bdl-10,
bdl-11) and the cardinalities of the IPS profiles (Bundle, Composition with its section slices,
Patient and the entry profiles), besides parsing with the fhir.resources R4B models.
"""

from __future__ import annotations

import copy
import json
import os
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle as R4BBundle
from fhirpathpy import evaluate
from fhirpathpy.models import models

from adapters.base import AdaptError, AdaptOptions
from adapters.ips import adapt, build_ips
from adapters.ips_json import dumps, loads_bundle
from adapters.terminology import DERIVED_EXTENSION, GBT_14396, GBT_15657_TCM, ICD10_WHO
from tests.paths import FIXTURES as TEST_FIXTURES
from tests.paths import GOLDEN as TEST_GOLDEN
from tests.paths import VECTORS

FIXTURES = TEST_FIXTURES / "continuity"
GOLDEN = TEST_GOLDEN / "continuity"
NOW = datetime(2026, 11, 28, 10, 0, tzinfo=timezone(timedelta(hours=8)))
UPDATE_GOLDEN = os.environ.get("MEDLEDGER_UPDATE_GOLDEN") == "1"
R4 = models["r4"]
XHTML = "{http://www.w3.org/1999/xhtml}"

CASES = {
    "boao-kr": ["boao-kr-inpatient-record.json", "boao-kr-discharge-meds.json"],
    "shanghai-ru": ["shanghai-ru-outpatient.json"],
}


def load(case: str) -> list[dict[str, Any]]:
    return [loads_bundle((FIXTURES / name).read_bytes(), name) for name in CASES[case]]


def raw(case: str) -> list[bytes]:
    return [(FIXTURES / name).read_bytes() for name in CASES[case]]


def vector_ips(name: str) -> dict[str, Any]:
    path = VECTORS / "fhir" / "ips" / name
    if not path.is_file():
        pytest.skip(f"public test vectors not present at {VECTORS}")
    return loads_bundle(path.read_bytes(), name)


# -- the conformance checks ----------------------------------------------------------------------

LOINC = "http://loinc.org"
REQUIRED_SECTIONS = {"11450-4": "Problems", "48765-2": "Allergies", "10160-0": "Medications"}
OPTIONAL_SECTIONS = ("47519-4", "11369-6", "46264-8", "30954-2", "8716-3", "11348-0")
SECTION_ENTRY_TYPES = {
    "11450-4": {"Condition", "DocumentReference"},
    "48765-2": {"AllergyIntolerance", "DocumentReference"},
    "10160-0": {
        "MedicationStatement",
        "MedicationRequest",
        "MedicationAdministration",
        "MedicationDispense",
        "DocumentReference",
    },
    "47519-4": {"Procedure", "DocumentReference"},
    "11369-6": {"Immunization", "DocumentReference"},
    "46264-8": {"DeviceUseStatement", "DocumentReference"},
    "30954-2": {"Observation", "DiagnosticReport", "Media", "DocumentReference"},
    "8716-3": {"Observation", "DocumentReference"},
    "11348-0": {"Condition", "DocumentReference"},
}

BUNDLE_RULES = [
    ("bdl-ips-1", "entry.tail().where(resource is Composition).empty()"),
    (
        "bdl-7",
        "(type = 'history') or entry.where(fullUrl.exists()).select(fullUrl & "
        "iif(resource.meta.versionId.exists(), resource.meta.versionId, '')).isDistinct()",
    ),
    (
        "bdl-9",
        "type = 'document' implies (identifier.system.exists() and identifier.value.exists())",
    ),
    # bdl-10 reads "timestamp.hasValue()"; fhirpathpy has no hasValue(), and a timestamp
    # without a value (only extensions) never occurs in JSON that fhir.resources accepts.
    ("bdl-10", "type = 'document' implies timestamp.exists()"),
    ("bdl-11", "type = 'document' implies entry.first().resource.is(Composition)"),
    ("Bundle.type = document", "type = 'document'"),
    ("Bundle.identifier 1..", "identifier.exists()"),
    ("Bundle.timestamp 1..", "timestamp.exists()"),
    ("Bundle.entry.fullUrl 1..", "entry.all(fullUrl.exists())"),
    (
        "Bundle.entry.search/request/response ..0",
        "entry.all(search.empty() and request.empty() and response.empty())",
    ),
    ("entry[composition] 1..1", "entry.where(resource is Composition).count() = 1"),
    ("entry[patient] 1..1", "entry.where(resource is Patient).count() = 1"),
]
COMPOSITION_RULES = [
    (
        "Composition.type = LOINC 60591-5",
        "type.coding.where(system = 'http://loinc.org' and code = '60591-5').exists()",
    ),
    ("Composition.subject.reference 1..", "subject.reference.exists()"),
    ("Composition.status 1..", "status.exists()"),
    ("Composition.date 1..", "date.exists()"),
    ("Composition.author 1..", "author.exists()"),
    ("Composition.title 1..", "title.exists()"),
    ("Composition.section 1..", "section.exists()"),
    ("section.title 1..", "section.all(title.exists())"),
    ("section.code 1..", "section.all(code.exists())"),
    ("section.text 1..", "section.all(text.exists())"),
    ("section.section ..0", "section.section.empty()"),
    ("cmp-1", "section.all(text.exists() or entry.exists() or section.exists())"),
    ("cmp-2", "section.all(emptyReason.empty() or entry.empty())"),
    *[
        (
            f"section[{name}] 1..1",
            f"section.where(code.coding.where(system = '{LOINC}' and code = '{code}').exists())"
            ".count() = 1",
        )
        for code, name in REQUIRED_SECTIONS.items()
    ],
    *[
        (
            f"ips-comp-1 ({name})",
            f"section.where(code.coding.where(system = '{LOINC}' and code = '{code}').exists())"
            ".all(entry.reference.exists() or emptyReason.exists())",
        )
        for code, name in REQUIRED_SECTIONS.items()
    ],
    *[
        (
            f"section {code} 0..1",
            f"section.where(code.coding.where(system = '{LOINC}' and code = '{code}').exists())"
            ".count() <= 1",
        )
        for code in OPTIONAL_SECTIONS
    ],
]
RESOURCE_RULES = {
    "Patient": [
        ("Patient.name 1..", "name.exists()"),
        ("ips-pat-1", "name.all(family.exists() or given.exists() or text.exists())"),
        ("Patient.birthDate 1..", "birthDate.exists()"),
    ],
    "Condition": [
        ("Condition.code 1..", "code.exists()"),
        ("Condition.subject.reference 1..", "subject.reference.exists()"),
    ],
    "AllergyIntolerance": [
        ("AllergyIntolerance.code 1..", "code.exists()"),
        ("AllergyIntolerance.patient.reference 1..", "patient.reference.exists()"),
    ],
    "MedicationStatement": [
        ("MedicationStatement.medication[x] 1..", "medication.exists()"),
        ("MedicationStatement.subject.reference 1..", "subject.reference.exists()"),
        ("MedicationStatement.effective[x] 1..", "effective.exists()"),
    ],
    "MedicationRequest": [
        ("MedicationRequest.medication[x] 1..", "medication.exists()"),
        ("MedicationRequest.subject.reference 1..", "subject.reference.exists()"),
    ],
    "Medication": [("Medication.code 1..", "code.exists()")],
    "Procedure": [
        ("Procedure.code 1..", "code.exists()"),
        ("Procedure.subject.reference 1..", "subject.reference.exists()"),
        ("Procedure.performed[x] 1..", "performed.exists()"),
    ],
    "Immunization": [
        ("Immunization.vaccineCode 1..", "vaccineCode.exists()"),
        ("Immunization.patient.reference 1..", "patient.reference.exists()"),
        ("Immunization.occurrence[x] 1..", "occurrence.exists()"),
    ],
    "DeviceUseStatement": [
        ("DeviceUseStatement.subject.reference 1..", "subject.reference.exists()"),
        ("DeviceUseStatement.device.reference 1..", "device.reference.exists()"),
    ],
    "Observation": [
        ("Observation.code 1..", "code.exists()"),
        ("Observation.subject.reference 1..", "subject.reference.exists()"),
        ("Observation.effective[x] 1..", "effective.exists()"),
        (
            "ips-3",
            "component.exists() implies (component.value.exists() or "
            "component.dataAbsentReason.exists())",
        ),
    ],
}
# Observation Results - Laboratory/Pathology (IPS) adds these to laboratory results.
LAB_RULES = [
    ("Observation.performer 1.. (lab)", "performer.exists()"),
    ("ips-2", "value.exists() or hasMember.exists()"),
]


def _true(resource: Any, expression: str) -> bool:
    return evaluate(resource, expression, {}, R4) == [True]


def ips_problems(doc: dict[str, Any]) -> list[str]:
    """Every IPS rule ``doc`` breaks, as '<rule> at <where>'; empty when it conforms."""
    problems = [f"{rule} at Bundle" for rule, expr in BUNDLE_RULES if not _true(doc, expr)]
    entries = doc.get("entry") or []
    if not entries or entries[0]["resource"]["resourceType"] != "Composition":
        return [*problems, "no Composition first"]
    composition = entries[0]["resource"]
    problems += [
        f"{rule} at Composition" for rule, expr in COMPOSITION_RULES if not _true(composition, expr)
    ]
    by_url = {e.get("fullUrl"): e["resource"] for e in entries}

    def resolve(ref: str | None) -> dict[str, Any] | None:
        # FHIR R4 Bundle: a fullUrl, or a relative Type/id against the entries' fullUrls.
        if ref in by_url:
            return by_url[ref]
        for e in entries:
            r = e["resource"]
            if ref == f"{r['resourceType']}/{r.get('id')}":
                return r
        return None

    subject = resolve(composition.get("subject", {}).get("reference"))
    if subject is None or subject["resourceType"] != "Patient":
        problems.append("Composition.subject does not resolve to the Patient entry")
    for section in composition.get("section") or []:
        code = section["code"]["coding"][0]["code"]
        for ref in section.get("entry") or []:
            target = resolve(ref.get("reference"))
            if target is None:
                problems.append(f"section {code} entry {ref} does not resolve in the Bundle")
            elif (
                target["resourceType"] not in SECTION_ENTRY_TYPES.get(code, {"*"}) | {"*"}
                and code in SECTION_ENTRY_TYPES
            ):
                problems.append(f"section {code} lists a {target['resourceType']}")
        div = section["text"]["div"]
        try:
            ET.fromstring(div)
        except ET.ParseError as e:
            problems.append(f"section {code} narrative is not well-formed XHTML: {e}")
    for entry in entries[1:]:
        resource = entry["resource"]
        rtype = resource["resourceType"]
        where = f"{rtype}/{resource.get('id')}"
        for rule, expr in RESOURCE_RULES.get(rtype, []):
            if not _true(resource, expr):
                problems.append(f"{rule} at {where}")
        is_lab = _true(resource, "category.coding.where(code = 'laboratory').exists()")
        if rtype == "Observation" and is_lab:
            problems += [
                f"{rule} at {where}" for rule, expr in LAB_RULES if not _true(resource, expr)
            ]
    return problems


def urn_references(node: Any) -> list[str]:
    out = []
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref.startswith("urn:uuid:"):
            out.append(ref)
        for value in node.values():
            out += urn_references(value)
    elif isinstance(node, list):
        for item in node:
            out += urn_references(item)
    return out


def resources(doc: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == rtype]


def section(doc: dict[str, Any], code: str) -> dict[str, Any] | None:
    for s in doc["entry"][0]["resource"]["section"]:
        if s["code"]["coding"][0]["code"] == code:
            return s
    return None


# -- the fixtures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_fixture_ips_conforms(case: str) -> None:
    doc = build_ips(load(case), now=NOW, document_id=f"ips-{case}")
    assert ips_problems(doc) == []
    R4BBundle.model_validate(json.loads(dumps(doc)))
    # A document carries what it references: every urn:uuid reference resolves inside it.
    urls = {e["fullUrl"] for e in doc["entry"]}
    assert set(urn_references(doc)) <= urls


def test_kr_sections_and_contents() -> None:
    doc = build_ips(load("boao-kr"), now=NOW, document_id="ips-boao-kr")
    codes = [s["code"]["coding"][0]["code"] for s in doc["entry"][0]["resource"]["section"]]
    # Required sections first, then the optional ones that have content.
    assert codes == ["11450-4", "48765-2", "10160-0", "47519-4", "46264-8", "30954-2", "8716-3"]
    assert len(resources(doc, "Patient")) == 1  # two submissions, one patient
    assert len(section(doc, "11450-4")["entry"]) == 3
    assert len(section(doc, "10160-0")["entry"]) == 4  # three statements and the dispense
    # The lab report is listed; its results travel inside it, not as section entries.
    results = section(doc, "30954-2")["entry"]
    by_url = {e["fullUrl"]: e["resource"] for e in doc["entry"]}
    assert [by_url[r["reference"]]["resourceType"] for r in results] == ["DiagnosticReport"]
    assert len(resources(doc, "Observation")) == 3
    composition = doc["entry"][0]["resource"]
    assert composition["event"][0]["period"] == {
        "start": "2026-11-10T14:20:00+08:00",
        "end": "2026-11-20T10:00:00+08:00",
    }
    custodian = by_url[composition["custodian"]["reference"]]
    assert custodian["name"] == "博鳌乐城国际医院"


def test_ru_empty_required_sections_have_empty_reason() -> None:
    doc = build_ips(load("shanghai-ru"), now=NOW, document_id="ips-shanghai-ru")
    for code in ("48765-2", "10160-0"):
        s = section(doc, code)
        assert "entry" not in s
        assert s["emptyReason"]["coding"][0] == {
            "system": "http://terminology.hl7.org/CodeSystem/list-empty-reason",
            "code": "unavailable",
            "display": "Unavailable",
        }
        div = ET.fromstring(s["text"]["div"])
        assert "源记录中没有" in "".join(div.itertext())
    assert section(doc, "11450-4")["entry"]


def test_chinese_narrative_is_the_source_and_translations_are_marked() -> None:
    inputs = load("boao-kr")
    doc = build_ips(inputs, now=NOW, document_id="ips-boao-kr")
    problems = ET.fromstring(section(doc, "11450-4")["text"]["div"])
    assert problems.get("lang") == "zh-CN"
    assert problems.get("{http://www.w3.org/XML/1998/namespace}lang") == "zh-CN"
    children = list(problems)
    assert children[0].tag == f"{XHTML}table"  # the recorded Chinese text comes first
    source_text = "".join(children[0].itertext())
    assert "急性前壁心肌梗死" in source_text and "胸痹心痛病（气虚血瘀证）" in source_text
    translations = [c for c in children[1:] if c.get("class") == "translation"]
    # Korean (the patient's preferred language) and English, each flagged as a translation.
    assert [t.get("lang") for t in translations] == ["ko", "en"]
    english = "".join(translations[1].itertext())
    assert "Translation (en)" in english and "authoritative" in english
    assert "Acute transmural myocardial infarction of anterior wall" in english
    # No faithful term for the TCM diagnosis: the original is shown, flagged untranslated.
    assert "[no en term; original: 胸痹心痛病（气虚血瘀证）]" in english
    # Titles keep Chinese with translations in the core extension.
    composition = doc["entry"][0]["resource"]
    assert composition["title"] == "国际患者摘要"
    langs = [e["extension"][0]["valueCode"] for e in composition["_title"]["extension"]]
    assert langs == ["ko", "en"]
    # Each resource keeps its own narrative as the hospital wrote it.
    source_conditions = {
        e["resource"]["id"]: e["resource"]
        for e in inputs[0]["entry"]
        if e["resource"]["resourceType"] == "Condition"
    }
    for condition in resources(doc, "Condition"):
        assert condition.get("text") == source_conditions[condition["id"]].get("text")


def test_language_option_picks_one_translation() -> None:
    doc = build_ips(load("shanghai-ru"), now=NOW, document_id="ips-ru-ar", language="ar")
    div = ET.fromstring(section(doc, "11450-4")["text"]["div"])
    translations = [c for c in div if c.get("class") == "translation"]
    assert [(t.get("lang"), t.get("dir")) for t in translations] == [("ar", "rtl")]
    with pytest.raises(AdaptError, match="language 'fr'"):
        build_ips(load("shanghai-ru"), now=NOW, document_id="x", language="fr")


def test_default_translations_follow_the_patient() -> None:
    doc = build_ips(load("shanghai-ru"), now=NOW, document_id="ips-ru")
    div = ET.fromstring(section(doc, "11450-4")["text"]["div"])
    assert [c.get("lang") for c in div if c.get("class") == "translation"] == ["ru", "en"]
    russian = "".join(next(c for c in div if c.get("lang") == "ru").itertext())
    assert "Перевод (ru)" in russian
    assert "Non-insulin-dependent diabetes mellitus without complications" in russian


def test_source_codings_stay_and_derived_codings_are_added() -> None:
    inputs = load("boao-kr")
    doc = build_ips(inputs, now=NOW, document_id="ips-boao-kr")
    conditions = {c["id"]: c for c in resources(doc, "Condition")}
    mi = conditions["kr-dx-ami"]["code"]
    original = next(
        e["resource"] for e in inputs[0]["entry"] if e["resource"].get("id") == "kr-dx-ami"
    )["code"]
    assert mi["coding"][0] == original["coding"][0]
    assert mi["text"] == original["text"]
    derived = mi["coding"][1]
    assert (derived["system"], derived["code"]) == (ICD10_WHO, "I21.0")
    assert derived["userSelected"] is False
    assert derived["extension"][0]["url"] == DERIVED_EXTENSION
    htn = conditions["kr-dx-htn"]["code"]["coding"]
    assert [(c["system"], c["code"]) for c in htn] == [(GBT_14396, "I10.x00"), (ICD10_WHO, "I10")]
    tcm = conditions["kr-dx-tcm"]["code"]
    assert [(c["system"], c["code"]) for c in tcm["coding"]] == [(GBT_15657_TCM, "A04.04.01")]
    assert tcm["text"] == "胸痹心痛病（气虚血瘀证）"
    medications = {m["id"]: m for m in resources(doc, "Medication")}
    atc = [
        c
        for c in medications["med-clopidogrel"]["code"]["coding"]
        if c["system"] == "http://www.whocc.no/atc"
    ]
    assert [c["code"] for c in atc] == ["B01AC04"]


def test_input_is_not_modified() -> None:
    inputs = load("boao-kr")
    before = copy.deepcopy(inputs)
    build_ips(inputs, now=NOW, document_id="ips-boao-kr")
    assert inputs == before


def test_decimal_precision_survives() -> None:
    out = adapt(raw("boao-kr"), AdaptOptions(now=NOW, control_id="ips-boao-kr"))
    text = out.decode("utf-8")
    assert '"value": 12.50' in text and '"value": 3.80' in text


# -- one patient, usable input ------------------------------------------------------------------


def _minimal(patient_id: str = "p1", identifier: str = "A1") -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "fullUrl": f"urn:uuid:00000000-0000-4000-8000-{patient_id.rjust(12, '0')}",
                "resource": {
                    "resourceType": "Patient",
                    "id": patient_id,
                    "identifier": [{"system": "urn:test", "value": identifier}],
                    "name": [{"family": "Test", "given": ["Tess"]}],
                },
            },
            {
                "resource": {
                    "resourceType": "Condition",
                    "id": f"c-{patient_id}",
                    "code": {"text": "头痛"},
                    "subject": {"reference": f"Patient/{patient_id}"},
                }
            },
            {
                "resource": {
                    "resourceType": "MedicationStatement",
                    "id": f"m-{patient_id}",
                    "status": "active",
                    "medicationCodeableConcept": {"text": "对乙酰氨基酚片"},
                    "subject": {"reference": f"Patient/{patient_id}"},
                }
            },
        ],
    }


def test_two_patients_are_refused() -> None:
    with pytest.raises(AdaptError, match="Patient/p2.*second patient"):
        build_ips([_minimal("p1", "A1"), _minimal("p2", "B2")], now=NOW, document_id="x")


def test_same_patient_in_two_bundles_is_one() -> None:
    doc = build_ips([_minimal("p1", "A1"), _minimal("p1b", "A1")], now=NOW, document_id="x")
    assert len(resources(doc, "Patient")) == 1
    patient_url = next(
        e["fullUrl"] for e in doc["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    assert {c["subject"]["reference"] for c in resources(doc, "Condition")} == {patient_url}
    assert ips_problems(doc) == []


def test_no_patient_is_refused() -> None:
    bundle = _minimal()
    bundle["entry"] = bundle["entry"][1:]
    with pytest.raises(AdaptError, match="no Patient"):
        build_ips([bundle], now=NOW, document_id="x")


def test_resource_about_someone_else_is_refused() -> None:
    bundle = _minimal()
    bundle["entry"][1]["resource"]["subject"] = {"reference": "Patient/other"}
    with pytest.raises(AdaptError, match=r"Condition/c-p1 subject: 'Patient/other'"):
        build_ips([bundle], now=NOW, document_id="x")


def test_unusable_condition_names_resource_and_field() -> None:
    bundle = _minimal()
    del bundle["entry"][1]["resource"]["code"]
    with pytest.raises(AdaptError, match=r"Condition/c-p1 code"):
        build_ips([bundle], now=NOW, document_id="x")


def test_required_elements_missing_get_data_absent_reason() -> None:
    doc = build_ips([_minimal()], now=NOW, document_id="x")
    statement = resources(doc, "MedicationStatement")[0]
    dar = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
    assert statement["_effectiveDateTime"]["extension"][0] == {"url": dar, "valueCode": "unknown"}
    assert resources(doc, "Patient")[0]["_birthDate"]["extension"][0]["url"] == dar
    assert section(doc, "48765-2")["emptyReason"]["coding"][0]["code"] == "unavailable"
    assert ips_problems(doc) == []
    R4BBundle.model_validate(json.loads(dumps(doc)))


def test_entered_in_error_is_left_out() -> None:
    bundle = _minimal()
    bundle["entry"][1]["resource"]["verificationStatus"] = {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                "code": "entered-in-error",
            }
        ]
    }
    doc = build_ips([bundle], now=NOW, document_id="x")
    assert resources(doc, "Condition") == []
    assert "emptyReason" in section(doc, "11450-4")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xef\xbb\xbf{}", "byte order mark"),
        (b'{"resourceType": "Bundle", "type": "collection", "type": "batch"}', "duplicate"),
        (b'{"resourceType": "Patient"}', "not Bundle"),
        (b"[1, 2", "not JSON"),
        (b'{"resourceType": "Bundle", "x": NaN}', "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_adapt_refuses_malformed_input(data: bytes, message: str) -> None:
    with pytest.raises(AdaptError, match=message):
        adapt([data], AdaptOptions(now=NOW))


def test_clock_and_id_are_checked() -> None:
    with pytest.raises(AdaptError, match="timezone-aware"):
        build_ips([_minimal()], now=datetime(2026, 11, 28, 10, 0), document_id="x")
    with pytest.raises(AdaptError, match="not a FHIR id"):
        build_ips([_minimal()], now=NOW, document_id="has space")


# -- determinism and golden files ---------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_ips(case: str) -> None:
    options = AdaptOptions(now=NOW, control_id=f"ips-{case}")
    first = adapt(raw(case), options)
    assert adapt(raw(case), options) == first
    # The same instant in another zone is another clock reading: it shows in the output.
    assert (
        adapt(raw(case), AdaptOptions(now=NOW.astimezone(UTC), control_id=f"ips-{case}")) != first
    )
    golden = GOLDEN / f"{case}-ips.json"
    if UPDATE_GOLDEN:
        golden.write_bytes(first)
    assert first == golden.read_bytes(), f"{golden.name} differs; MEDLEDGER_UPDATE_GOLDEN=1"


def test_document_id_defaults_to_content() -> None:
    one = adapt(raw("shanghai-ru"), AdaptOptions(now=NOW))
    two = adapt(raw("shanghai-ru"), AdaptOptions(now=NOW))
    assert one == two
    assert json.loads(one)["id"].startswith("ips-")


# -- public IPS examples ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bundle-minimal.json", "bundle-no-info-required-sections.json"])
def test_ips_vectors_round_trip(name: str) -> None:
    vector = vector_ips(name)
    assert ips_problems(vector) == []  # the checks accept HL7's own examples
    doc = build_ips([vector], now=NOW, document_id="ips-vector")
    assert ips_problems(doc) == []
    R4BBundle.model_validate(json.loads(dumps(doc)))
    # Every clinical resource of the example is in the new document, in the same section,
    # with its codings as they were.
    old_sections = {
        s["code"]["coding"][0]["code"]: s for s in vector["entry"][0]["resource"]["section"]
    }
    old_by_url = {e["fullUrl"]: e["resource"] for e in vector["entry"]}
    old_by_ref = {f"{r['resourceType']}/{r['id']}": r for r in old_by_url.values()}
    new_by_url = {e["fullUrl"]: e["resource"] for e in doc["entry"]}
    for code, old in old_sections.items():
        new = section(doc, code)
        assert new is not None, code
        old_ids = sorted(
            (old_by_url.get(r["reference"]) or old_by_ref[r["reference"]])["id"]
            for r in old.get("entry") or []
        )
        new_ids = sorted(new_by_url[r["reference"]]["id"] for r in new.get("entry") or [])
        assert new_ids == old_ids, code
        if "emptyReason" in old:
            assert "emptyReason" in new
    for old in old_by_url.values():
        if old["resourceType"] in ("Condition", "AllergyIntolerance", "Immunization"):
            new = next(r for r in new_by_url.values() if r.get("id") == old["id"])
            field = "vaccineCode" if old["resourceType"] == "Immunization" else "code"
            assert new[field]["coding"][: len(old[field]["coding"])] == old[field]["coding"]
    # A second pass over the produced document is still a conforming IPS.
    again = build_ips([json.loads(dumps(doc))], now=NOW, document_id="ips-vector-2")
    assert ips_problems(again) == []


def test_synthea_patients_give_conforming_ips() -> None:
    root = VECTORS / "fhir" / "synthea-10"
    if not root.is_dir():
        pytest.skip(f"public test vectors not present at {VECTORS}")
    by_type = {
        p.name.split(".")[0]: [
            json.loads(line) for line in p.read_text().splitlines() if line.strip()
        ]
        for p in sorted(root.glob("*.ndjson"))
    }
    patients = by_type["Patient"][:3]
    support = by_type.get("Organization", []) + by_type.get("Practitioner", [])
    for patient in patients:
        ref = f"Patient/{patient['id']}"
        clinical = [
            r
            for rtype, rows in by_type.items()
            if rtype != "Patient"
            for r in rows
            if (r.get("subject") or r.get("patient") or {}).get("reference") == ref
        ]
        bundle = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": r} for r in [patient, *clinical, *support]],
        }
        doc = build_ips([bundle], now=NOW, document_id=f"ips-{patient['id']}")
        assert ips_problems(doc) == [], patient["id"]
        assert len(resources(doc, "Patient")) == 1
