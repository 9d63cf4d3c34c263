"""HL7 v2 from home hospitals: each message becomes a FHIR Bundle, submitted, and acknowledged.

For each frame the MLLP server (:mod:`exchange.delivery.mllp`) hands over, :func:`handler`:

1. reads the MSH (:func:`exchange.delivery.ack.read_header`); bytes that are no HL7 message
   are answered AR, ERR at MSH, code 100;
2. asks ``identify`` who sent it, from the peer's address and MSH-3/MSH-4; an unregistered
   sender gets AR, ERR at MSH-4, code 204, and nothing of the message is read further;
3. converts it (:func:`convert`): ORU^R01, MDM^T02 and ADT patient updates become a FHIR
   collection Bundle through ``adapters.hl7v2.read`` and ``adapters.hl7v2.fhir``. A message
   type, event, version or processing id not taken here is AR (resending it cannot help);
   a message whose content cannot be read is AE with an ERR naming the segment, its
   occurrence and the field;
4. calls ``submit`` with the Bundle's bytes and the sender's org; it returns the ledger index
   of the entry, and the answer is AA with MSA-3 ``ledger index <n>``. ``submit`` raises
   :class:`SubmitRefused` when the service refuses the Bundle (AE, code 207, its text in ERR);
   any other failure escapes to the server, which answers AE so the sender tries again.

The Bundle is a pure function of the message bytes (``adapters.hl7v2.fhir``): a sender that
repeats a message after a lost ACK submits the same Bundle bytes with the same identifier,
which the service recognises as a retry of the first submission.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from adapters.base import AdaptError
from adapters.hl7v2.fhir import to_bundle
from adapters.hl7v2.read import MessageError, V2Message, read_message
from adapters.ips_json import dumps
from exchange.delivery.ack import ErrorLocation, Header, Problem, build_ack, read_header
from exchange.delivery.mllp import Handler, Peer

__all__ = [
    "Converted",
    "Identify",
    "Refusal",
    "Submit",
    "SubmitRefused",
    "convert",
    "handler",
]

Identify = Callable[[Peer, Header], Awaitable[str | None]]
"""The org of a registered sender (peer address, MSH), or None."""

Submit = Callable[[bytes, str], Awaitable[int]]
"""Submit Bundle bytes as the given org; return the ledger index of its entry."""

# Table 0357 conditions that are about the message as a whole: resending cannot help (AR).
_REJECT_CODES = frozenset({200, 201, 202, 203, 204})
_CHARSETS = {"": "utf-8", "UNICODE UTF-8": "utf-8", "ASCII": "ascii", "8859/1": "latin-1"}


class SubmitRefused(Exception):
    """The service refused the converted Bundle; ``text`` says why (it goes to ERR-7)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class Refusal(Exception):
    """A message that is not converted: the ACK code (AE/AR) and the ERR it gets."""

    def __init__(self, code: str, problem: Problem) -> None:
        super().__init__(problem.text)
        self.code = code
        self.problem = problem


@dataclass(frozen=True)
class Converted:
    """A message as a FHIR Bundle: its bytes (canonical JSON) and Bundle.identifier."""

    bundle: bytes = field(repr=False)
    identifier: tuple[str, str]
    message: V2Message = field(repr=False)


def convert(message: bytes) -> Converted:
    """The FHIR Bundle of one HL7 v2 message, or :class:`Refusal` naming what is wrong."""
    header = read_header(message)
    encoding = _CHARSETS.get(header.charset)
    if encoding is None:
        raise _refusal(
            MessageError(
                f"MSH-18: character set {header.charset!r}; taken: "
                f"{', '.join(repr(c) for c in _CHARSETS if c)}",
                segment="MSH",
                field=18,
                code=103,
            )
        )
    try:
        text = message.decode(encoding)
    except UnicodeDecodeError as e:
        raise _refusal(
            MessageError(
                f"byte {e.start} is not {header.charset or 'UTF-8'} (MSH-18)",
                segment="MSH",
                field=18,
                code=102,
            )
        ) from None
    # Segments end with CR; a sender that ends them with CR LF or LF alone is still read.
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    try:
        read = read_message(text)
        doc = to_bundle(read)
    except MessageError as e:
        raise _refusal(e) from None
    except AdaptError as e:
        raise Refusal("AE", Problem(102, str(e))) from None
    identifier = doc["identifier"]
    return Converted(dumps(doc, compact=True), (identifier["system"], identifier["value"]), read)


def handler(
    identify: Identify,
    submit: Submit,
    *,
    application: str = "MEDLEDGER",
    facility: str = "MEDLEDGER",
) -> Handler:
    """The MLLP handler for inbound HL7 v2; ``application``/``facility`` name us in ACKs."""

    def ack(header: Header, code: str, text: str, problems: tuple[Problem, ...] = ()) -> bytes:
        return build_ack(
            header,
            code,
            control_id=uuid.uuid4().hex[:20],
            text=text,
            problems=problems,
            application=application,
            facility=facility,
        )

    async def handle(peer: Peer, message: bytes) -> bytes:
        header = read_header(message)
        if not header.control_id:
            reason = "not an HL7 v2 message with an MSH-10 control id"
            return ack(
                header,
                "AR",
                reason,
                (
                    Problem(
                        100 if not header.message_code else 101,
                        reason,
                        ErrorLocation("MSH", field=10),
                    ),
                ),
            )
        org = await identify(peer, header)
        if org is None:
            reason = "the sender is not registered here (MSH-4 or its address)"
            return ack(header, "AR", reason, (Problem(204, reason, ErrorLocation("MSH", field=4)),))
        try:
            converted = convert(message)
        except Refusal as r:
            return ack(header, r.code, r.problem.text, (r.problem,))
        try:
            index = await submit(converted.bundle, org)
        except SubmitRefused as e:
            return ack(header, "AE", e.text, (Problem(207, e.text),))
        return ack(header, "AA", f"ledger index {index}")

    return handle


def _refusal(e: MessageError) -> Refusal:
    location = ErrorLocation(e.segment, e.sequence, e.field, None, e.component)
    return Refusal("AR" if e.code in _REJECT_CODES else "AE", Problem(e.code, e.text, location))
