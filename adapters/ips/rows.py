"""The cells of one resource in an IPS section table, in one language.

Each section's narrative is a table, one row per listed resource (and one per observation a
report or panel lists); :class:`Row` gives the text of each column for one resource.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters import narrative as nv
from adapters.ips_index import (
    BundleIndex,
    Entry,
    choice_date,
    codings,
    concept_text,
    first_of,
    has_cjk,
    international_display,
)
from adapters.terminology import GBT_14396, GBT_15657_TCM, NHSA_ICD10, is_derived

# Readable names of code systems in narrative.
SYSTEM_NAMES = {
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://loinc.org": "LOINC",
    "http://snomed.info/sct": "SNOMED CT",
    "http://www.whocc.no/atc": "ATC",
    "https://www.gs1.org/gtin": "GTIN",
    "http://hl7.org/fhir/sid/cvx": "CVX",
    "http://unitsofmeasure.org": "UCUM",
    GBT_14396: "GB/T 14396",
    NHSA_ICD10: "NHSA ICD-10",
    GBT_15657_TCM: "GB/T 15657 TCM",
}


class Row:
    """The narrative cells of one resource in one language.

    In the source language, terms are the text as recorded. In a translation, a term is the
    display of an international coding (source or derived); without one, the original is shown
    and flagged as untranslated.
    """

    def __init__(
        self,
        index: BundleIndex,
        copies: Mapping[str, Mapping[str, Any]],
        entry: Entry,
        resource: Mapping[str, Any],
        lang: str,
        source_lang: str,
    ) -> None:
        self.index = index
        self.copies = copies
        self.entry = entry
        self.r = resource
        self.lang = lang
        self.source = lang == source_lang

    def term(self, concept: Any) -> str:
        original = concept_text(concept)
        if self.source:
            return original
        display = international_display(concept)
        if display:
            return display
        if not original or not has_cjk(original):
            return original
        return f"[{nv.label(self.lang, 'untranslated', lang=nv.TAGS[self.lang])}: {original}]"

    def free_text(self, value: str) -> str:
        if self.source or not has_cjk(value):
            return value
        return f"[{nv.label(self.lang, 'untranslated', lang=nv.TAGS[self.lang])}: {value}]"

    def codes(self, concept: Any) -> str:
        parts = []
        for coding in codings(concept):
            derived = is_derived(coding)
            if derived and self.source:
                continue
            name = SYSTEM_NAMES.get(str(coding.get("system")), str(coding.get("system", "")))
            parts.append(("→ " if derived else "") + f"{name} {coding.get('code', '')}".strip())
        return "; ".join(parts)

    def main_concept(self) -> Any:
        t = self.entry.type
        if t in ("Condition", "AllergyIntolerance", "Procedure", "Observation", "DiagnosticReport"):
            return self.r.get("code")
        if t == "Immunization":
            return self.r.get("vaccineCode")
        if t in ("MedicationStatement", "MedicationRequest", "MedicationDispense"):
            return self._medication()
        if t == "DeviceUseStatement":
            device = self._device()
            return device.get("type") if device else None
        return None

    def _medication(self) -> Any:
        if "medicationCodeableConcept" in self.r:
            return self.r["medicationCodeableConcept"]
        target = self.index.resolve_ref(self.entry.resource.get("medicationReference"), self.entry)
        if target is not None and target.key in self.copies:
            return self.copies[target.key].get("code")
        ref = self.r.get("medicationReference")
        return {"text": ref.get("display", "")} if isinstance(ref, Mapping) else None

    def _device(self) -> Mapping[str, Any] | None:
        target = self.index.resolve_ref(self.entry.resource.get("device"), self.entry)
        if target is not None and target.key in self.copies:
            return self.copies[target.key]
        return None

    def cell(self, column: str) -> str:
        if column == "col_item":
            item = self.term(self.main_concept())
            if self.entry.type == "DeviceUseStatement" and not item:
                device = self._device() or {}
                names = device.get("deviceName") or [{}]
                item = str(names[0].get("name", ""))
            return item
        if column == "col_code":
            return self.codes(self.main_concept())
        if column == "col_status":
            return self._status()
        if column == "col_date":
            return self._date()
        if column == "col_value":
            return self._value(self.r)
        if column == "col_details":
            return self._details()
        return ""

    def _status(self) -> str:
        parts = []
        for key in ("clinicalStatus", "verificationStatus"):
            concept = self.r.get(key)
            code = next((c.get("code") for c in codings(concept) if c.get("code")), None)
            if code and not (key == "verificationStatus" and code == "confirmed"):
                parts.append(nv.status_text(self.lang, code))
        if isinstance(self.r.get("status"), str):
            parts.append(nv.status_text(self.lang, self.r["status"]))
        if isinstance(self.r.get("criticality"), str):
            parts.append(nv.status_text(self.lang, self.r["criticality"]))
        return ", ".join(parts)

    def _date(self) -> str:
        t = self.entry.type
        prefix = {
            "Condition": "onset",
            "MedicationStatement": "effective",
            "Procedure": "performed",
            "Immunization": "occurrence",
            "Observation": "effective",
            "DiagnosticReport": "effective",
            "DeviceUseStatement": "timing",
        }.get(t)
        found = choice_date(self.r, prefix) if prefix else ""
        if not found and t == "MedicationRequest":
            found = str(self.r.get("authoredOn", ""))[:10]
        if not found and t == "MedicationDispense":
            found = str(self.r.get("whenHandedOver", ""))[:10]
        if not found and t in ("Condition", "DeviceUseStatement"):
            found = str(self.r.get("recordedDate") or self.r.get("recordedOn") or "")[:10]
        return found

    def _value(self, obs: Mapping[str, Any]) -> str:
        found = first_of(obs, "value")
        if found:
            return self._format_value(*found)
        parts = []
        for component in obs.get("component") or []:
            cfound = first_of(component, "value")
            if cfound:
                parts.append(
                    f"{self.term(component.get('code'))} {self._format_value(*cfound)}".strip()
                )
        if parts:
            return "; ".join(parts)
        if isinstance(obs.get("conclusion"), str):
            return self.free_text(obs["conclusion"])
        return ""

    def _format_value(self, kind: str, value: Any) -> str:
        if kind == "Quantity" and isinstance(value, Mapping):
            return _quantity(value)
        if kind == "CodeableConcept":
            return self.term(value)
        if kind == "Range" and isinstance(value, Mapping):
            return f"{_quantity(value.get('low') or {})} – {_quantity(value.get('high') or {})}"
        if kind == "String" and isinstance(value, str):
            return self.free_text(value)
        if kind in ("Boolean", "Integer", "DateTime", "Time"):
            return str(value).lower() if kind == "Boolean" else str(value)
        return ""

    def _details(self) -> str:
        t = self.entry.type
        if t == "AllergyIntolerance":
            out = []
            for reaction in self.r.get("reaction") or []:
                terms = [self.term(m) for m in reaction.get("manifestation") or []]
                severity = reaction.get("severity")
                out.append(", ".join(terms) + (f" ({severity})" if severity else ""))
            return "; ".join(o for o in out if o)
        if t in ("MedicationStatement", "MedicationRequest", "MedicationDispense"):
            dosages = self.r.get("dosage") or self.r.get("dosageInstruction") or []
            return "; ".join(self._dosage(d) for d in dosages if isinstance(d, Mapping))
        if t == "Immunization":
            return str(self.r.get("lotNumber", ""))
        if t == "DeviceUseStatement":
            device = self._device() or {}
            udi = (device.get("udiCarrier") or [{}])[0]
            parts = [str(udi.get("carrierHRF") or udi.get("deviceIdentifier") or "")]
            if device.get("lotNumber"):
                parts.append(f"LOT {device['lotNumber']}")
            return " ".join(p for p in parts if p)
        if t in ("Observation", "DiagnosticReport"):
            parts = []
            for rng in self.r.get("referenceRange") or []:
                text_range = _range(rng)
                if text_range:
                    parts.append(text_range)
                elif isinstance(rng.get("text"), str):
                    parts.append(self.free_text(rng["text"]))
            for interp in self.r.get("interpretation") or []:
                code = next((c.get("code") for c in codings(interp)), None)
                if code:
                    parts.append(str(code))
            return "; ".join(parts)
        return ""

    def _dosage(self, dosage: Mapping[str, Any]) -> str:
        if self.source and isinstance(text := dosage.get("text"), str):
            return text
        parts = []
        for dr in dosage.get("doseAndRate") or []:
            if isinstance(dr.get("doseQuantity"), Mapping):
                parts.append(_quantity(dr["doseQuantity"]))
        repeat = (dosage.get("timing") or {}).get("repeat") or {}
        if repeat.get("frequency") and repeat.get("periodUnit"):
            period = repeat.get("period", 1)
            parts.append(f"{repeat['frequency']}×/{period} {repeat['periodUnit']}")
        if dosage.get("route"):
            parts.append(self.term(dosage["route"]))
        if parts:
            return ", ".join(p for p in parts if p)
        if isinstance(dosage.get("text"), str):
            return self.free_text(dosage["text"])
        return ""


def _range(rng: Mapping[str, Any]) -> str:
    """A reference range as people write it; FHIR bounds are inclusive (R4 Observation)."""
    low = _quantity(rng.get("low") or {})
    high = _quantity(rng.get("high") or {})
    if low and high:
        return f"{low} – {high}"
    if high:
        return f"≤ {high}"
    if low:
        return f"≥ {low}"
    return ""


def _quantity(q: Mapping[str, Any]) -> str:
    if "value" not in q:
        return ""
    unit = q.get("unit") or q.get("code") or ""
    return f"{q.get('comparator', '')}{q['value']} {unit}".strip()
