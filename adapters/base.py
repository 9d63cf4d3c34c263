"""What every adapter takes and raises."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# Canonical base of medledger's own FHIR artefacts (extensions, code systems, maps). ".example"
# is reserved (RFC 6761): it marks these URLs as not yet registered; they change here, and in
# the ConceptMap files, when they are.
CANONICAL_BASE = "https://fhir.medledger.example"


@dataclass(frozen=True)
class AdaptOptions:
    """What an adapter may vary on; the clock and ids are injected so output is deterministic."""

    now: datetime
    message: str | None = None  # HL7 v2 message type, e.g. ORU_R01
    control_id: str | None = None  # HL7 v2 MSH-10 / document ids
    language: str | None = None  # target language for translated narrative, e.g. "en"
    location: str | None = None  # EPCIS: the site's GLN / SGLN when a Bundle names none


class AdaptError(ValueError):
    """The input cannot be adapted; the message names the resource and field at fault."""
