"""What each recipient receives, built from the patient's Bundles by the adapters.

A FHIR recipient receives the patient's International Patient Summary (``adapters.ips``), a
document Bundle written as compact canonical JSON; its Bundle.identifier is the key of the
conditional create. An MLLP recipient receives the HL7 v2.5.1 message it registered for
(``adapters.hl7v2``: ORU^R01, MDM^T02 or ADT^A08), UTF-8, each segment ended by CR.

Both are deterministic: the clock, the document id and the control id are the caller's. The
outbox builds the bytes once, when the delivery is queued, and keeps them: every retry sends
the same bytes, so the receiver's duplicate checks (the document's identifier, the message's
MSH-10) recognise a retry, and the delivery's ledger entry commits to the bytes that were
actually sent. Adapter refusals (:class:`adapters.base.AdaptError`) name the resource and
field at fault: such a delivery can never be built and is a permanent failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from adapters.hl7v2 import build_message
from adapters.ips import build_ips
from adapters.ips_json import dumps, loads_bundle
from exchange.delivery.endpoints import MLLP_MESSAGES

__all__ = ["Document", "ips_document", "v2_message"]


@dataclass(frozen=True)
class Document:
    """An IPS document Bundle's bytes and its identifier (system, value)."""

    body: bytes = field(repr=False)
    identifier: tuple[str, str]


def ips_document(
    bundles: Sequence[bytes], *, now: datetime, document_id: str, language: str | None = None
) -> Document:
    """The IPS of the patient whose stored Bundles are ``bundles`` (their exact bytes).

    ``now`` stamps the document; ``document_id`` (a FHIR id) is its Bundle.id and seeds its
    identifier, so one delivery keeps one identifier however often it is pushed.
    """
    docs = [loads_bundle(data, f"Bundle {i + 1}") for i, data in enumerate(bundles)]
    ips = build_ips(docs, now=now, document_id=document_id, language=language)
    identifier = ips["identifier"]
    return Document(dumps(ips, compact=True), (identifier["system"], identifier["value"]))


def v2_message(
    bundles: Sequence[bytes],
    message: str,
    *,
    now: datetime,
    control_id: str,
    receiving_application: str | None = None,
    receiving_facility: str | None = None,
) -> bytes:
    """The HL7 v2.5.1 ``message`` (``ORU_R01``, ``MDM_T02`` or ``ADT_A08``) with MSH-10
    ``control_id`` (1-20 printable ASCII), from the patient's stored Bundles."""
    name = message.replace("^", "_").upper()
    if name not in MLLP_MESSAGES:
        raise ValueError(f"message {message!r}: an MLLP recipient takes {', '.join(MLLP_MESSAGES)}")
    docs = [loads_bundle(data, f"Bundle {i + 1}") for i, data in enumerate(bundles)]
    text = build_message(
        docs,
        name,
        now=now,
        control_id=control_id,
        receiving_application=receiving_application,
        receiving_facility=receiving_facility,
    )
    return (text + "\r").encode("utf-8")
