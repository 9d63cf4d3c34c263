"""International Patient Summary (HL7 FHIR IPS IG 1.1.0, FHIR R4) from the Bundles of one patient.

``build_ips`` turns the Bundles of one encounter (or all of one patient's Bundles) into an IPS
document Bundle (IPS "Bundle - IPS" profile): the Composition first (LOINC 60591-5), then the
Patient, then the resources each section lists, then what those reference. The required
sections - Problems 11450-4, Allergies 48765-2, Medications 10160-0 - are always there, with
``emptyReason`` when the records hold nothing for them (invariant ips-comp-1); Procedures,
Immunizations, Medical devices, Results and Vital signs appear when there is something to list.

Source data stays as recorded. Resources are copied with their own narrative; only references
are rewritten to the document's ``urn:uuid`` fullUrls, derived codings are added beside source
codings (``adapters.terminology``), and a ``data-absent-reason`` extension fills an element the
IPS profiles require but the record lacks. Section narrative is written first in the source
language of the record (Chinese for the hospitals this serves) and then, in separate blocks
marked as translations, in English and the patient's language (``adapters.narrative``).

Output is deterministic: the clock and the document id are inputs, fullUrls are name-based
UUIDs (RFC 9562 §5.5) of the document id and each resource's position in the input.
"""

from __future__ import annotations

import copy
import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters import narrative as nv
from adapters.base import AdaptError, AdaptOptions
from adapters.ips_index import (
    BundleIndex,
    Entry,
    choice_date,
    codings,
    concept_text,
    entered_in_error,
    first_of,
    has_cjk,
    international_display,
)
from adapters.ips_json import dumps, loads_bundle
from adapters.terminology import ConceptMapSet, default_concept_maps, enrich, is_derived

__all__ = ["SECTIONS", "adapt", "build_ips"]

LOINC = "http://loinc.org"
DATA_ABSENT_REASON = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
LIST_EMPTY_REASON = "http://terminology.hl7.org/CodeSystem/list-empty-reason"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
# Namespace of the name-based UUIDs of one document's entries (a fixed, random UUID).
_NAMESPACE = uuid.UUID("5b0f3a2e-8f57-4c1e-9a44-2d6c1f0e7b31")
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

# Readable names of code systems in narrative.
SYSTEM_NAMES = {
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://loinc.org": "LOINC",
    "http://snomed.info/sct": "SNOMED CT",
    "http://www.whocc.no/atc": "ATC",
    "https://www.gs1.org/gtin": "GTIN",
    "http://hl7.org/fhir/sid/cvx": "CVX",
    "http://unitsofmeasure.org": "UCUM",
    "https://fhir.medledger.example/CodeSystem/gbt-14396-2016": "GB/T 14396",
    "https://fhir.medledger.example/CodeSystem/nhsa-icd10-2.0": "NHSA ICD-10",
    "https://fhir.medledger.example/CodeSystem/gbt-15657-2021": "GB/T 15657 TCM",
}


@dataclass(frozen=True)
class Section:
    """One IPS Composition section slice (IPS IG, Composition (IPS) profile)."""

    key: str  # label key in adapters.narrative
    loinc: str
    display: str
    required: bool
    columns: tuple[str, ...]


SECTIONS = (
    Section("problems", "11450-4", "Problem list - Reported", True,
            ("col_item", "col_code", "col_status", "col_date")),
    Section("allergies", "48765-2", "Allergies and adverse reactions Document", True,
            ("col_item", "col_code", "col_status", "col_details")),
    Section("medications", "10160-0", "History of Medication use Narrative", True,
            ("col_item", "col_code", "col_status", "col_date", "col_details")),
    Section("immunizations", "11369-6", "History of Immunization Narrative", False,
            ("col_item", "col_code", "col_status", "col_date", "col_details")),
    Section("procedures", "47519-4", "History of Procedures Document", False,
            ("col_item", "col_code", "col_status", "col_date")),
    Section("devices", "46264-8", "History of medical device use", False,
            ("col_item", "col_code", "col_status", "col_date", "col_details")),
    Section("results", "30954-2", "Relevant diagnostic tests/laboratory data Narrative", False,
            ("col_item", "col_value", "col_date", "col_details")),
    Section("vital_signs", "8716-3", "Vital signs", False,
            ("col_item", "col_value", "col_date", "col_details")),
    Section("past_illness", "11348-0", "History of Past illness Narrative", False,
            ("col_item", "col_code", "col_status", "col_date")),
)
_BY_KEY = {s.key: s for s in SECTIONS}

# Which resources a record of the patient's care contributes, and where the patient is named.
_SUBJECT_FIELD = {
    "Condition": "subject",
    "AllergyIntolerance": "patient",
    "MedicationStatement": "subject",
    "MedicationRequest": "subject",
    "MedicationDispense": "subject",
    "Immunization": "patient",
    "Procedure": "subject",
    "DeviceUseStatement": "subject",
    "Observation": "subject",
    "DiagnosticReport": "subject",
}

# Resources pulled in because a listed resource references them (the rest of the references
# are left as sent: the document is a summary, not a copy of every submission).
_SUPPORTING = frozenset({
    "Patient", "Practitioner", "PractitionerRole", "Organization", "Medication", "Device",
    "Encounter", "Location", "Specimen", "Observation", "Substance", "RelatedPerson",
})

# Choice elements the IPS profiles require (1..) and allow to be absent with a reason.
_REQUIRED_CHOICE = {
    "MedicationStatement": ("effective", "effectiveDateTime"),
    "Procedure": ("performed", "performedDateTime"),
    "Observation": ("effective", "effectiveDateTime"),
    "Immunization": ("occurrence", "occurrenceDateTime"),
}

# CodeableConcepts translated with the local ConceptMaps.
_TRANSLATED = {
    "Condition": ("code",),
    "AllergyIntolerance": ("code",),
    "Medication": ("code",),
    "MedicationStatement": ("medicationCodeableConcept",),
    "MedicationRequest": ("medicationCodeableConcept",),
    "MedicationDispense": ("medicationCodeableConcept",),
}


# -- public API ---------------------------------------------------------------------------------


def build_ips(
    bundles: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    document_id: str,
    language: str | None = None,
    maps: ConceptMapSet | None = None,
) -> dict[str, Any]:
    """Build one IPS document Bundle (a JSON-ready dict) from the Bundles of one patient.

    ``now`` stamps Bundle.timestamp and Composition.date (timezone-aware). ``document_id`` is
    Bundle.id and seeds every generated id. ``language`` picks the one translation to add; by
    default English and the patient's preferred language are added. ``maps`` overrides the
    shipped ConceptMaps. Raises :class:`AdaptError` naming the resource and field at fault.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise AdaptError("now: a timezone-aware time is required (FHIR instant)")
    if not _FHIR_ID.match(document_id):
        raise AdaptError(f"document id {document_id!r}: not a FHIR id ([A-Za-z0-9-.]{{1,64}})")
    if language is not None and not nv.supported(language):
        raise AdaptError(
            f"language {language!r}: no labels for it; supported: {', '.join(sorted(nv.LABELS))}"
        )
    index = BundleIndex(bundles)
    builder = _Builder(index, now, document_id, maps or default_concept_maps())
    return builder.build(language)


def adapt(bundles: list[bytes], options: AdaptOptions) -> bytes:
    """``medledger adapt ips``: Bundle files in, one IPS document out (canonical JSON, UTF-8).

    The document id is ``options.control_id`` when given, else derived from the input bytes,
    so the same files give the same document.
    """
    docs = [loads_bundle(data, f"input {i + 1}") for i, data in enumerate(bundles)]
    document_id = options.control_id or content_id("ips", bundles)
    return dumps(build_ips(docs, now=options.now, document_id=document_id,
                           language=options.language))


def content_id(prefix: str, inputs: Sequence[bytes]) -> str:
    """A stable id for outputs of the same inputs: ``prefix-`` and 32 hex digits of SHA-256."""
    digest = hashlib.sha256()
    for data in inputs:
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return f"{prefix}-{digest.hexdigest()[:32]}"


# -- the builder --------------------------------------------------------------------------------


class _Builder:
    def __init__(
        self, index: BundleIndex, now: datetime, document_id: str, maps: ConceptMapSet
    ) -> None:
        self.index = index
        self.now = now
        self.document_id = document_id
        self.maps = maps
        self.full_urls: dict[str, str] = {}
        self.copies: dict[str, dict[str, Any]] = {}
        self.included_keys: frozenset[str] = frozenset()

    def url(self, entry: Entry) -> str:
        key = self.index.canonical(entry).key
        if key not in self.full_urls:
            self.full_urls[key] = _urn(self.document_id, key)
        return self.full_urls[key]

    # -- assembly ---------------------------------------------------------------------------

    def build(self, language: str | None) -> dict[str, Any]:
        patient = self.index.patient
        self.source_tag = _source_language(self.index)
        self.source_lang = nv.base_language(self.source_tag) or "en"
        if self.source_lang not in nv.LABELS:
            self.source_lang = "en"
        self.renditions = _renditions(language, patient.resource, self.source_lang)

        grouped = self._select()
        included: list[Entry] = [patient]
        for key in (s.key for s in SECTIONS):
            included.extend(grouped.get(key, []))
        included.extend(self._members(grouped))
        included = _unique(included)
        included.extend(e for e in self._supporting(included) if e not in included)
        self.included_keys = frozenset(e.key for e in included)

        for entry in included:
            self.copies[entry.key] = self._copy(entry)

        sections = [self._section(s, grouped.get(s.key, [])) for s in SECTIONS
                    if s.required or grouped.get(s.key)]
        device = self._author_device()
        composition = self._composition(sections, included)
        entries = [{"fullUrl": self.url_for_key("composition"), "resource": composition}]
        for entry in included:
            entries.append({"fullUrl": self.url(entry), "resource": self.copies[entry.key]})
        entries.append({"fullUrl": self.url_for_key("author-device"), "resource": device})
        return {
            "resourceType": "Bundle",
            "id": self.document_id,
            "language": self.source_tag,
            "identifier": {
                "system": "urn:ietf:rfc:3986",
                "value": self.url_for_key("document"),
            },
            "type": "document",
            "timestamp": _instant(self.now),
            "entry": entries,
        }

    def url_for_key(self, key: str) -> str:
        return _urn(self.document_id, key)

    def _select(self) -> dict[str, list[Entry]]:
        """Clinical resources by section key, in input order, entered-in-error left out."""
        out: dict[str, list[Entry]] = {}
        for entry in self.index.entries:
            if self.index.canonical(entry) is not entry:
                continue
            kind = _section_of(entry.resource)
            if kind is None:
                continue
            self._check_subject(entry)
            out.setdefault(kind, []).append(entry)
        # Observations a report or panel lists travel inside it, not as section entries.
        members = {m.key for m in self._members(out)}
        for key in ("results", "vital_signs"):
            if key in out:
                out[key] = [e for e in out[key] if e.key not in members]
        return {k: v for k, v in out.items() if v}

    def _members(self, grouped: Mapping[str, list[Entry]]) -> list[Entry]:
        members: list[Entry] = []
        for key in ("results", "vital_signs"):
            for entry in grouped.get(key, []):
                for ref in _member_refs(entry.resource):
                    target = self.index.resolve_ref(ref, entry)
                    if target is not None and target.type == "Observation":
                        members.append(target)
        return members

    def _supporting(self, included: list[Entry]) -> list[Entry]:
        out: list[Entry] = []
        queue = list(included)
        seen = {e.key for e in included}
        while queue:
            entry = queue.pop(0)
            for target in self.index.iter_references(entry):
                if target.key in seen or target.type not in _SUPPORTING:
                    continue
                seen.add(target.key)
                out.append(target)
                queue.append(target)
        return out

    def _check_subject(self, entry: Entry) -> None:
        name = _SUBJECT_FIELD[entry.type]
        ref = entry.resource.get(name)
        if not isinstance(ref, Mapping) or not ref.get("reference"):
            raise AdaptError(f"{entry.where} {name}: no reference to the patient")
        target = self.index.resolve_ref(ref, entry)
        if target is not self.index.patient:
            raise AdaptError(
                f"{entry.where} {name}: {ref.get('reference')!r} is not the patient of this "
                f"summary ({self.index.patient.where})"
            )

    # -- resource copies --------------------------------------------------------------------

    def _copy(self, entry: Entry) -> dict[str, Any]:
        resource = copy.deepcopy(dict(entry.resource))
        self._rewrite(resource, entry)
        for path in _TRANSLATED.get(entry.type, ()):
            if isinstance(resource.get(path), Mapping):
                resource[path], _ = enrich(resource[path], maps=self.maps)
        if entry.type in _SUBJECT_FIELD or entry.type == "Medication":
            self._require_codes(entry, resource)
        if entry.type == "Patient":
            self._patient_fields(entry, resource)
        required = _REQUIRED_CHOICE.get(entry.type)
        if required and first_of(resource, required[0]) is None:
            resource["_" + required[1]] = _absent("unknown")
        return resource

    def _rewrite(self, node: Any, origin: Entry) -> None:
        """Point references at the document's fullUrls; leave the rest as sent."""
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str):
                target = self.index.resolve(ref, origin)
                if target is not None and target.key in self.included_keys:
                    node["reference"] = self.url(target)
            for key, value in node.items():
                if key != "contained":
                    self._rewrite(value, origin)
        elif isinstance(node, list):
            for item in node:
                self._rewrite(item, origin)

    def _require_codes(self, entry: Entry, resource: Mapping[str, Any]) -> None:
        field_name = {
            "Condition": "code",
            "AllergyIntolerance": "code",
            "Procedure": "code",
            "Observation": "code",
            "DiagnosticReport": "code",
            "Immunization": "vaccineCode",
            "Medication": "code",
        }.get(entry.type)
        if field_name and not concept_text(resource.get(field_name)):
            raise AdaptError(f"{entry.where} {field_name}: no code or text to summarise")
        if entry.type in ("MedicationStatement", "MedicationRequest", "MedicationDispense"):
            if first_of(resource, "medication") is None:
                raise AdaptError(f"{entry.where} medication[x]: missing")

    def _patient_fields(self, entry: Entry, resource: dict[str, Any]) -> None:
        names = [n for n in resource.get("name") or [] if isinstance(n, Mapping)]
        if not any(n.get("family") or n.get("given") or n.get("text") for n in names):
            raise AdaptError(
                f"{entry.where} name: the IPS needs a family name, a given name or a text "
                "(ips-pat-1)"
            )
        if not resource.get("birthDate") and "_birthDate" not in resource:
            resource["_birthDate"] = _absent("unknown")

    # -- sections ---------------------------------------------------------------------------

    def _section(self, section: Section, entries: list[Entry]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "title": nv.label(self.source_lang, section.key),
            "code": {"coding": [{"system": LOINC, "code": section.loinc,
                                 "display": section.display}]},
        }
        title_translations = [
            nv.translation_extension(nv.TAGS[lang], nv.label(lang, section.key))
            for lang in self.renditions
        ]
        if title_translations:
            out["_title"] = {"extension": title_translations}
        if entries:
            out["text"] = {"status": "generated", "div": self._section_div(section, entries)}
            out["entry"] = [{"reference": self.url(e)} for e in entries]
        else:
            key = f"empty_{section.key}"
            out["text"] = {"status": "generated", "div": self._empty_div(key)}
            out["emptyReason"] = {
                "coding": [{"system": LIST_EMPTY_REASON, "code": "unavailable",
                            "display": "Unavailable"}],
                "text": nv.label(self.source_lang, key),
            }
        return out

    def _section_div(self, section: Section, entries: list[Entry]) -> str:
        rows_by_lang: dict[str, list[list[str]]] = {}
        for lang in [self.source_lang, *self.renditions]:
            rows: list[list[str]] = []
            for entry in entries:
                rows.extend(self._rows(section, entry, lang))
            rows_by_lang[lang] = rows

        def block(lang: str) -> str:
            headers = [nv.label(lang, c) for c in section.columns]
            return nv.table(headers, rows_by_lang[lang])

        return nv.root_div(
            self.source_tag,
            block(self.source_lang),
            [(nv.TAGS[lang], self._note(lang) + block(lang)) for lang in self.renditions],
        )

    def _empty_div(self, key: str) -> str:
        def para(lang: str) -> str:
            return nv.element("p", None, nv.text(nv.label(lang, key)))

        return nv.root_div(
            self.source_tag,
            para(self.source_lang),
            [(nv.TAGS[lang], self._note(lang) + para(lang)) for lang in self.renditions],
        )

    def _note(self, lang: str) -> str:
        return nv.translation_note(lang, nv.TAGS[lang], self.source_tag)

    def _rows(self, section: Section, entry: Entry, lang: str) -> list[list[str]]:
        resource = self.copies[entry.key]
        row = _Row(self, entry, resource, lang)
        cells = {c: row.cell(c) for c in section.columns}
        rows = [[cells[c] for c in section.columns]]
        for ref in _member_refs(entry.resource):
            member = self.index.resolve_ref(ref, entry)
            if member is not None and member.key in self.copies:
                sub = _Row(self, member, self.copies[member.key], lang)
                rows.append([("— " + sub.cell(c)) if c == "col_item" else sub.cell(c)
                             for c in section.columns])
        return rows

    # -- composition ------------------------------------------------------------------------

    def _author_device(self) -> dict[str, Any]:
        return {
            "resourceType": "Device",
            "id": _uuid(self.document_id, "author-device"),
            "deviceName": [{"name": "medledger IPS adapter", "type": "user-friendly-name"}],
            "type": {"text": "software that assembled this summary from hospital records"},
        }

    def _composition(self, sections: list[dict[str, Any]], included: list[Entry]) -> dict[str, Any]:
        patient = self.index.patient
        comp: dict[str, Any] = {
            "resourceType": "Composition",
            "id": _uuid(self.document_id, "composition"),
            "language": self.source_tag,
            "text": {"status": "generated", "div": self._composition_div()},
            "identifier": {"system": "urn:ietf:rfc:3986",
                           "value": self.url_for_key("document")},
            "status": "final",
            "type": {"coding": [{"system": LOINC, "code": "60591-5",
                                 "display": "Patient summary Document"}]},
            "subject": {"reference": self.url(patient)},
            "date": _instant(self.now),
            "author": [{"reference": self.url_for_key("author-device")}],
            "title": nv.label(self.source_lang, "title"),
            "confidentiality": "N",
            "section": sections,
        }
        title_translations = [nv.translation_extension(nv.TAGS[lang], nv.label(lang, "title"))
                              for lang in self.renditions]
        if title_translations:
            comp["_title"] = {"extension": title_translations}
        encounters = [e for e in included if e.type == "Encounter"]
        if len(encounters) == 1:
            comp["encounter"] = {"reference": self.url(encounters[0])}
        custodians = self._custodians(encounters)
        if len(custodians) == 1:
            comp["custodian"] = {"reference": self.url(custodians[0])}
        period = _care_period(encounters)
        if period:
            comp["event"] = [{
                "code": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActClass",
                    "code": "PCPR",
                }]}],
                "period": period,
            }]
        return comp

    def _custodians(self, encounters: list[Entry]) -> list[Entry]:
        out: list[Entry] = []
        for enc in encounters:
            org = self.index.resolve_ref(enc.resource.get("serviceProvider"), enc)
            if org is not None and org.key in self.copies and org not in out:
                out.append(org)
        return out

    def _composition_div(self) -> str:
        patient = self.copies[self.index.patient.key]
        names = " / ".join(_name_text(n) for n in patient.get("name") or [] if _name_text(n))
        birth = patient.get("birthDate", "")

        def block(lang: str) -> str:
            return "".join([
                nv.element("p", None, nv.element("b", None, nv.text(nv.label(lang, "title")))),
                nv.element("p", None, nv.text(f"{nv.label(lang, 'patient')}: {names}")),
                nv.element("p", None, nv.text(f"{nv.label(lang, 'birth_date')}: {birth}")),
                nv.element("p", None, nv.text(
                    f"{nv.label(lang, 'summary_date')}: {_instant(self.now)[:10]}")),
            ])

        return nv.root_div(
            self.source_tag,
            block(self.source_lang),
            [(nv.TAGS[lang], self._note(lang) + block(lang)) for lang in self.renditions],
        )


# -- rows of section narrative -------------------------------------------------------------------


class _Row:
    """The narrative cells of one resource in one language.

    In the source language, terms are the text as recorded. In a translation, a term is the
    display of an international coding (source or derived); without one, the original is shown
    and flagged as untranslated.
    """

    def __init__(self, builder: _Builder, entry: Entry, resource: Mapping[str, Any],
                 lang: str) -> None:
        self.b = builder
        self.entry = entry
        self.r = resource
        self.lang = lang
        self.source = lang == builder.source_lang

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
        if t in ("Condition", "AllergyIntolerance", "Procedure", "Observation",
                 "DiagnosticReport"):
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
        target = self.b.index.resolve_ref(self.entry.resource.get("medicationReference"),
                                          self.entry)
        if target is not None and target.key in self.b.copies:
            return self.b.copies[target.key].get("code")
        ref = self.r.get("medicationReference")
        return {"text": ref.get("display", "")} if isinstance(ref, Mapping) else None

    def _device(self) -> Mapping[str, Any] | None:
        target = self.b.index.resolve_ref(self.entry.resource.get("device"), self.entry)
        if target is not None and target.key in self.b.copies:
            return self.b.copies[target.key]
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
            "Condition": "onset", "MedicationStatement": "effective", "Procedure": "performed",
            "Immunization": "occurrence", "Observation": "effective",
            "DiagnosticReport": "effective", "DeviceUseStatement": "timing",
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
                parts.append(f"{self.term(component.get('code'))} "
                             f"{self._format_value(*cfound)}".strip())
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


# -- helpers -----------------------------------------------------------------------------------


def _section_of(resource: Mapping[str, Any]) -> str | None:
    t = resource.get("resourceType")
    if t not in _SUBJECT_FIELD:
        return None
    if entered_in_error(resource):
        return None
    if t == "Condition":
        clinical = {c.get("code") for c in codings(resource.get("clinicalStatus"))}
        if clinical & {"inactive", "resolved", "remission"}:
            return "past_illness"
        return "problems"
    if t == "AllergyIntolerance":
        return "allergies"
    if t in ("MedicationStatement", "MedicationRequest", "MedicationDispense"):
        return "medications"
    if t == "Immunization":
        return "immunizations"
    if t == "Procedure":
        return "procedures"
    if t == "DeviceUseStatement":
        return "devices"
    if t == "Observation":
        categories = {(c.get("system"), c.get("code"))
                      for cat in resource.get("category") or [] for c in codings(cat)}
        if (OBSERVATION_CATEGORY, "vital-signs") in categories:
            return "vital_signs"
        return "results"
    if t == "DiagnosticReport":
        return "results"
    return None


def _member_refs(resource: Mapping[str, Any]) -> list[Any]:
    if resource.get("resourceType") == "DiagnosticReport":
        return list(resource.get("result") or [])
    if resource.get("resourceType") == "Observation":
        return list(resource.get("hasMember") or [])
    return []


def _unique(entries: list[Entry]) -> list[Entry]:
    seen: set[str] = set()
    out = []
    for e in entries:
        if e.key not in seen:
            seen.add(e.key)
            out.append(e)
    return out


def _source_language(index: BundleIndex) -> str:
    """The language the record was written in: the first tag found, else guessed from script."""
    for entry in index.entries:
        if entry.type == "Composition" and isinstance(tag := entry.resource.get("language"), str):
            return tag
    for entry in index.entries:
        if isinstance(tag := entry.resource.get("language"), str):
            return tag
    for entry in index.entries:
        for key in ("code", "vaccineCode", "medicationCodeableConcept"):
            if has_cjk(concept_text(entry.resource.get(key))):
                return "zh-CN"
    return "en"


def _renditions(language: str | None, patient: Mapping[str, Any], source: str) -> list[str]:
    """Base languages of the translations to add, in order."""
    if language is not None:
        wanted = [nv.base_language(language)]
    else:
        wanted = [_preferred_language(patient), "en"]
    out: list[str] = []
    for lang in wanted:
        if lang and lang in nv.LABELS and lang != source and lang not in out:
            out.append(lang)
    return out


def _preferred_language(patient: Mapping[str, Any]) -> str | None:
    comms = [c for c in patient.get("communication") or [] if isinstance(c, Mapping)]
    comms.sort(key=lambda c: 0 if c.get("preferred") else 1)
    for comm in comms:
        for coding in codings(comm.get("language")):
            if coding.get("code"):
                return nv.base_language(str(coding["code"]))
    return None


def _care_period(encounters: list[Entry]) -> dict[str, str] | None:
    starts = [p["start"] for e in encounters
              if isinstance(p := e.resource.get("period"), Mapping) and p.get("start")]
    ends = [p["end"] for e in encounters
            if isinstance(p := e.resource.get("period"), Mapping) and p.get("end")]
    period = {}
    if starts:
        period["start"] = min(starts)
    if ends:
        period["end"] = max(ends)
    return period or None


def _name_text(name: Any) -> str:
    if not isinstance(name, Mapping):
        return ""
    if isinstance(text := name.get("text"), str) and text:
        return text
    given = " ".join(g for g in name.get("given") or [] if isinstance(g, str))
    family = name.get("family") or ""
    if family and has_cjk(family):
        return f"{family}{given}"
    return f"{given} {family}".strip()


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


def _absent(reason: str) -> dict[str, Any]:
    return {"extension": [{"url": DATA_ABSENT_REASON, "valueCode": reason}]}


def _instant(now: datetime) -> str:
    return now.isoformat(timespec="seconds")


def _uuid(document_id: str, key: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{document_id}/{key}"))


def _urn(document_id: str, key: str) -> str:
    return f"urn:uuid:{_uuid(document_id, key)}"
