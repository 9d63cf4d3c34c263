"""HL7 v2.5.1 messages from FHIR R4 Bundles, built and validated with hl7apy (STRICT).

Four messages, for the systems hospitals abroad already run, one module each:

- ``ADT_A08`` (``adt``) - ADT^A08 "update patient information" in structure ADT_A01
  (Chapter 3, §3.3.8): PID, PV1, AL1 per allergy, DG1 per diagnosis, PR1 per procedure.
- ``ORU_R01`` (``oru``) - unsolicited observation results (Chapter 7, §7.3.1): one OBR per
  DiagnosticReport or panel (or per single Observation), OBX with LOINC codes and UCUM units,
  NTE for notes.
- ``MDM_T02`` (``mdm``) - original document notification and content (Chapter 9, §9.6.2): TXA
  and one OBX of type ED carrying, Base64-encoded, the PDF of a DocumentReference when the
  Bundles hold one, else the IPS of these Bundles (``adapters.ips``).
- ``RDS_O13`` (``rds``) - pharmacy dispense (Chapter 4A, §4A.3.9): ORC + RXD per
  MedicationDispense with lot (RXD-18), expiry (RXD-19) and manufacturer (RXD-20); the GS1
  serial number (AI 21) goes in an OBX because RXD has no field for it.

What they share is in ``message`` (MSH, EVN, PID, PV1, NTE, validation) and ``fields`` (field
assignment, coded elements, the message text); ``text`` escapes values and writes dates, and
``read`` parses messages back, ours and other senders'.

Output is deterministic: the clock (MSH-7, EVN-2) and the control id (MSH-10) are inputs, and
the same Bundles give the same bytes. Values are escaped (``adapters.hl7v2.text``); CR, LF, VT
and FS inside a value raise :class:`AdaptError` naming the element and the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from adapters.base import AdaptError, AdaptOptions
from adapters.hl7v2.adt import AdtA08
from adapters.hl7v2.mdm import MdmT02
from adapters.hl7v2.message import MessageBuilder
from adapters.hl7v2.oru import OruR01
from adapters.hl7v2.rds import RdsO13
from adapters.ips import content_id
from adapters.ips_index import BundleIndex
from adapters.ips_json import loads_bundle
from adapters.terminology import ConceptMapSet, default_concept_maps

__all__ = ["MESSAGES", "adapt", "build_message"]

_BUILDERS: dict[str, type[MessageBuilder]] = {b.name(): b for b in (AdtA08, OruR01, MdmT02, RdsO13)}

# message name -> (MSH-9.1 code, MSH-9.2 trigger, MSH-9.3 structure)
MESSAGES = {name: b.MESSAGE for name, b in _BUILDERS.items()}

_CONTROL_ID = re.compile(r"^[\x21-\x7e]{1,20}$")


def build_message(
    bundles: Sequence[Mapping[str, Any]],
    message: str,
    *,
    now: datetime,
    control_id: str,
    sending_application: str = "MEDLEDGER",
    sending_facility: str | None = None,
    receiving_application: str | None = None,
    receiving_facility: str | None = None,
    maps: ConceptMapSet | None = None,
) -> str:
    """Build one HL7 v2.5.1 message from the Bundles of one patient; segments joined by CR.

    ``message`` is ``ADT_A08``, ``ORU_R01``, ``MDM_T02`` or ``RDS_O13`` (``ADT^A08`` also
    accepted). ``now`` stamps MSH-7 (timezone-aware); ``control_id`` is MSH-10 (1-20
    printable ASCII). ``sending_facility`` is MSH-4.1; by default the identifier of the
    encounter's service provider when it fits HL7's 20 characters, else the application.
    """
    name = message.replace("^", "_").upper()
    if name not in MESSAGES:
        raise AdaptError(f"message {message!r}: not one of {', '.join(sorted(MESSAGES))}")
    if not isinstance(control_id, str) or not _CONTROL_ID.match(control_id):
        raise AdaptError(f"control id {control_id!r}: MSH-10 takes 1-20 printable ASCII characters")
    builder = _BUILDERS[name](BundleIndex(bundles), now, maps or default_concept_maps(), control_id)
    return builder.build(
        sending_application=sending_application,
        sending_facility=sending_facility,
        receiving_application=receiving_application,
        receiving_facility=receiving_facility,
    )


def adapt(bundles: list[bytes], options: AdaptOptions) -> bytes:
    """``medledger adapt hl7v2``: Bundle files in, one message out (UTF-8, CR after each segment).

    ``options.message`` picks the message (default ``ORU_R01``); ``options.control_id`` is
    MSH-10, by default derived from the input bytes so the same files give the same message.
    """
    docs = [loads_bundle(data, f"input {i + 1}") for i, data in enumerate(bundles)]
    control_id = options.control_id or content_id("ML", bundles)[:20]
    text = build_message(docs, options.message or "ORU_R01", now=options.now, control_id=control_id)
    return (text + "\r").encode("utf-8")
