"""Human genetic resources: genomic data is refused unless the Bundle names its approval.

China's Regulations on the Management of Human Genetic Resources (2019, arts. 21-28) and their
2023 implementing rules require an approval (or a filing) before human genetic resource
information is provided abroad or used in international cooperation. The exchange cannot judge
an approval, but it can refuse to carry genomic data that does not name one, so that nothing
leaves the hospital by accident.

What counts as genomic data here: a MolecularSequence resource; an Observation or
DiagnosticReport categorised as genetics (HL7 v2 table 0074 `GE`, as the FHIR Genomics
Reporting IG does) or coded with a genetic-report LOINC code; an attachment that is a VCF, BAM,
CRAM or FASTQ file by content type or file name. The approval travels inside the committed
bytes, as a Bundle.meta.tag (Bundle has no extensions in R4) in the system
:data:`APPROVAL_SYSTEM` whose code is the approval or filing number.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .outcome import IntakeError, Issue

APPROVAL_SYSTEM = "https://medledger.example/fhir/CodeSystem/hgr-approval"

GENETICS_CATEGORY = ("http://terminology.hl7.org/CodeSystem/v2-0074", "GE")
# LOINC codes of genetic test reports and variant panels (Genomics Reporting IG STU2).
GENETIC_LOINC = frozenset(
    {
        "51969-4",  # Genetic analysis report
        "81247-9",  # Master HL7 genetic variant reporting panel
        "69548-6",  # Genetic variant assessment
        "69547-8",  # Genomic ref allele
        "69551-0",  # Genomic alt allele
        "48018-6",  # Gene studied [ID]
        "81252-9",  # Discrete genetic variant
        "53037-8",  # Genetic disease sequence variation interpretation
    }
)
GENOMIC_MEDIA = frozenset(
    {
        "text/vcf",
        "text/x-vcf",
        "application/vcf",
        "application/x-vcf",
        "application/bam",
        "application/x-bam",
        "application/x-cram",
        "application/cram",
        "application/x-fastq",
        "text/x-fastq",
    }
)
GENOMIC_SUFFIXES = (".vcf", ".vcf.gz", ".bcf", ".bam", ".cram", ".fastq", ".fastq.gz", ".fq")
LOINC = "http://loinc.org"


def approval_of(doc: dict[str, Any]) -> str | None:
    """The approval number the Bundle names in Bundle.meta.tag, if any."""
    meta = doc.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    for tag in tags if isinstance(tags, list) else []:
        if isinstance(tag, dict) and tag.get("system") == APPROVAL_SYSTEM:
            code = tag.get("code")
            if isinstance(code, str) and code.strip():
                return code.strip()
    return None


def genomic_findings(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(FHIRPath, what) for every piece of genomic data in the Bundle, in document order."""
    found: list[tuple[str, str]] = []
    for path, resource in _resources(doc):
        kind = resource.get("resourceType")
        if kind == "MolecularSequence":
            found.append((path, "a MolecularSequence"))
        elif kind in ("Observation", "DiagnosticReport") and _genetic_report(resource):
            found.append((path, f"a genetics {kind}"))
        for where, what in _attachments(resource, path):
            found.append((where, what))
    return found


def check_genomic_approval(doc: dict[str, Any]) -> None:
    """Refuse (422) genomic data in a Bundle that names no approval."""
    if approval_of(doc) is not None:
        return
    findings = genomic_findings(doc)
    if not findings:
        return
    raise IntakeError(
        422,
        [
            Issue(
                "error",
                "business-rule",
                f"{what} is human genetic resource information, which needs an approval or "
                "filing under China's human genetic resources rules: name its number in "
                f"Bundle.meta.tag (system {APPROVAL_SYSTEM}), or leave the genomic data out",
                path,
            )
            for path, what in findings
        ],
    )


def _resources(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    entries = doc.get("entry")
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        path = f"Bundle.entry[{i}].resource"
        yield path, resource
        contained = resource.get("contained")
        for j, inner in enumerate(contained if isinstance(contained, list) else []):
            if isinstance(inner, dict):
                yield f"{path}.contained[{j}]", inner


def _genetic_report(resource: dict[str, Any]) -> bool:
    categories = resource.get("category")
    for concept in categories if isinstance(categories, list) else [categories]:
        if GENETICS_CATEGORY in _codings(concept):
            return True
    return any(
        system == LOINC and code in GENETIC_LOINC for system, code in _codings(resource.get("code"))
    )


def _codings(concept: Any) -> list[tuple[Any, Any]]:
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return [
        (c.get("system"), c.get("code"))
        for c in (codings if isinstance(codings, list) else [])
        if isinstance(c, dict)
    ]


def _attachments(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """Attachments anywhere in a resource that carry sequence data files."""
    if isinstance(node, dict):
        media = node.get("contentType")
        if isinstance(media, str) and media.split(";")[0].strip().lower() in GENOMIC_MEDIA:
            yield path, f"an attachment of type {media.split(';')[0].strip()}"
        else:
            for name in ("url", "title"):
                value = node.get(name)
                if isinstance(value, str) and value.lower().endswith(GENOMIC_SUFFIXES):
                    if "contentType" in node or "data" in node:
                        yield path, f"an attachment named {value.rsplit('/', 1)[-1]!r}"
                        break
        for key, value in node.items():
            if key == "contained":
                continue  # contained resources are visited on their own
            yield from _attachments(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _attachments(item, f"{path}[{i}]")
