"""Local $translate over the ConceptMaps in adapters/conceptmaps: table-driven.

Outcomes: ``mapped`` (a derived coding to add), ``unmatched`` (a map says there is no faithful
target: TCM, Chinese-only concepts) and ``no-map`` (no map knows the code). In every case the
source coding is returned untouched and stays first in the concept.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from adapters.base import AdaptError
from adapters.terminology import (
    ATC,
    DERIVED_EXTENSION,
    GBT_14396,
    GBT_15657_TCM,
    GTIN,
    ICD10_WHO,
    NHSA_ICD10,
    ConceptMapSet,
    default_concept_maps,
    enrich,
    is_derived,
    structural_target,
    translate,
)
from tests.paths import ROOT

MAPS = ROOT / "adapters" / "conceptmaps"

# (source system, code, target system, outcome, target code, equivalence)
TABLE = [
    # Chinese extension codes: WHO category.subcategory
    (GBT_14396, "I21.001", ICD10_WHO, "mapped", "I21.0", "wider"),
    (GBT_14396, "I25.103", ICD10_WHO, "mapped", "I25.1", "wider"),
    (GBT_14396, "I21.900", ICD10_WHO, "mapped", "I21.9", "equivalent"),
    (NHSA_ICD10, "E11.900", ICD10_WHO, "mapped", "E11.9", "equivalent"),
    (NHSA_ICD10, "E11.901", ICD10_WHO, "mapped", "E11.9", "wider"),
    # placeholders: the WHO category, which has no subdivision
    (GBT_14396, "I10.x00", ICD10_WHO, "mapped", "I10", "equivalent"),
    (GBT_14396, "R51.x00", ICD10_WHO, "mapped", "R51", "equivalent"),
    (NHSA_ICD10, "I10.x00", ICD10_WHO, "mapped", "I10", "equivalent"),
    # no faithful target
    (GBT_14396, "Z73.800x101", ICD10_WHO, "unmatched", None, "unmatched"),
    (GBT_15657_TCM, "A04.04.01", ICD10_WHO, "unmatched", None, "unmatched"),
    (GBT_15657_TCM, "B04.04.02.03", ICD10_WHO, "unmatched", None, "unmatched"),
    # drug identity: a pack's GTIN to its ATC substance
    (GTIN, "06901234560022", ATC, "mapped", "B01AC04", "wider"),
    (GTIN, "06901234560046", ATC, "mapped", "A10BA02", "wider"),
    # nothing known
    (GBT_14396, "J45.900", ICD10_WHO, "no-map", None, None),
    (GTIN, "06901234569999", ATC, "no-map", None, None),
    ("http://loinc.org", "2093-3", ICD10_WHO, "no-map", None, None),
    (GBT_14396, "I21.001", ATC, "no-map", None, None),
]
over_the_table = pytest.mark.parametrize(
    ("system", "code", "target_system", "outcome", "target", "equivalence"),
    TABLE,
    ids=[f"{row[1]}->{row[3]}" for row in TABLE],
)


@over_the_table
def test_translate(
    system: str,
    code: str,
    target_system: str,
    outcome: str,
    target: str | None,
    equivalence: str | None,
) -> None:
    coding = {"system": system, "code": code, "display": "原文"}
    before = copy.deepcopy(coding)
    result = translate(coding, target_system)
    assert result.outcome == outcome
    assert result.result is (outcome == "mapped")
    assert result.source == before and coding == before  # the source is never altered
    assert result.equivalence == equivalence
    assert result.message
    if target is None:
        assert result.target is None
        return
    assert result.target["system"] == target_system
    assert result.target["code"] == target
    assert result.target["userSelected"] is False
    assert is_derived(result.target)
    ext = result.target["extension"][0]
    assert ext["url"] == DERIVED_EXTENSION
    parts = {e["url"]: e for e in ext["extension"]}
    assert parts["equivalence"]["valueCode"] == equivalence
    assert parts["conceptMap"]["valueCanonical"] == result.concept_map
    assert parts["source"]["valueCoding"] == {"system": system, "code": code}


@over_the_table
def test_enrich_keeps_the_source_coding(
    system: str,
    code: str,
    target_system: str,
    outcome: str,
    target: str | None,
    equivalence: str | None,
) -> None:
    concept = {"coding": [{"system": system, "code": code, "display": "原文"}]}
    before = copy.deepcopy(concept)
    out, results = enrich(concept)
    assert concept == before
    assert out["coding"][0] == before["coding"][0]
    added = [(c["system"], c["code"]) for c in out["coding"][1:]]
    if outcome == "mapped" and target_system in default_concept_maps().targets_for(system):
        assert (target_system, target) in added
    if outcome == "unmatched":
        assert added == []
        assert out["text"] == "原文"  # the words stay when no code can
    assert enrich(out)[0] == out  # derived codings are not derived again


def test_enrich_keeps_existing_text_and_codings() -> None:
    concept = {
        "coding": [
            {"system": GBT_14396, "code": "I21.001", "display": "急性前壁心肌梗死"},
            {"system": ICD10_WHO, "code": "I21.0"},
        ],
        "text": "急性前壁心肌梗死（医生原话）",
    }
    out, results = enrich(concept)
    assert out == concept  # the WHO code was already there: nothing added
    assert [r.outcome for r in results] == ["mapped"]
    tcm = {"coding": [{"system": GBT_15657_TCM, "code": "A04.04.01"}], "text": "胸痹"}
    assert enrich(tcm)[0] == tcm


def test_shipped_maps_follow_the_structural_rule() -> None:
    """Mapped Chinese ICD-10 entries point at the WHO stem of their code."""
    maps = default_concept_maps()
    checked = 0
    for resource in maps.maps:
        for group in resource["group"]:
            if group["target"] != ICD10_WHO or group["source"] == GBT_15657_TCM:
                continue
            for element in group["element"]:
                for target in element["target"]:
                    if target["equivalence"] == "unmatched":
                        continue
                    assert target["code"] == structural_target(element["code"]), element
                    placeholder = ".x" in element["code"]
                    assert placeholder == ("." not in target["code"]), element
                    checked += 1
    assert checked >= 8


def test_structural_target() -> None:
    assert structural_target("I21.001") == "I21.0"
    assert structural_target("I10.x00") == "I10"
    assert structural_target("E11.900") == "E11.9"
    assert structural_target("Z73.800x101") is None
    assert structural_target("A04.04.01") is None


def test_every_shipped_map_is_an_r4_conceptmap() -> None:
    from fhir.resources.R4B.conceptmap import ConceptMap

    files = sorted(MAPS.glob("*.json"))
    assert len(files) >= 3
    for path in files:
        ConceptMap.model_validate(json.loads(path.read_text(encoding="utf-8")))


def _map(url: str, source: str, elements: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "ConceptMap",
        "id": url.rsplit("/", 1)[-1],
        "url": url,
        "status": "draft",
        "group": [{"source": source, "target": ICD10_WHO, "element": elements}],
    }


def test_maps_load_from_a_directory_at_run_time(tmp_path: Path) -> None:
    local = "https://hospital.example/CodeSystem/local-dx"
    (tmp_path / "local.json").write_text(
        json.dumps(
            _map(
                "https://hospital.example/ConceptMap/local",
                local,
                [{"code": "X1", "target": [{"code": "J45.9", "equivalence": "equivalent"}]}],
            )
        )
    )
    maps = ConceptMapSet.from_directory(tmp_path)
    result = translate({"system": local, "code": "X1"}, ICD10_WHO, maps=maps)
    assert (result.outcome, result.target["code"]) == ("mapped", "J45.9")
    assert result.concept_map == "https://hospital.example/ConceptMap/local"
    # The shipped set is unaffected.
    assert translate({"system": local, "code": "X1"}, ICD10_WHO).outcome == "no-map"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("url"), "url is required"),
        (
            lambda m: m["group"][0]["element"][0]["target"][0].update(equivalence="same"),
            "not an R4 code",
        ),
        (
            lambda m: m["group"][0]["element"][0]["target"][0].update(equivalence="unmatched"),
            "carries no code",
        ),
        (lambda m: m["group"][0]["element"][0]["target"][0].pop("code"), "needs a code"),
        (lambda m: m["group"][0]["element"][0].update(target=[]), "target is required"),
        (lambda m: m.update(resourceType="ValueSet"), "not ConceptMap"),
        (lambda m: m["group"][0].pop("source"), "source and target"),
    ],
)
def test_malformed_maps_are_refused(change: Any, message: str) -> None:
    resource = _map(
        "https://x.example/cm",
        "urn:x",
        [{"code": "A", "target": [{"code": "B00", "equivalence": "equivalent"}]}],
    )
    change(resource)
    with pytest.raises(AdaptError, match=message):
        ConceptMapSet.from_resources([resource])


def test_one_code_is_mapped_by_one_map(tmp_path: Path) -> None:
    element = [{"code": "A", "target": [{"code": "B00", "equivalence": "equivalent"}]}]
    (tmp_path / "a.json").write_text(json.dumps(_map("https://x.example/a", "urn:x", element)))
    (tmp_path / "b.json").write_text(json.dumps(_map("https://x.example/b", "urn:x", element)))
    with pytest.raises(AdaptError, match="already mapped"):
        ConceptMapSet.from_directory(tmp_path)


def test_unreadable_map_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(AdaptError, match="broken.json"):
        ConceptMapSet.from_directory(tmp_path)
    with pytest.raises(AdaptError, match="does not exist"):
        ConceptMapSet.from_directory(tmp_path / "missing")
