"""The IPS document Bundle: Composition, sections and their narrative, and the resource copies.

Resources are copied with their own narrative; only references are rewritten to the
document's ``urn:uuid`` fullUrls, derived codings are added beside source codings
(``adapters.terminology``), and a ``data-absent-reason`` extension fills an element the IPS
profiles require but the record lacks. Section narrative is written first in the source
language of the record and then, in separate blocks marked as translations, in English and
the patient's language (``adapters.narrative``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from adapters import narrative as nv
from adapters.base import AdaptError
from adapters.ips.rows import Row
from adapters.ips.sections import (
    SECTIONS,
    SUBJECT_FIELD,
    Section,
    contents,
    member_refs,
    select,
)
from adapters.ips_index import BundleIndex, Entry, codings, concept_text, first_of, has_cjk
from adapters.terminology import ConceptMapSet, enrich

LOINC = "http://loinc.org"
DATA_ABSENT_REASON = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
LIST_EMPTY_REASON = "http://terminology.hl7.org/CodeSystem/list-empty-reason"
# Namespace of the name-based UUIDs of one document's entries (a fixed, random UUID).
_NAMESPACE = uuid.UUID("5b0f3a2e-8f57-4c1e-9a44-2d6c1f0e7b31")

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


class DocumentBuilder:
    """One IPS document Bundle from the records of one patient."""

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

        grouped = select(self.index)
        included = contents(self.index, grouped)
        self.included_keys = frozenset(e.key for e in included)

        for entry in included:
            self.copies[entry.key] = self._copy(entry)

        sections = [
            self._section(s, grouped.get(s.key, []))
            for s in SECTIONS
            if s.required or grouped.get(s.key)
        ]
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

    # -- resource copies --------------------------------------------------------------------

    def _copy(self, entry: Entry) -> dict[str, Any]:
        resource: dict[str, Any] = self._rewritten(dict(entry.resource), entry)
        for path in _TRANSLATED.get(entry.type, ()):
            if isinstance(resource.get(path), Mapping):
                resource[path], _ = enrich(resource[path], maps=self.maps)
        if entry.type in SUBJECT_FIELD or entry.type == "Medication":
            self._require_codes(entry, resource)
        if entry.type == "Patient":
            self._patient_fields(entry, resource)
        required = _REQUIRED_CHOICE.get(entry.type)
        if required and first_of(resource, required[0]) is None:
            resource["_" + required[1]] = _absent("unknown")
        return resource

    def _rewritten(self, node: Any, origin: Entry) -> Any:
        """A copy of ``node`` whose references point at the document's fullUrls; the rest as
        sent (a contained resource is copied untouched: its references are its own)."""
        if isinstance(node, dict):
            out = {
                key: _copied(value) if key == "contained" else self._rewritten(value, origin)
                for key, value in node.items()
            }
            ref = out.get("reference")
            if isinstance(ref, str):
                target = self.index.resolve(ref, origin)
                if target is not None and target.key in self.included_keys:
                    out["reference"] = self.url(target)
            return out
        if isinstance(node, list):
            return [self._rewritten(item, origin) for item in node]
        return node  # str, numbers, bool, None: never changed in place

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
            "code": {
                "coding": [{"system": LOINC, "code": section.loinc, "display": section.display}]
            },
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
                "coding": [
                    {"system": LIST_EMPTY_REASON, "code": "unavailable", "display": "Unavailable"}
                ],
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

        return self._div(block)

    def _empty_div(self, key: str) -> str:
        def para(lang: str) -> str:
            return nv.element("p", None, nv.text(nv.label(lang, key)))

        return self._div(para)

    def _div(self, block: Callable[[str], str]) -> str:
        """Narrative: ``block`` in the source language, then one marked block per translation."""
        return nv.root_div(
            self.source_tag,
            block(self.source_lang),
            [
                (
                    nv.TAGS[lang],
                    nv.translation_note(lang, nv.TAGS[lang], self.source_tag) + block(lang),
                )
                for lang in self.renditions
            ],
        )

    def _rows(self, section: Section, entry: Entry, lang: str) -> list[list[str]]:
        resource = self.copies[entry.key]
        row = Row(self.index, self.copies, entry, resource, lang, self.source_lang)
        cells = {c: row.cell(c) for c in section.columns}
        rows = [[cells[c] for c in section.columns]]
        for ref in member_refs(entry.resource):
            member = self.index.resolve_ref(ref, entry)
            if member is not None and member.key in self.copies:
                sub = Row(
                    self.index, self.copies, member, self.copies[member.key], lang, self.source_lang
                )
                rows.append(
                    [
                        ("— " + sub.cell(c)) if c == "col_item" else sub.cell(c)
                        for c in section.columns
                    ]
                )
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
            "identifier": {"system": "urn:ietf:rfc:3986", "value": self.url_for_key("document")},
            "status": "final",
            "type": {
                "coding": [
                    {"system": LOINC, "code": "60591-5", "display": "Patient summary Document"}
                ]
            },
            "subject": {"reference": self.url(patient)},
            "date": _instant(self.now),
            "author": [{"reference": self.url_for_key("author-device")}],
            "title": nv.label(self.source_lang, "title"),
            "confidentiality": "N",
            "section": sections,
        }
        title_translations = [
            nv.translation_extension(nv.TAGS[lang], nv.label(lang, "title"))
            for lang in self.renditions
        ]
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
            comp["event"] = [
                {
                    "code": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActClass",
                                    "code": "PCPR",
                                }
                            ]
                        }
                    ],
                    "period": period,
                }
            ]
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
            return "".join(
                [
                    nv.element("p", None, nv.element("b", None, nv.text(nv.label(lang, "title")))),
                    nv.element("p", None, nv.text(f"{nv.label(lang, 'patient')}: {names}")),
                    nv.element("p", None, nv.text(f"{nv.label(lang, 'birth_date')}: {birth}")),
                    nv.element(
                        "p",
                        None,
                        nv.text(f"{nv.label(lang, 'summary_date')}: {_instant(self.now)[:10]}"),
                    ),
                ]
            )

        return self._div(block)


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
    starts = [
        p["start"]
        for e in encounters
        if isinstance(p := e.resource.get("period"), Mapping) and p.get("start")
    ]
    ends = [
        p["end"]
        for e in encounters
        if isinstance(p := e.resource.get("period"), Mapping) and p.get("end")
    ]
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


def _absent(reason: str) -> dict[str, Any]:
    return {"extension": [{"url": DATA_ABSENT_REASON, "valueCode": reason}]}


def _instant(now: datetime) -> str:
    return now.isoformat(timespec="seconds")


def _uuid(document_id: str, key: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{document_id}/{key}"))


def _urn(document_id: str, key: str) -> str:
    return f"urn:uuid:{_uuid(document_id, key)}"


def _copied(node: Any) -> Any:
    """A copy of parsed JSON (what copy.deepcopy gives, for dicts, lists and scalars only)."""
    if isinstance(node, dict):
        return {key: _copied(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_copied(item) for item in node]
    return node
