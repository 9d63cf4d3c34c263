"""What a delivery's ledger entry commits to: the record of its final outcome.

A final outcome (delivered, or failed for good) is one ledger entry of kind ``delivery``:
its sender the hospital that submitted the Bundle, its subject the patient's pseudonym, its
``commit`` SHA-256(salt || record). The record is canonical JSON (sorted keys, no spaces),
kept with its salt in the outbox row, and holds no PHI: which Bundle version went to which
Organization over which endpoint, the SHA-256 and length of the exact bytes sent and their
identifier (the IPS document's Bundle.identifier, or the message's MSH-10), and the peer's
answer (FHIR: its HTTP status and Location; MLLP: the MSA-1 code) with the SHA-256 of its
bytes. Anyone holding the bytes the receiver got, the record and its salt can check all of
it against the entry's receipt: ``commitment(salt, record) == entry.commit`` and
``record.sent.sha256 == SHA-256(bytes)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from exchange.delivery.attempt import Attempt

__all__ = ["DELIVERY_KIND", "MEDIA", "Sent", "record"]

DELIVERY_KIND = "delivery"
MEDIA = "application/json"


@dataclass(frozen=True)
class Sent:
    """The bytes an attempt carried, and the identifier the receiver knows them by."""

    body: bytes
    identifier: str

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.body).digest()


def _time(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat(timespec="milliseconds")


def record(
    *,
    delivery: str,
    bundle: tuple[str, int, int],
    recipient: str,
    transport: str,
    endpoint: str,
    outcome: str,
    attempts: int,
    queued: datetime,
    first_attempt: datetime | None,
    final: datetime,
    sent: Sent | None,
    answer: Attempt | None,
) -> bytes:
    """The canonical record of a final outcome (``bundle``: id, version, ledger index)."""
    bundle_id, version, index = bundle
    doc: dict[str, object] = {
        "delivery": delivery,
        "bundle": {"id": bundle_id, "version": version, "index": index},
        "recipient": f"Organization/{recipient}",
        "transport": transport,
        "endpoint": endpoint,
        "outcome": outcome,
        "attempts": attempts,
        "queued": _time(queued),
        "first_attempt": _time(first_attempt),
        "final": _time(final),
        "sent": None
        if sent is None
        else {
            "sha256": sent.digest.hex(),
            "length": len(sent.body),
            "identifier": sent.identifier,
        },
        "answer": None
        if answer is None
        else {
            "status": answer.status,
            "location": answer.location,
            "ack_code": answer.ack_code or None,
            "sha256": hashlib.sha256(answer.answer).hexdigest(),
            "length": len(answer.answer),
        },
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
