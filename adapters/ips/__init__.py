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

By job: ``sections`` says which records go in which section and what else the document
carries; ``document`` writes the Composition, the sections with their narrative, and the
resource copies; ``rows`` writes the cells of one resource in a section's table.

Output is deterministic: the clock and the document id are inputs, fullUrls are name-based
UUIDs (RFC 9562 §5.5) of the document id and each resource's position in the input.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from adapters import narrative as nv
from adapters.base import AdaptError, AdaptOptions
from adapters.ips.document import DocumentBuilder
from adapters.ips.sections import SECTIONS, contributes
from adapters.ips_index import BundleIndex
from adapters.ips_json import dumps, loads_bundle
from adapters.terminology import ConceptMapSet, default_concept_maps

__all__ = ["SECTIONS", "adapt", "build_ips", "content_id", "contributes"]

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


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
    builder = DocumentBuilder(index, now, document_id, maps or default_concept_maps())
    return builder.build(language)


def adapt(bundles: list[bytes], options: AdaptOptions) -> bytes:
    """``medledger adapt ips``: Bundle files in, one IPS document out (canonical JSON, UTF-8).

    The document id is ``options.control_id`` when given, else derived from the input bytes,
    so the same files give the same document.
    """
    docs = [loads_bundle(data, f"input {i + 1}") for i, data in enumerate(bundles)]
    document_id = options.control_id or content_id("ips", bundles)
    return dumps(
        build_ips(docs, now=options.now, document_id=document_id, language=options.language)
    )


def content_id(prefix: str, inputs: Sequence[bytes]) -> str:
    """A stable id for outputs of the same inputs: ``prefix-`` and 32 hex digits of SHA-256."""
    digest = hashlib.sha256()
    for data in inputs:
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return f"{prefix}-{digest.hexdigest()[:32]}"
