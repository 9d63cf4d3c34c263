"""MLLP framing holds for all messages and all ways TCP may cut the stream.

The other side of each property is python-hl7's MLLP stream reader and writer: our frames are
read by its reader, and its writes, cut at arbitrary points, are read by our server; our
client reads ACKs that a plain asyncio server writes in arbitrary pieces.
"""

from __future__ import annotations

import asyncio
import functools
import socket

import hl7
import hl7.mllp
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.delivery.ack import read_header
from exchange.delivery.messages import v2_message
from exchange.delivery.mllp import MllpError, Peer, frame, send, start_server
from tests.delivery.fixtures import NOW, shanghai_ru

VT, FS = 0x0B, 0x1C
# Message bytes as MLLP allows them: anything but the two framing bytes (CR and LF included).
payload = st.binary(max_size=2000).map(lambda b: bytes(c for c in b if c not in (VT, FS)))
# Each example opens a server and a connection; a few dozen cover the shapes.
network = settings(max_examples=30, deadline=None)


def python_hl7_reader(data: bytes) -> hl7.mllp.HL7StreamReader:
    reader = hl7.mllp.HL7StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


@given(st.lists(payload, min_size=1, max_size=5))
def test_python_hl7_reads_back_every_message_we_frame(messages: list[bytes]) -> None:
    async def read_all() -> list[bytes]:
        reader = python_hl7_reader(b"".join(frame(m) for m in messages))
        return [bytes(await reader.readblock()) for _ in messages]

    assert asyncio.run(read_all()) == messages


@given(payload, st.sampled_from([VT, FS]), st.data())
def test_a_message_holding_a_framing_byte_is_refused(
    message: bytes, byte: int, data: st.DataObject
) -> None:
    at = data.draw(st.integers(0, len(message)))
    bad = message[:at] + bytes([byte]) + message[at:]
    try:
        frame(bad)
    except MllpError as e:
        assert not e.retryable
    else:
        raise AssertionError("framed a message that holds a framing byte")


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at ``points`` (taken modulo its length)."""
    marks = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in zip(marks, marks[1:], strict=False) if b > a]


@network
@given(st.lists(payload, min_size=1, max_size=4), st.lists(st.integers(0, 10_000), max_size=12))
def test_our_server_reassembles_frames_however_the_stream_is_cut(
    messages: list[bytes], points: list[int]
) -> None:
    seen: list[bytes] = []

    async def handler(peer: Peer, message: bytes) -> bytes:
        seen.append(message)
        return b"MSH|^~\\&|||||||ACK||P|2.5.1\rMSA|AA|%d\r" % len(seen)

    async def run() -> list[str]:
        async with await start_server(handler, "127.0.0.1", 0) as server:
            reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", server.port)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                for piece in cut(b"".join(frame(m) for m in messages), points):
                    writer.write(piece)  # raw bytes: the frames are already in them
                    await writer.drain()
                    await asyncio.sleep(0)
                answers = [await reader.readmessage() for _ in messages]
            finally:
                writer.close()
        return [str(a.segment("MSA")(2)) for a in answers]

    assert asyncio.run(asyncio.wait_for(run(), 30)) == [str(n + 1) for n in range(len(messages))]
    assert seen == messages


@functools.cache
def message() -> bytes:
    return v2_message(shanghai_ru(), "ORU_R01", now=NOW, control_id="FRAME-1")


@network
@given(st.lists(st.integers(0, 10_000), max_size=12), st.sampled_from([b"", b"\r", b"\r\n"]))
def test_our_client_reads_an_ack_however_it_is_cut(points: list[int], noise: bytes) -> None:
    """A peer's ACK arriving in pieces (after stray line ends) is read whole."""
    sent = message()
    ack_bytes: list[bytes] = []

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        block = await reader.readuntil(b"\x1c\r")
        parsed = hl7.parse(block[1:-2].decode("utf-8"))
        ack = (str(parsed.create_ack("AA", message_id="ACK-1")) + "\r").encode()
        ack_bytes.append(ack)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in cut(noise + b"\x0b" + ack + b"\x1c\r", points):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0)
        await reader.read()  # until we hang up
        writer.close()

    async def run() -> bytes:
        server = await asyncio.start_server(peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return (await send("127.0.0.1", port, sent, timeout=10)).raw
        finally:
            server.close()
            await server.wait_closed()

    raw = asyncio.run(run())
    assert raw == ack_bytes[0]
    assert read_header(raw).control_id == "ACK-1"
