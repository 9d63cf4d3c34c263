"""Sending HL7 v2.5.1 over MLLP to a real receiver: python-hl7's asyncio MLLP server.

The receiver (``tests.delivery.peers.Hl7Receiver``) records every block it reads and answers
with ACKs that python-hl7 builds (``Message.create_ack``), or misbehaves as told.
"""

from __future__ import annotations

import asyncio
import socket

import hl7
import pytest

from exchange.delivery.ack import Ack
from exchange.delivery.messages import v2_message
from exchange.delivery.mllp import MAX_ANSWER, MllpError, frame, send
from exchange.delivery.result import Outcome
from tests.delivery.fixtures import NOW, boao_kr
from tests.delivery.peers import Hl7Receiver


def message(kind: str = "ORU_R01", control_id: str = "DLV-0001") -> bytes:
    return v2_message(boao_kr(), kind, now=NOW, control_id=control_id)


async def exchange(
    receiver: Hl7Receiver, data: bytes, *, timeout: float = 30.0, max_answer: int = MAX_ANSWER
) -> Ack:
    async with receiver:
        return await send("127.0.0.1", receiver.port, data, timeout=timeout, max_answer=max_answer)


@pytest.mark.parametrize("kind", ["ORU_R01", "MDM_T02", "ADT_A08"])
def test_each_message_arrives_byte_for_byte_and_aa_is_delivered(kind: str) -> None:
    receiver = Hl7Receiver("AA")
    data = message(kind)
    ack = asyncio.run(exchange(receiver, data))
    assert receiver.received == [data]  # exactly the bytes sent, MLLP framing removed
    parsed = hl7.parse(receiver.received[0].decode("utf-8"))  # python-hl7 reads our message
    assert (
        str(parsed.segment("MSH")(9))
        == {
            "ORU_R01": "ORU^R01^ORU_R01",
            "MDM_T02": "MDM^T02^MDM_T02",
            "ADT_A08": "ADT^A08^ADT_A01",
        }[kind]
    )
    assert (ack.code, ack.control_id, ack.outcome) == ("AA", "DLV-0001", Outcome.DELIVERED)
    assert ack.raw.startswith(b"MSH|^~\\&|") and b"\rMSA|AA|DLV-0001" in ack.raw


def test_enhanced_mode_commit_accept_is_delivered() -> None:
    ack = asyncio.run(exchange(Hl7Receiver("CA"), message()))
    assert (ack.code, ack.outcome) == ("CA", Outcome.DELIVERED)


def test_ae_is_retried_and_its_err_segment_is_read() -> None:
    ack = asyncio.run(exchange(Hl7Receiver("AE+ERR"), message()))
    assert (ack.code, ack.outcome) == ("AE", Outcome.RETRY)
    (err,) = ack.errors
    assert (err.location, err.code, err.code_text, err.severity) == (
        "OBX^1^5^1",
        "102",
        "Data type error",
        "E",
    )
    assert err.diagnostic == "OBX-5 is not a number"


@pytest.mark.parametrize(
    ("code", "outcome"),
    [("AR", Outcome.PERMANENT), ("CR", Outcome.PERMANENT), ("CE", Outcome.RETRY)],
)
def test_reject_is_permanent_and_commit_error_is_retried(code: str, outcome: Outcome) -> None:
    ack = asyncio.run(exchange(Hl7Receiver(code), message()))
    assert (ack.code, ack.outcome) == (code, outcome)


def test_an_ack_of_another_message_is_an_error() -> None:
    with pytest.raises(MllpError) as caught:
        asyncio.run(exchange(Hl7Receiver("wrong-id"), message()))
    assert caught.value.retryable
    assert "MSA-2 'NOT-YOURS'" in caught.value.reason and "DLV-0001" in caught.value.reason
    assert b"NOT-YOURS" in caught.value.answer


@pytest.mark.parametrize("mode", ["reset", "close"])
def test_a_connection_lost_before_the_ack_is_retryable(mode: str) -> None:
    receiver = Hl7Receiver(mode)
    with pytest.raises(MllpError) as caught:
        asyncio.run(exchange(receiver, message()))
    assert caught.value.retryable and "before" in caught.value.reason
    assert len(receiver.received) == 1  # it arrived; only the answer was lost


def test_no_answer_within_the_timeout_is_retryable() -> None:
    with pytest.raises(MllpError) as caught:
        asyncio.run(exchange(Hl7Receiver("silent"), message(), timeout=0.5))
    assert caught.value.retryable and "no ACK within" in caught.value.reason


def test_an_oversized_answer_is_an_error() -> None:
    with pytest.raises(MllpError) as caught:
        asyncio.run(exchange(Hl7Receiver("huge"), message(), max_answer=65536))
    assert caught.value.retryable and "larger than 65536 bytes" in caught.value.reason


def test_an_unframed_answer_is_an_error() -> None:
    with pytest.raises(MllpError) as caught:
        asyncio.run(exchange(Hl7Receiver("unframed"), message()))
    assert "not MLLP framed" in caught.value.reason


def test_nobody_listening_is_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MllpError) as caught:
        asyncio.run(send("127.0.0.1", port, message(), timeout=10))
    assert caught.value.retryable and "cannot connect" in caught.value.reason


def test_a_resend_carries_the_same_control_id_and_identical_bytes() -> None:
    # The outbox keeps the bytes; rebuilding them from the same inputs gives the same bytes too.
    first, again = message(control_id="DLV-0002"), message(control_id="DLV-0002")
    assert first == again
    receiver = Hl7Receiver("reset", "AE", "AA")

    async def run() -> list[Ack | MllpError]:
        results: list[Ack | MllpError] = []
        async with receiver:
            for data in (first, again, again):
                try:
                    results.append(await send("127.0.0.1", receiver.port, data, timeout=30))
                except MllpError as e:
                    results.append(e)
        return results

    lost, error, accepted = asyncio.run(run())
    assert isinstance(lost, MllpError) and lost.retryable
    assert isinstance(error, Ack) and error.outcome is Outcome.RETRY
    assert isinstance(accepted, Ack) and accepted.outcome is Outcome.DELIVERED
    assert receiver.received == [first, first, first]
    ids = {str(hl7.parse(b.decode()).segment("MSH")(10)) for b in receiver.received}
    assert ids == {"DLV-0002"}


def test_framing_refuses_bytes_that_would_end_the_block_early() -> None:
    assert frame(b"MSH|x\r") == b"\x0bMSH|x\r\x1c\r"
    for bad in (b"MSH|\x1c|x\r", b"MSH|\x0b|x\r"):
        with pytest.raises(MllpError) as caught:
            frame(bad)
        assert not caught.value.retryable


def test_a_message_without_a_control_id_is_not_sent() -> None:
    with pytest.raises(MllpError) as caught:
        asyncio.run(send("127.0.0.1", 9, b"PID|1\r", timeout=1))
    assert not caught.value.retryable and "MSH-10" in caught.value.reason
