"""One attempt at a delivery, whatever the transport: the verdict and what the peer answered.

The outbox keeps, per delivery, the endpoint and the bytes built when it was queued
(:mod:`exchange.delivery.messages`), and for each attempt calls :func:`attempt`. The answer is
an :class:`Attempt`: its ``outcome`` says whether to stop (delivered, or refused for good) or
to ask :func:`exchange.delivery.backoff.next_attempt` when to try again, passing on the peer's
``retry_after``. The rest is what the delivery's ledger entry commits to: the HTTP status and
``Location`` of a FHIR server, or the exact ACK bytes of an HL7 v2 receiver.

An attempt never raises for anything the network or the peer does; it raises ``TypeError``
only when the payload does not fit the endpoint (a caller's mistake, not the peer's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import httpx

from exchange.delivery import fhir_push, mllp
from exchange.delivery.endpoints import Endpoint, FhirEndpoint
from exchange.delivery.messages import Document
from exchange.delivery.result import Outcome
from exchange.delivery.smart_client import TokenCache

__all__ = ["Attempt", "attempt"]


@dataclass(frozen=True)
class Attempt:
    """The verdict on one attempt and the peer's answer.

    ``answer`` holds the peer's bytes: the ACK (or whatever the HL7 v2 receiver sent in its
    place) for MLLP, the response body up to the cap for FHIR. ``status`` and ``location`` are
    FHIR's, ``ack_code`` (MSA-1) is MLLP's; each is empty for the other transport and when no
    answer arrived.
    """

    outcome: Outcome
    reason: str = ""  # why it was not delivered, for the operator; empty when delivered
    answer: bytes = field(default=b"", repr=False)
    status: int | None = None
    location: str | None = None
    ack_code: str = ""
    retry_after: timedelta | None = None


async def attempt(
    endpoint: Endpoint,
    payload: Document | bytes,
    *,
    client: httpx.AsyncClient | None = None,
    tokens: TokenCache | None = None,
    timeout: float = 30.0,
) -> Attempt:
    """Send ``payload`` to ``endpoint`` once.

    A FHIR endpoint takes a :class:`~exchange.delivery.messages.Document` and needs ``client``
    (one :func:`~exchange.delivery.fhir_push.new_client` for the process) and, for SMART
    credentials, the process's ``tokens``; an MLLP endpoint takes the message bytes.
    """
    if isinstance(endpoint, FhirEndpoint):
        if not isinstance(payload, Document) or client is None:
            raise TypeError("a FHIR endpoint takes a Document and an HTTP client")
        pushed = await fhir_push.push_document(
            endpoint,
            payload.body,
            payload.identifier,
            client=client,
            timeout=timeout,
            tokens=tokens,
        )
        return Attempt(
            pushed.outcome,
            "" if pushed.outcome is Outcome.DELIVERED else pushed.reason,
            pushed.body,
            status=pushed.status,
            location=pushed.location,
            retry_after=pushed.retry_after,
        )
    if not isinstance(payload, bytes):
        raise TypeError("an MLLP endpoint takes the HL7 v2 message's bytes")
    try:
        ack = await mllp.send(endpoint.host, endpoint.port, payload, timeout=timeout)
    except mllp.MllpError as e:
        outcome = Outcome.RETRY if e.retryable else Outcome.PERMANENT
        return Attempt(outcome, e.reason, e.answer)
    reason = ""
    if ack.outcome is not Outcome.DELIVERED:
        details = "; ".join(
            f"{err.location or '?'} {err.code} {err.diagnostic or err.code_text}".strip()
            for err in ack.errors
        )
        reason = f"{ack.code}: {ack.text or 'no text'}" + (f" ({details})" if details else "")
    return Attempt(ack.outcome, reason, ack.raw, ack_code=ack.code)
