"""Local terminology: FHIR R4 ConceptMaps kept in the repository and a local ``$translate``.

The maps are data (``adapters/conceptmaps/*.json``, or any directory given at run time), read as
FHIR R4 ConceptMap resources (FHIR R4 §4.10 ConceptMap; the operation follows §4.10.15
``$translate``: a source coding and a target system in, a result flag, a message and the best
match out). What the maps say, and nothing else, decides a translation: there is no rule in code
that guesses a target, so a code missing from a map is reported as ``no-map`` and left alone.

Two promises hold for every caller:

- the source coding is never altered or dropped; a target coding is only ever *added* beside it,
  marked as derived (``userSelected: false`` and the :data:`DERIVED_EXTENSION` naming the map and
  the equivalence), so a receiver can tell what the clinician chose from what a map inferred;
- an ``unmatched`` concept (traditional Chinese medicine, Chinese-only extensions) gets no target
  at all, and its text is kept so a reader abroad still sees the diagnosis as written.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from adapters.base import CANONICAL_BASE, AdaptError

DERIVED_EXTENSION = f"{CANONICAL_BASE}/StructureDefinition/coding-derived"

# Code systems. WHO ICD-10, ATC and GTIN use the URIs of HL7 Terminology (THO); the Chinese
# national systems have no registered FHIR URI yet.
ICD10_WHO = "http://hl7.org/fhir/sid/icd-10"
ATC = "http://www.whocc.no/atc"
GTIN = "https://www.gs1.org/gtin"
GBT_14396 = f"{CANONICAL_BASE}/CodeSystem/gbt-14396-2016"
NHSA_ICD10 = f"{CANONICAL_BASE}/CodeSystem/nhsa-icd10-2.0"
GBT_15657_TCM = f"{CANONICAL_BASE}/CodeSystem/gbt-15657-2021"

DEFAULT_DIRECTORY = Path(__file__).resolve().parent / "conceptmaps"

# R4 ConceptMapEquivalence (valueset-concept-map-equivalence), best first. "unmatched" and
# "disjoint" say there is no target; they are never a match.
_MATCH_ORDER = (
    "equivalent",
    "equal",
    "wider",
    "subsumes",
    "narrower",
    "specializes",
    "relatedto",
    "inexact",
)
_NO_MATCH = ("unmatched", "disjoint")
_EQUIVALENCES = frozenset(_MATCH_ORDER + _NO_MATCH)

Outcome = Literal["mapped", "unmatched", "no-map"]


@dataclass(frozen=True)
class TranslateResult:
    """What ``$translate`` answered for one source coding and one target system.

    ``outcome`` is ``mapped`` (``target`` is the coding to add), ``unmatched`` (a map says there
    is no faithful target) or ``no-map`` (no map knows the code, or no map joins the systems).
    ``source`` is the coding exactly as given.
    """

    outcome: Outcome
    source: Mapping[str, Any]
    target_system: str
    target: Mapping[str, Any] | None = None
    equivalence: str | None = None
    concept_map: str | None = None
    message: str = ""

    @property
    def result(self) -> bool:
        """The ``result`` output parameter of ``$translate``: true when a target was found."""
        return self.outcome == "mapped"


@dataclass(frozen=True)
class _Target:
    code: str | None
    display: str | None
    equivalence: str
    comment: str | None


@dataclass(frozen=True)
class _Group:
    concept_map: str  # canonical url|version
    target_version: str | None
    elements: Mapping[str, tuple[_Target, ...]]


@dataclass(frozen=True)
class ConceptMapSet:
    """An index of ConceptMaps: (source system, target system) -> code -> targets."""

    maps: tuple[Mapping[str, Any], ...] = ()
    _groups: Mapping[tuple[str, str], tuple[_Group, ...]] = field(default_factory=dict)

    @classmethod
    def from_resources(cls, resources: Iterable[Mapping[str, Any]]) -> ConceptMapSet:
        """Index ConceptMap resources; raise :class:`AdaptError` naming a malformed one."""
        groups: dict[tuple[str, str], list[_Group]] = {}
        seen: dict[tuple[str, str, str], str] = {}
        kept: list[Mapping[str, Any]] = []
        for resource in resources:
            where = f"ConceptMap/{resource.get('id', '?')}"
            _check_conceptmap(resource, where)
            canonical = f"{resource['url']}|{resource.get('version', '')}".rstrip("|")
            for gi, group in enumerate(resource["group"]):
                pair = (group["source"], group["target"])
                elements: dict[str, tuple[_Target, ...]] = {}
                for ei, element in enumerate(group["element"]):
                    code = element["code"]
                    key = (pair[0], pair[1], code)
                    if key in seen:
                        raise AdaptError(
                            f"{where} group[{gi}].element[{ei}]: {pair[0]}|{code} is already "
                            f"mapped to {pair[1]} by {seen[key]}; one map per code keeps "
                            "translation unambiguous"
                        )
                    seen[key] = canonical
                    elements[code] = tuple(
                        _Target(
                            code=t.get("code"),
                            display=t.get("display"),
                            equivalence=t["equivalence"],
                            comment=t.get("comment"),
                        )
                        for t in element["target"]
                    )
                groups.setdefault(pair, []).append(
                    _Group(canonical, group.get("targetVersion"), elements)
                )
            kept.append(resource)
        return cls(tuple(kept), {k: tuple(v) for k, v in groups.items()})

    @classmethod
    def from_directory(cls, directory: Path | str) -> ConceptMapSet:
        """Load every ``*.json`` ConceptMap in ``directory``, in name order (stable loading)."""
        root = Path(directory)
        if not root.is_dir():
            raise AdaptError(f"ConceptMap directory {root} does not exist")
        resources = []
        for path in sorted(root.glob("*.json")):
            try:
                resources.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise AdaptError(f"ConceptMap file {path.name}: cannot read ({e})") from None
        return cls.from_resources(resources)

    def targets_for(self, source_system: str) -> tuple[str, ...]:
        """The target systems some map reaches from ``source_system``, sorted."""
        return tuple(sorted({t for (s, t) in self._groups if s == source_system}))

    def translate(self, coding: Mapping[str, Any], target_system: str) -> TranslateResult:
        """``$translate`` for one coding; see :func:`translate`."""
        system, code = coding.get("system"), coding.get("code")
        if not isinstance(system, str) or not isinstance(code, str):
            return TranslateResult(
                "no-map", coding, target_system, message="coding has no system or no code"
            )
        groups = self._groups.get((system, target_system), ())
        if not groups:
            return TranslateResult(
                "no-map",
                coding,
                target_system,
                message=f"no ConceptMap from {system} to {target_system}",
            )
        for group in groups:
            targets = group.elements.get(code)
            if targets is None:
                continue
            matches = [t for t in targets if t.equivalence in _MATCH_ORDER and t.code]
            if not matches:
                why = next((t.comment for t in targets if t.comment), "no faithful target")
                return TranslateResult(
                    "unmatched",
                    coding,
                    target_system,
                    equivalence=targets[0].equivalence,
                    concept_map=group.concept_map,
                    message=f"{system}|{code}: {why}",
                )
            best = min(matches, key=lambda t: _MATCH_ORDER.index(t.equivalence))
            derived: dict[str, Any] = {
                "system": target_system,
                "code": best.code,
                "userSelected": False,
                "extension": [_derived_extension(group.concept_map, best.equivalence, coding)],
            }
            if group.target_version:
                derived["version"] = group.target_version
            if best.display:
                derived["display"] = best.display
            return TranslateResult(
                "mapped",
                coding,
                target_system,
                target=derived,
                equivalence=best.equivalence,
                concept_map=group.concept_map,
                message=f"{system}|{code} -> {target_system}|{best.code} ({best.equivalence})",
            )
        return TranslateResult(
            "no-map",
            coding,
            target_system,
            message=f"{system}|{code} is in no ConceptMap to {target_system}",
        )


def _derived_extension(
    concept_map: str, equivalence: str, source: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "url": DERIVED_EXTENSION,
        "extension": [
            {"url": "conceptMap", "valueCanonical": concept_map},
            {"url": "equivalence", "valueCode": equivalence},
            {
                "url": "source",
                "valueCoding": {"system": source["system"], "code": source["code"]},
            },
        ],
    }


def _check_conceptmap(resource: Mapping[str, Any], where: str) -> None:
    """Structural checks beyond the R4B model: what ``translate`` relies on."""
    if not isinstance(resource, Mapping) or resource.get("resourceType") != "ConceptMap":
        raise AdaptError(f"{where}: resourceType is not ConceptMap")
    try:
        from fhir.resources.R4B.conceptmap import ConceptMap

        ConceptMap.model_validate(resource)
    except Exception as e:  # pydantic reports many shapes; any of them means a bad map
        first = str(e).splitlines()[:3]
        raise AdaptError(f"{where}: not a valid R4 ConceptMap: {' '.join(first)}") from None
    if not resource.get("url"):
        raise AdaptError(f"{where}: url is required, it names the map in derived codings")
    groups = resource.get("group") or []
    if not groups:
        raise AdaptError(f"{where}: group is empty")
    for gi, group in enumerate(groups):
        if not group.get("source") or not group.get("target"):
            raise AdaptError(f"{where} group[{gi}]: source and target systems are required")
        for ei, element in enumerate(group.get("element") or []):
            if not element.get("code"):
                raise AdaptError(f"{where} group[{gi}].element[{ei}]: code is required")
            targets = element.get("target") or []
            if not targets:
                raise AdaptError(
                    f"{where} group[{gi}].element[{ei}]: target is required "
                    "(use equivalence 'unmatched' for no target)"
                )
            for ti, target in enumerate(targets):
                eq = target.get("equivalence")
                path = f"{where} group[{gi}].element[{ei}].target[{ti}]"
                if eq not in _EQUIVALENCES:
                    raise AdaptError(f"{path}: equivalence {eq!r} is not an R4 code")
                if eq in _NO_MATCH and target.get("code"):
                    raise AdaptError(f"{path}: an {eq} target carries no code")
                if eq not in _NO_MATCH and not target.get("code"):
                    raise AdaptError(f"{path}: a {eq} target needs a code")


@functools.lru_cache(maxsize=1)
def default_concept_maps() -> ConceptMapSet:
    """The maps shipped in ``adapters/conceptmaps``, loaded once."""
    return ConceptMapSet.from_directory(DEFAULT_DIRECTORY)


def translate(
    coding: Mapping[str, Any], target_system: str, *, maps: ConceptMapSet | None = None
) -> TranslateResult:
    """Local ``$translate`` (FHIR R4 §4.10.15): the best target for ``coding`` in ``target_system``.

    ``maps`` defaults to the shipped ConceptMaps. The coding is not modified.
    """
    return (maps or default_concept_maps()).translate(coding, target_system)


def is_derived(coding: Mapping[str, Any]) -> bool:
    """True for a coding this module added (it carries :data:`DERIVED_EXTENSION`)."""
    return any(e.get("url") == DERIVED_EXTENSION for e in coding.get("extension") or ())


def enrich(
    concept: Mapping[str, Any], *, maps: ConceptMapSet | None = None
) -> tuple[dict[str, Any], tuple[TranslateResult, ...]]:
    """Return a copy of a CodeableConcept with derived codings added, and what was translated.

    Every source coding stays, in place and byte-for-byte. For each source coding, each target
    system a map reaches gets one derived coding, unless the concept already holds a coding in
    that system with that code. When nothing could be mapped and the concept has no ``text``,
    the first source display becomes its text, so an unmatched diagnosis keeps its words.
    """
    maps = maps or default_concept_maps()
    out = copy.deepcopy(dict(concept))
    codings = out.get("coding") or []
    present = {(c.get("system"), c.get("code")) for c in codings}
    results: list[TranslateResult] = []
    added: list[dict[str, Any]] = []
    for coding in codings:
        if is_derived(coding) or not isinstance(coding.get("system"), str):
            continue
        for target_system in maps.targets_for(coding["system"]):
            result = maps.translate(coding, target_system)
            results.append(result)
            if result.target is None:
                continue
            key = (result.target["system"], result.target["code"])
            if key not in present:
                present.add(key)
                added.append(dict(result.target))
    if added:
        out["coding"] = list(codings) + added
    if results and not any(r.result for r in results) and not out.get("text"):
        display = next((c.get("display") for c in codings if c.get("display")), None)
        if display:
            out["text"] = display
    return out, tuple(results)


_EXTENSION_CODE = re.compile(r"^([A-Z][0-9]{2})\.([0-9])([0-9]{2,})$")
_PLACEHOLDER_CODE = re.compile(r"^([A-Z][0-9]{2})\.x[0-9]{2,}$")


def structural_target(code: str) -> str | None:
    """The WHO ICD-10 stem a Chinese ICD-10 code is built on, or None when it has none.

    ``I21.001`` -> ``I21.0`` (category.subcategory of a Chinese extension code) and ``I10.x00``
    -> ``I10`` (placeholder: the WHO category has no subdivision). This is the rule the curated
    maps follow; it checks the maps and never replaces them, because a stem that exists
    syntactically can still be unfaithful (see the 'unmatched' entries).
    """
    m = _EXTENSION_CODE.match(code)
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    m = _PLACEHOLDER_CODE.match(code)
    if m:
        return m.group(1)
    return None
