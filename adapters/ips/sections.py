"""Which records the IPS lists in which section, and which resources the document carries.

A clinical resource goes into the section its type and status say (:func:`section_of`);
entered-in-error records are left out, and every listed resource must be about the summary's
patient. Observations that a report or panel lists travel inside it rather than as section
entries. Besides what the sections list, the document carries what those resources reference
(:data:`_SUPPORTING`), so a reader can resolve every reference inside the document.

Which stored Bundles a summary is built from is decided the same way, by content:
:func:`contributes` is true of any Bundle holding a resource a section lists, whatever kind it
is filed under (a discharge Bundle that also carries the patient's Consent is still a discharge).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters.base import AdaptError
from adapters.ips_index import BundleIndex, Entry, codings, entered_in_error

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


@dataclass(frozen=True)
class Section:
    """One IPS Composition section slice (IPS IG, Composition (IPS) profile)."""

    key: str  # label key in adapters.narrative
    loinc: str
    display: str
    required: bool
    columns: tuple[str, ...]


SECTIONS = (
    Section(
        "problems",
        "11450-4",
        "Problem list - Reported",
        True,
        ("col_item", "col_code", "col_status", "col_date"),
    ),
    Section(
        "allergies",
        "48765-2",
        "Allergies and adverse reactions Document",
        True,
        ("col_item", "col_code", "col_status", "col_details"),
    ),
    Section(
        "medications",
        "10160-0",
        "History of Medication use Narrative",
        True,
        ("col_item", "col_code", "col_status", "col_date", "col_details"),
    ),
    Section(
        "immunizations",
        "11369-6",
        "History of Immunization Narrative",
        False,
        ("col_item", "col_code", "col_status", "col_date", "col_details"),
    ),
    Section(
        "procedures",
        "47519-4",
        "History of Procedures Document",
        False,
        ("col_item", "col_code", "col_status", "col_date"),
    ),
    Section(
        "devices",
        "46264-8",
        "History of medical device use",
        False,
        ("col_item", "col_code", "col_status", "col_date", "col_details"),
    ),
    Section(
        "results",
        "30954-2",
        "Relevant diagnostic tests/laboratory data Narrative",
        False,
        ("col_item", "col_value", "col_date", "col_details"),
    ),
    Section(
        "vital_signs",
        "8716-3",
        "Vital signs",
        False,
        ("col_item", "col_value", "col_date", "col_details"),
    ),
    Section(
        "past_illness",
        "11348-0",
        "History of Past illness Narrative",
        False,
        ("col_item", "col_code", "col_status", "col_date"),
    ),
)

# Which resources a record of the patient's care contributes, and where the patient is named.
SUBJECT_FIELD = {
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
_SUPPORTING = frozenset(
    {
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Medication",
        "Device",
        "Encounter",
        "Location",
        "Specimen",
        "Observation",
        "Substance",
        "RelatedPerson",
    }
)


def select(index: BundleIndex) -> dict[str, list[Entry]]:
    """Clinical resources by section key, in input order, entered-in-error left out."""
    out: dict[str, list[Entry]] = {}
    for entry in index.entries:
        if index.canonical(entry) is not entry:
            continue
        kind = section_of(entry.resource)
        if kind is None:
            continue
        _check_subject(index, entry)
        out.setdefault(kind, []).append(entry)
    # Observations a report or panel lists travel inside it, not as section entries.
    members = {m.key for m in _members(index, out)}
    for key in ("results", "vital_signs"):
        if key in out:
            out[key] = [e for e in out[key] if e.key not in members]
    return {k: v for k, v in out.items() if v}


def contents(index: BundleIndex, grouped: Mapping[str, list[Entry]]) -> list[Entry]:
    """Every entry the document carries, in its order: the patient, what the sections list
    (in section order), the observations of reports and panels, then what those reference."""
    included: list[Entry] = [index.patient]
    for key in (s.key for s in SECTIONS):
        included.extend(grouped.get(key, []))
    included.extend(_members(index, grouped))
    included = _unique(included)
    included.extend(e for e in _supporting(index, included) if e not in included)
    return included


def _members(index: BundleIndex, grouped: Mapping[str, list[Entry]]) -> list[Entry]:
    members: list[Entry] = []
    for key in ("results", "vital_signs"):
        for entry in grouped.get(key, []):
            for ref in member_refs(entry.resource):
                target = index.resolve_ref(ref, entry)
                if target is not None and target.type == "Observation":
                    members.append(target)
    return members


def _supporting(index: BundleIndex, included: list[Entry]) -> list[Entry]:
    out: list[Entry] = []
    queue = list(included)
    seen = {e.key for e in included}
    while queue:
        entry = queue.pop(0)
        for target in index.iter_references(entry):
            if target.key in seen or target.type not in _SUPPORTING:
                continue
            seen.add(target.key)
            out.append(target)
            queue.append(target)
    return out


def _check_subject(index: BundleIndex, entry: Entry) -> None:
    name = SUBJECT_FIELD[entry.type]
    ref = entry.resource.get(name)
    if not isinstance(ref, Mapping) or not ref.get("reference"):
        raise AdaptError(f"{entry.where} {name}: no reference to the patient")
    target = index.resolve_ref(ref, entry)
    if target is not index.patient:
        raise AdaptError(
            f"{entry.where} {name}: {ref.get('reference')!r} is not the patient of this "
            f"summary ({index.patient.where})"
        )


def contributes(doc: Any) -> bool:
    """Whether a Bundle has something for the summary: an entry some section lists.

    The resources looked at are the Bundle's entries, as :func:`select` reads them; a Bundle of
    bills or consents alone has none and adds nothing, a clinical Bundle that also carries an
    Invoice or a Consent is read for its clinical entries (the others are never listed).
    """
    entries = doc.get("entry") if isinstance(doc, Mapping) else None
    return any(
        isinstance(entry, Mapping)
        and isinstance(resource := entry.get("resource"), Mapping)
        and section_of(resource) is not None
        for entry in (entries if isinstance(entries, list) else [])
    )


def section_of(resource: Mapping[str, Any]) -> str | None:
    """The key of the section that lists ``resource``; None when no section does."""
    t = resource.get("resourceType")
    if t not in SUBJECT_FIELD:
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
        categories = {
            (c.get("system"), c.get("code"))
            for cat in resource.get("category") or []
            for c in codings(cat)
        }
        if (OBSERVATION_CATEGORY, "vital-signs") in categories:
            return "vital_signs"
        return "results"
    if t == "DiagnosticReport":
        return "results"
    return None


def member_refs(resource: Mapping[str, Any]) -> list[Any]:
    """The references to the observations a report (``result``) or panel (``hasMember``) groups."""
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
