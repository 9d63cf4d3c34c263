"""Inbound HL7 v2 over our MLLP server, from a python-hl7 MLLP client.

The server is ``exchange.delivery.mllp.start_server`` with ``exchange.delivery.inbound.handler``;
its ``identify`` knows one registered facility and its ``submit`` records each Bundle and
returns a ledger index, as the service will. The client is python-hl7's
``hl7.mllp.open_hl7_connection``; every answer is read as python-hl7 reads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import hl7
import hl7.mllp
import pytest
from fhir.resources.R4B.bundle import Bundle

from exchange.delivery.ack import Header
from exchange.delivery.inbound import SubmitRefused, handler
from exchange.delivery.messages import v2_message
from exchange.delivery.mllp import MAX_FRAME, Peer, start_server
from tests.delivery.fixtures import NOW, boao_kr

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "hl7v2"


class Home:
    """The service's side: who is registered, and a ledger that counts."""

    def __init__(self, *, refuse: str | None = None, fail: bool = False) -> None:
        self.submitted: list[tuple[bytes, str]] = []
        self.asked: list[tuple[Peer, Header]] = []
        self.refuse = refuse
        self.fail = fail

    async def identify(self, peer: Peer, header: Header) -> str | None:
        self.asked.append((peer, header))
        registered = {"BLIH": "hospital-boao", "LABHOSP": "lab-hospital"}
        facility = header.sending_facility[0] if header.sending_facility else ""
        return registered.get(facility) if peer[0] == "127.0.0.1" else None

    async def submit(self, bundle: bytes, org: str) -> int:
        if self.fail:
            raise RuntimeError("the database is gone")
        if self.refuse is not None:
            raise SubmitRefused(self.refuse)
        self.submitted.append((bundle, org))
        return 41 + len(self.submitted)


Conversation = Callable[[hl7.mllp.HL7StreamReader, hl7.mllp.HL7StreamWriter], Awaitable[None]]


def converse(home: Home, talk: Conversation, *, max_frame: int = MAX_FRAME) -> None:
    async def run() -> None:
        server = await start_server(
            handler(home.identify, home.submit), "127.0.0.1", 0, max_frame=max_frame
        )
        port = server.port
        try:
            reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", port, encoding="utf-8")
            try:
                await asyncio.wait_for(talk(reader, writer), 60)
            finally:
                writer.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(run())


async def ask(
    reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter, raw: bytes
) -> hl7.Message:
    writer.writeblock(raw)
    await writer.drain()
    return await reader.readmessage()


def oru(control_id: str = "ORU-1") -> bytes:
    return v2_message(boao_kr(), "ORU_R01", now=NOW, control_id=control_id)


def msa(ack: hl7.Message) -> tuple[str, str, str]:
    segment = ack.segment("MSA")
    return str(segment(1)), str(segment(2)), str(segment(3))


def errs(ack: hl7.Message) -> list[tuple[str, str, str]]:
    return [(str(s(2)), str(s(3)(1)(1)), str(s(4))) for s in ack.segments("ERR")]


def test_a_valid_oru_becomes_a_bundle_and_aa_carries_the_ledger_index() -> None:
    home = Home()

    async def talk(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        ack = await ask(reader, writer, oru())
        assert msa(ack) == ("AA", "ORU-1", "ledger index 42")
        assert str(ack.segment("MSH")(9)) == "ACK^R01^ACK"
        assert str(ack.segment("MSH")(5)) == "MEDLEDGER" and str(ack.segment("MSH")(6)) == "BLIH"

    converse(home, talk)
    ((bundle_bytes, org),) = home.submitted
    assert org == "hospital-boao"
    bundle = Bundle.model_validate_json(bundle_bytes)  # a valid FHIR R4 Bundle
    kinds = [e.resource.get_resource_type() for e in bundle.entry]
    assert kinds[0] == "Patient" and "Observation" in kinds and "DiagnosticReport" in kinds
    assert b'"value":12.50' in bundle_bytes  # the lexeme as the laboratory wrote it


def test_a_public_lab_result_message_is_taken(vectors: Path) -> None:
    """The LRI CBC sample (HL7 v2.5.1 ORU^R01), sent as production (MSH-11 P) by a lab."""
    raw = (vectors / "hl7v2" / "LRI_2.0-NG_CBC_Typ_Message.hl7").read_bytes()
    head, rest = raw.split(b"\n", 1)
    fields = head.split(b"|")
    fields[3], fields[10] = b"LABHOSP", b"P"
    raw = (b"|".join(fields) + b"\n" + rest).replace(b"\n", b"\r")
    home = Home()

    async def talk(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        assert msa(await ask(reader, writer, raw))[0] == "AA"

    converse(home, talk)
    bundle = Bundle.model_validate_json(home.submitted[0][0])
    observations = [
        e.resource for e in bundle.entry if e.resource.get_resource_type() == "Observation"
    ]
    assert len(observations) == 28


def test_a_malformed_message_gets_ae_with_err_naming_the_segment() -> None:
    text = oru().decode()
    lines = text.split("\r")
    n = next(i for i, line in enumerate(lines) if line.startswith("OBX|2|NM|"))
    fields = lines[n].split("|")
    fields[5] = "twelve"
    lines[n] = "|".join(fields)
    home = Home()

    async def talk(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        ack = await ask(reader, writer, "\r".join(lines).encode())
        code, control_id, text = msa(ack)
        assert (code, control_id) == ("AE", "ORU-1")
        assert "'twelve' is not a number" in text
        assert errs(ack) == [("OBX^2^5", "102", "E")]
        assert "twelve" in str(ack.segment("ERR")(7))

    converse(home, talk)
    assert home.submitted == []


def test_a_message_without_pid_gets_ae_naming_pid() -> None:
    text = "\r".join(line for line in oru().decode().split("\r") if not line.startswith("PID"))
    home = Home()

    async def talk(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        ack = await ask(reader, writer, text.encode())
        assert msa(ack)[0] == "AE" and errs(ack) == [("PID^1", "100", "E")]

    converse(home, talk)


def test_an_unregistered_sender_is_rejected_without_reading_the_message() -> None:
    raw = oru().replace(b"|BLIH|", b"|ELSEWHERE|", 1)
    home = Home()

    async def talk(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        ack = await ask(reader, writer, raw)
        assert msa(ack)[0] == "AR" and errs(ack) == [("MSH^1^4", "204", "E")]

    converse(home, talk)
    assert home.submitted == [] and home.asked[0][1].sending_facility == ("ELSEWHERE",)


def test_an_unsupported_message_type_is_rejected(vectors: Path) -> None:
    raw = (vectors / "hl7v2" / "RDE-O11-01.hl7").read_bytes().replace(b"\n", b"\r")
    head = raw.split(b"\r", 1)[0].split(b"|")
    raw = raw.replace(b"|" + head[3] + b"|", b"|BLIH|", 1)
    home = Home()

    async def talk(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        ack = await ask(reader, writer, raw)
        assert msa(ack)[0] == "AR" and errs(ack) == [("MSH^1^9^^1", "200", "E")]

    converse(home, talk)


def test_garbage_and_oversized_frames_get_an_ack_and_the_connection_stays_open() -> None:
    home = Home()

    async def talk(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        ack = await ask(reader, writer, b"\x00\xffnot HL7 at all\r")
        assert msa(ack)[0] == "AR" and errs(ack)[0][1] == "100"
        writer.write(b"no start block\x1c\r")  # bytes outside a frame
        await writer.drain()
        ack = await reader.readmessage()
        assert msa(ack)[0] == "AR" and "VT" in msa(ack)[2]
        big = oru(control_id="BIG-1").replace(b"\rPID|", b"\rZZZ|" + b"X" * 70_000 + b"\rPID|")
        ack = await ask(reader, writer, big)
        assert msa(ack)[:2] == ("AR", "BIG-1") and "larger than 65536 bytes" in msa(ack)[2]
        # The same connection still takes a good message.
        assert msa(await ask(reader, writer, oru(control_id="AFTER-1")))[:2] == ("AA", "AFTER-1")

    converse(home, talk, max_frame=65536)
    assert len(home.submitted) == 1


def test_several_messages_on_one_connection_are_answered_in_order() -> None:
    home = Home()

    async def talk(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        for n in range(3):  # written back to back, before any answer is read
            writer.writeblock(oru(control_id=f"SEQ-{n}"))
        await writer.drain()
        answers = [msa(await reader.readmessage()) for _ in range(3)]
        assert answers == [("AA", f"SEQ-{n}", f"ledger index {42 + n}") for n in range(3)]

    converse(home, talk)


def test_a_repeated_message_submits_the_same_bundle_bytes() -> None:
    home = Home()

    async def talk(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        for _ in range(2):
            assert msa(await ask(reader, writer, oru(control_id="AGAIN-1")))[0] == "AA"

    converse(home, talk)
    assert home.submitted[0] == home.submitted[1]


@pytest.mark.parametrize("fail", [False, True])
def test_a_refused_or_failed_submission_gets_ae(fail: bool) -> None:
    home = Home(refuse=None if fail else "Bundle.entry[1]: unknown element", fail=fail)

    async def talk(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        ack = await ask(reader, writer, oru())
        code, control_id, text = msa(ack)
        assert (code, control_id) == ("AE", "ORU-1") and errs(ack)[0][1:] == ("207", "E")
        if not fail:
            assert text == "Bundle.entry[1]: unknown element"
        # Still answered on the same connection afterwards.
        assert msa(await ask(reader, writer, oru(control_id="ORU-2")))[1] == "ORU-2"

    converse(home, talk)


def test_a_client_that_hangs_up_mid_frame_does_not_disturb_the_next() -> None:
    home = Home()

    async def run() -> None:
        server = await start_server(handler(home.identify, home.submit), "127.0.0.1", 0)
        port = server.port
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\x0bMSH|^~\\&|HALF")
            await writer.drain()
            writer.transport.abort()
            reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", port, encoding="utf-8")
            assert msa(await ask(reader, writer, oru()))[0] == "AA"
            writer.close()
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(run(), 60))


def test_every_ack_we_write_validates_as_hl7_v2_5_1() -> None:
    """ACKs are built with hl7apy at STRICT level; here hl7apy parses them back and validates."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message

    home = Home()
    acks: list[bytes] = []

    async def talk(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        for raw in (oru(), oru().replace(b"|BLIH|", b"|NOBODY|", 1), b"garbage"):
            writer.writeblock(raw)
            await writer.drain()
            acks.append(await reader.readblock())

    converse(home, talk)
    for ack in acks[:2]:
        parsed = parse_message(ack.decode(), validation_level=VALIDATION_LEVEL.STRICT)
        parsed.validate()
        assert parsed.msh.msh_12.to_er7() == "2.5.1"
    # Bytes with no MSH leave nothing to repeat in MSA-2 (required): that answer is read
    # tolerantly, and says AR with an ERR.
    unreadable = parse_message(acks[2].decode(), validation_level=VALIDATION_LEVEL.TOLERANT)
    assert unreadable.msa.msa_1.to_er7() == "AR" and unreadable.msa.msa_2.to_er7() == ""
    assert unreadable.err.err_3.to_er7().startswith("100^")
