"""Reading the traceability parts of an RWD Bundle: where packs, authorisations and codes live.

The FHIR R4 mapping (docs/adapters-trace.md has the full table):

- ``Medication.code.coding`` with system ``https://www.gs1.org/gtin``: the pack's GTIN.
- ``Medication.batch.lotNumber`` / ``.expirationDate``: GS1 (10) and (17).
- ``Medication.extension`` ``.../StructureDefinition/trace-code`` (``valueString``, repeating):
  the pack's code as scanned or as its HRI -- a GS1 code (serial (21) and NHRN live only here)
  or a Chinese 20-digit trace code.
- ``Medication.extension`` ``.../StructureDefinition/foreign-marketing-authorisation``: the
  authorisation abroad that makes it a special-import product, with sub-extensions ``number``
  (valueString), ``country`` (valueCodeableConcept, ISO 3166-1 alpha-2), ``holder``
  (valueReference to the marketing-authorisation holder's Organization), ``importApproval``
  (valueString, the pilot zone's special-import approval, required: it is the licence the
  pack was used under and a key the regulator searches by) and ``sourceCountry`` (where the
  pack was obtained, when not the authorising country). The same extension sits on a Device.
- ``Device.udiCarrier`` (issuer ``http://hl7.org/fhir/NamingSystem/gs1-di``) with
  ``deviceIdentifier`` (GTIN), ``carrierHRF`` and/or ``carrierAIDC``; ``Device.lotNumber``,
  ``serialNumber``, ``expirationDate`` carry the parsed values.

Expressions are FHIRPath rooted at ``Bundle`` with 0-based indexes and JSON element names
below the choice level (``extension[0].valueString``), as the intake reports them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from adapters.base import CANONICAL_BASE

GTIN_SYSTEM = "https://www.gs1.org/gtin"
GLN_SYSTEMS = ("https://www.gs1.org/gln", "urn:oid:1.3.160")
GS1_DI_ISSUERS = ("http://hl7.org/fhir/NamingSystem/gs1-di", "urn:oid:1.3.160")
ISO3166_SYSTEM = "urn:iso:std:iso:3166"
MEDDRA_SYSTEM = "http://terminology.hl7.org/CodeSystem/mdr"
TRANSLATION_EXT = "http://hl7.org/fhir/StructureDefinition/translation"
FMA_EXT = f"{CANONICAL_BASE}/StructureDefinition/foreign-marketing-authorisation"
TRACE_CODE_EXT = f"{CANONICAL_BASE}/StructureDefinition/trace-code"

USE_TYPES = ("MedicationAdministration", "MedicationDispense", "MedicationStatement")

# GB/T 9704-2012 (the layout of official documents) puts the year of a document number in
# hexagonal brackets, 琼特药审〔2026〕0158号; typed copies use [] () 【】 〖〗 and full-width forms.
_BRACKETS = str.maketrans("[(【〖])】〗", "〔〔〔〔〕〕〕〕")


@dataclass(frozen=True)
class Located:
    """A resource of the Bundle with the FHIRPath that reaches it."""

    resource: Mapping[str, Any]
    path: str
    full_url: str | None
    container: Mapping[str, Any] | None = None

    @property
    def type(self) -> str | None:
        kind = self.resource.get("resourceType")
        return kind if isinstance(kind, str) else None


@dataclass(frozen=True)
class ForeignAuthorisation:
    """The foreign-marketing-authorisation extension, read leniently (checks are elsewhere)."""

    path: str
    number: str | None
    country: str | None
    holder: str | None
    import_approval: str | None
    source_country: str | None


class BundleView:
    """Entry and contained resources of a Bundle, and reference resolution between them.

    References are resolved the way FHIR R4 bundle.html#references describes: ``#id`` within
    the referring resource's ``contained``, an absolute URL or ``urn:uuid:`` against
    ``fullUrl``, ``Type/id`` against the resource's type and id (and a ``fullUrl`` ending so).
    """

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc
        self.located: list[Located] = []
        entries = doc.get("entry") if isinstance(doc, Mapping) else None
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            resource = entry.get("resource") if isinstance(entry, Mapping) else None
            if not isinstance(resource, Mapping):
                continue
            full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
            outer = Located(resource, f"Bundle.entry[{i}].resource", full_url)
            self.located.append(outer)
            contained = resource.get("contained")
            for j, inner in enumerate(contained if isinstance(contained, list) else []):
                if isinstance(inner, Mapping):
                    self.located.append(
                        Located(inner, f"{outer.path}.contained[{j}]", None, container=resource)
                    )

    def of_type(self, *types: str) -> Iterator[Located]:
        """Resources of the given types, entries and contained, in document order."""
        for loc in self.located:
            if loc.type in types:
                yield loc

    def resolve(self, reference: Any, source: Located) -> Located | None:
        """The resource a Reference (object) points to, or None when it is not in the Bundle."""
        ref = reference.get("reference") if isinstance(reference, Mapping) else None
        if not isinstance(ref, str) or not ref:
            return None
        if ref.startswith("#"):
            host = source.container if source.container is not None else source.resource
            for loc in self.located:
                if loc.container is host and loc.resource.get("id") == ref[1:]:
                    return loc
            return None
        for loc in self.located:
            if loc.full_url is not None and loc.full_url == ref:
                return loc
        parts = ref.split("/")
        if len(parts) >= 2:
            kind, rid = parts[-2], parts[-1]
            for loc in self.located:
                if loc.container is None and loc.type == kind and loc.resource.get("id") == rid:
                    return loc
        return None


def extensions(element: Any, url: str) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(index, extension) of ``element.extension`` with the given url."""
    items = element.get("extension") if isinstance(element, Mapping) else None
    for i, ext in enumerate(items if isinstance(items, list) else []):
        if isinstance(ext, Mapping) and ext.get("url") == url:
            yield i, ext


def foreign_authorisation(loc: Located) -> ForeignAuthorisation | None:
    """The first foreign-marketing-authorisation extension of a Medication or Device."""
    for i, ext in extensions(loc.resource, FMA_EXT):
        subs: dict[str, Any] = {}
        for _, sub in _sub_extensions(ext):
            subs.setdefault(str(sub.get("url")), sub)
        return ForeignAuthorisation(
            path=f"{loc.path}.extension[{i}]",
            number=_string(subs.get("number"), "valueString"),
            country=_country(subs.get("country")),
            holder=_reference(subs.get("holder")),
            import_approval=_string(subs.get("importApproval"), "valueString"),
            source_country=_country(subs.get("sourceCountry")),
        )
    return None


def normalise_approval(value: str) -> str:
    """The form in which special-import approval numbers are compared and indexed.

    NFKC (full-width letters, digits and brackets to their plain forms), whitespace removed,
    and every kind of bracket as the hexagonal ones of GB/T 9704: ``琼特药审[2026] 0158号``
    and ``琼特药审〔2026〕0158号`` are the same approval. ValueError when nothing is left.
    """
    if not isinstance(value, str):
        raise ValueError("an import approval number is text")
    # NFKC again once the spaces are out: a mark they kept apart composes with its letter.
    bare = "".join(unicodedata.normalize("NFKC", value).split())
    text = unicodedata.normalize("NFKC", bare).translate(_BRACKETS)
    if not text:
        raise ValueError("an import approval number cannot be empty")
    return text


def gtin_codings(resource: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(FHIRPath, code) of the GTIN codings in ``code.coding``."""
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, Mapping) else None
    for k, coding in enumerate(codings if isinstance(codings, list) else []):
        if isinstance(coding, Mapping) and coding.get("system") == GTIN_SYSTEM:
            value = coding.get("code")
            if isinstance(value, str):
                yield f"code.coding[{k}].code", value


def trace_code_values(resource: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(FHIRPath, scan) of the trace-code extensions."""
    for i, ext in extensions(resource, TRACE_CODE_EXT):
        value = ext.get("valueString")
        if isinstance(value, str):
            yield f"extension[{i}].valueString", value


def translation(parent: Mapping[str, Any], element: str, lang: str) -> str | None:
    """The FHIR translation extension's content for ``lang`` on ``parent._element``."""
    shadow = parent.get(f"_{element}")
    for _, ext in extensions(shadow, TRANSLATION_EXT):
        subs = {str(s.get("url")): s for _, s in _sub_extensions(ext)}
        if _string(subs.get("lang"), "valueCode") == lang:
            return _string(subs.get("content"), "valueString")
    return None


def text_of(concept: Any) -> str | None:
    """CodeableConcept.text, else the first coding's display."""
    if not isinstance(concept, Mapping):
        return None
    if isinstance(concept.get("text"), str) and concept["text"].strip():
        return str(concept["text"])
    for coding in concept.get("coding") or []:
        if isinstance(coding, Mapping) and isinstance(coding.get("display"), str):
            return str(coding["display"])
    return None


def codes(concept: Any, system: str) -> list[Mapping[str, Any]]:
    """The codings of a CodeableConcept in one system."""
    if not isinstance(concept, Mapping):
        return []
    return [
        c
        for c in concept.get("coding") or []
        if isinstance(c, Mapping) and c.get("system") == system and isinstance(c.get("code"), str)
    ]


def _sub_extensions(ext: Mapping[str, Any]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    items = ext.get("extension")
    for i, sub in enumerate(items if isinstance(items, list) else []):
        if isinstance(sub, Mapping):
            yield i, sub


def _string(ext: Any, key: str) -> str | None:
    value = ext.get(key) if isinstance(ext, Mapping) else None
    return value if isinstance(value, str) and value.strip() else None


def _country(ext: Any) -> str | None:
    concept = ext.get("valueCodeableConcept") if isinstance(ext, Mapping) else None
    found = codes(concept, ISO3166_SYSTEM)
    return str(found[0]["code"]) if found else None


def _reference(ext: Any) -> str | None:
    ref = ext.get("valueReference") if isinstance(ext, Mapping) else None
    value = ref.get("reference") if isinstance(ref, Mapping) else None
    return value if isinstance(value, str) else None
