"""The resources of several Bundles, seen as one record of one patient.

Hospitals send one encounter in several submissions (the clinical record, then the discharge
medication, then a dispense), each a Bundle with its own copy of the Patient. Both the IPS and
the HL7 v2 adapters need the same view: every resource once, references resolved across
Bundles, and exactly one patient. FHIR R4 §2.36 Bundle ("Resolving references in Bundles")
gives the order followed here: the entry's own Bundle first, by ``fullUrl`` then by
``Type/id``; then the other Bundles.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.base import AdaptError

_RELATIVE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")

# Systems whose displays are international terms (English by convention of the code system).
INTERNATIONAL_SYSTEMS = (
    "http://loinc.org",
    "http://snomed.info/sct",
    "http://hl7.org/fhir/sid/icd-10",
    "http://www.whocc.no/atc",
    "http://hl7.org/fhir/sid/cvx",
    "http://standardterms.edqm.eu",
    "http://unitsofmeasure.org",
)

_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def has_cjk(value: str) -> bool:
    """True when ``value`` holds Chinese, Japanese or Korean script."""
    return bool(_CJK.search(value))


@dataclass(frozen=True)
class Entry:
    """One resource as it came: which Bundle, which entry, and its fullUrl."""

    bundle: int
    position: int
    full_url: str | None
    resource: Mapping[str, Any]

    @property
    def type(self) -> str:
        return str(self.resource.get("resourceType"))

    @property
    def id(self) -> str | None:
        rid = self.resource.get("id")
        return rid if isinstance(rid, str) else None

    @property
    def where(self) -> str:
        """How error messages name this resource: ``Observation/obs-1`` or its entry index."""
        if self.id:
            return f"{self.type}/{self.id}"
        return f"Bundle[{self.bundle}].entry[{self.position}] ({self.type})"

    @property
    def key(self) -> str:
        return f"{self.bundle}:{self.position}"


def _canonical(resource: Mapping[str, Any]) -> str:
    return json.dumps(resource, sort_keys=True, ensure_ascii=False, default=str)


class BundleIndex:
    """Entries of several Bundles with cross-Bundle reference resolution and one patient."""

    def __init__(self, bundles: Sequence[Mapping[str, Any]]) -> None:
        if not bundles:
            raise AdaptError("no Bundle given")
        entries: list[Entry] = []
        seen: dict[tuple[str, str | None, str], Entry] = {}
        self._alias: dict[str, Entry] = {}
        for bi, bundle in enumerate(bundles):
            if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
                raise AdaptError(f"Bundle[{bi}]: resourceType is not Bundle")
            raw_entries = bundle.get("entry") or []
            if not isinstance(raw_entries, list):
                raise AdaptError(f"Bundle[{bi}].entry: not a list")
            for ei, raw in enumerate(raw_entries):
                resource = raw.get("resource") if isinstance(raw, Mapping) else None
                if not isinstance(resource, Mapping) or not isinstance(
                    resource.get("resourceType"), str
                ):
                    raise AdaptError(f"Bundle[{bi}].entry[{ei}].resource: missing or untyped")
                full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
                entry = Entry(bi, ei, full_url, resource)
                # The same resource resubmitted in a later Bundle appears once; later copies
                # resolve to the first.
                ident = (entry.type, entry.id, _canonical(resource))
                if entry.id is not None and ident in seen:
                    self._alias[entry.key] = seen[ident]
                    continue
                if entry.id is not None:
                    seen[ident] = entry
                entries.append(entry)
        self.entries: tuple[Entry, ...] = tuple(entries)
        self._bundles = len(bundles)
        self.patient, self._patients = self._one_patient()

    # -- lookup -------------------------------------------------------------------------------

    def canonical(self, entry: Entry) -> Entry:
        """The entry that stands for ``entry`` (itself, the first copy, or the one patient)."""
        entry = self._alias.get(entry.key, entry)
        if entry.type == "Patient" and entry.key in self._patients:
            return self.patient
        return entry

    def of_type(self, *types: str) -> list[Entry]:
        return [e for e in self.entries if e.type in types and self.canonical(e) is e]

    def resolve(self, reference: str | None, origin: Entry) -> Entry | None:
        """The entry a reference from ``origin`` points at; None when it is not in the Bundles."""
        if not reference or reference.startswith("#"):
            return None
        origin = self._alias.get(origin.key, origin)
        match = _RELATIVE.search(reference)
        for pass_same_bundle in (True, False):
            candidates = [
                e for e in self.entries if (e.bundle == origin.bundle) == pass_same_bundle
            ]
            for e in candidates:
                if e.full_url == reference:
                    return self.canonical(e)
            if match:
                rtype, rid = match.group(1), match.group(2)
                for e in candidates:
                    if e.type == rtype and e.id == rid:
                        return self.canonical(e)
        return None

    def resolve_ref(self, value: Any, origin: Entry) -> Entry | None:
        """Resolve a Reference datatype (a dict with ``reference``)."""
        if isinstance(value, Mapping):
            ref = value.get("reference")
            return self.resolve(ref if isinstance(ref, str) else None, origin)
        return None

    def iter_references(self, entry: Entry) -> Iterator[Entry]:
        """Every entry that ``entry``'s resource references, in document order."""
        for ref in _references(entry.resource):
            target = self.resolve(ref, entry)
            if target is not None:
                yield target

    # -- the patient --------------------------------------------------------------------------

    def _one_patient(self) -> tuple[Entry, frozenset[str]]:
        patients = [e for e in self.entries if e.type == "Patient"]
        if not patients:
            raise AdaptError("no Patient resource in the Bundles; a summary is about one patient")
        first = patients[0]
        first_ids = _identifiers(first.resource)
        same = {first.key}
        for other in patients[1:]:
            other_ids = _identifiers(other.resource)
            if (first_ids & other_ids) or (
                not first_ids and not other_ids and other.id == first.id
            ):
                same.add(other.key)
                continue
            raise AdaptError(
                f"{other.where} (Bundle[{other.bundle}].entry[{other.position}]): a second "
                f"patient, sharing no identifier with {first.where}; the Bundles must be about "
                "exactly one patient"
            )
        return first, frozenset(same)


def _identifiers(resource: Mapping[str, Any]) -> frozenset[str]:
    out = set()
    for ident in resource.get("identifier") or []:
        if isinstance(ident, Mapping) and ident.get("value"):
            out.add(f"{ident.get('system', '')}|{ident['value']}")
    return frozenset(out)


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        ref = node.get("reference")
        if isinstance(ref, str):
            yield ref
        for key, value in node.items():
            if key == "contained":
                continue
            yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


# -- reading FHIR values ----------------------------------------------------------------------


def codings(concept: Any) -> list[Mapping[str, Any]]:
    if not isinstance(concept, Mapping):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, Mapping)]


def concept_text(concept: Any) -> str:
    """What a person wrote or picked: ``text``, else the first display, else the first code."""
    if not isinstance(concept, Mapping):
        return ""
    if isinstance(text := concept.get("text"), str) and text:
        return text
    for coding in codings(concept):
        if coding.get("display"):
            return str(coding["display"])
    for coding in codings(concept):
        if coding.get("code"):
            return str(coding["code"])
    return ""


def international_display(concept: Any) -> str | None:
    """A display from an international code system, when one is in Latin script."""
    for system in INTERNATIONAL_SYSTEMS:
        for coding in codings(concept):
            display = coding.get("display")
            if coding.get("system") == system and isinstance(display, str) and display:
                if not has_cjk(display):
                    return display
    return None


def entered_in_error(resource: Mapping[str, Any]) -> bool:
    """True for a record withdrawn as a mistake (status, or verificationStatus); left out."""
    if resource.get("status") in ("entered-in-error", "cancelled"):
        return True
    verification = {c.get("code") for c in codings(resource.get("verificationStatus"))}
    return "entered-in-error" in verification


def first_of(resource: Mapping[str, Any], prefix: str) -> tuple[str, Any] | None:
    """The ``prefix[x]`` choice element present in ``resource``: (suffix, value)."""
    for key, value in resource.items():
        if key.startswith(prefix) and key[len(prefix) :][:1].isupper():
            return key[len(prefix) :], value
    return None


def choice_date(resource: Mapping[str, Any], prefix: str) -> str:
    """A date for display from ``prefix[x]`` (dateTime, Period start, or string)."""
    found = first_of(resource, prefix)
    if not found:
        return ""
    kind, value = found
    if kind == "Period" and isinstance(value, Mapping):
        start, end = value.get("start", ""), value.get("end", "")
        return f"{start[:10]} – {end[:10]}" if end and start else (start or end)[:10]
    if isinstance(value, str):
        return value[:10]
    return ""
