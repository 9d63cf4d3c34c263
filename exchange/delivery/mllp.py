"""MLLP, the Minimal Lower Layer Protocol that carries HL7 v2 over TCP (HL7 v2.5.1 Appendix C).

A frame is a start block VT (0x0B), the message, an end block FS (0x1C) and a CR (0x0D). The
sender writes one frame and waits for one framed answer, the ACK; a connection may carry many
such exchanges one after another (persistent connections, Appendix C.4).

:func:`send` is the client: one connection, one message, one ACK read with
:func:`exchange.delivery.ack.parse_ack` against the message's own MSH-10. Everything that
leaves the message's fate unknown - no connection, a timeout, a connection closed before the
answer, an answer that is too large, unframed or not an ACK of this message - raises
:class:`MllpError` with ``retryable`` set: the message may or may not have arrived, and the
receiver must take the same control id again as a duplicate.

:func:`start_server` is the receiver. Its handler is given the peer's address and the bytes of
each frame and returns the ACK bytes. The server itself answers what never reaches a handler -
bytes outside a frame, a frame over the size cap - and a handler that fails, always with an
ACK built from whatever MSH fields can be read: a sender is never left with a dropped
connection in place of an answer. Clients that hang up or go idle are let go quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from exchange.delivery.ack import (
    Ack,
    ErrorLocation,
    MalformedAck,
    Problem,
    build_ack,
    parse_ack,
    read_header,
)

__all__ = [
    "MAX_ANSWER",
    "MAX_FRAME",
    "Handler",
    "MllpError",
    "MllpServer",
    "Peer",
    "frame",
    "send",
    "start_server",
]

VT = b"\x0b"
FS = b"\x1c"
CR = b"\r"
END = FS + CR

MAX_FRAME = 4 * 1024 * 1024  # a message we receive: an MDM with a document fits easily
MAX_ANSWER = 1024 * 1024  # an ACK is a few hundred bytes; anything near this is no ACK
_CHUNK = 64 * 1024

Peer = tuple[str, int]
Handler = Callable[[Peer, bytes], Awaitable[bytes]]

log = logging.getLogger("medledger.delivery.mllp")


class MllpError(Exception):
    """A send whose outcome is unknown (``retryable``) or refused by framing (not retryable).

    ``answer`` holds the peer's bytes when it answered something that is not an ACK of ours.
    """

    def __init__(self, reason: str, *, retryable: bool = True, answer: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.answer = answer


def frame(message: bytes) -> bytes:
    """``message`` in an MLLP block; a VT or FS inside it would break the framing."""
    if VT in message or FS in message:
        raise MllpError(
            "the message holds a VT (0x0B) or FS (0x1C) byte, which MLLP reserves for framing",
            retryable=False,
        )
    return VT + message + END


async def send(
    host: str,
    port: int,
    message: bytes,
    *,
    timeout: float = 30.0,
    connect_timeout: float | None = None,
    max_answer: int = MAX_ANSWER,
) -> Ack:
    """Send one HL7 v2 message and return the peer's ACK to it.

    ``timeout`` bounds writing the message and reading the answer; ``connect_timeout``
    (default ``timeout``) bounds the TCP connect. The ACK's verdict is ``Ack.outcome``;
    a missing or unusable answer raises :class:`MllpError`.
    """
    control_id = read_header(message).control_id
    if not control_id:
        raise MllpError("the message has no MSH-10 control id to match its ACK", retryable=False)
    block = frame(message)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), connect_timeout or timeout
        )
    except TimeoutError:
        raise MllpError(
            f"no connection to {host}:{port} within {connect_timeout or timeout} s"
        ) from None
    except OSError as e:
        raise MllpError(f"cannot connect to {host}:{port}: {e.strerror or e}") from None
    try:
        writer.write(block)
        await asyncio.wait_for(writer.drain(), timeout)
        raw = await asyncio.wait_for(_read_answer(reader, max_answer), timeout)
    except TimeoutError:
        raise MllpError(f"{host}:{port} sent no ACK within {timeout} s") from None
    except asyncio.IncompleteReadError:
        raise MllpError(f"{host}:{port} closed the connection before its ACK") from None
    except (ConnectionError, OSError) as e:
        raise MllpError(f"{host}:{port}: connection lost before the ACK: {e}") from None
    finally:
        await _close(writer)
    try:
        return parse_ack(raw, control_id=control_id)
    except MalformedAck as e:
        raise MllpError(e.reason, answer=raw) from None


async def _read_answer(reader: asyncio.StreamReader, limit: int) -> bytes:
    buf = bytearray()
    while True:
        end = buf.find(END)
        if end >= 0:
            break
        if len(buf) > limit:
            raise MllpError(f"the answer is larger than {limit} bytes: not an ACK")
        chunk = await reader.read(_CHUNK)
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(buf), None)
        buf += chunk
    block = bytes(buf[:end]).lstrip(b"\r\n")
    if not block.startswith(VT):
        raise MllpError("the answer is not MLLP framed (no VT start block)", answer=bytes(buf))
    return block[1:]


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 1.0)


class MllpServer:
    """A listening MLLP server; :meth:`close` also ends the connections it holds open."""

    def __init__(self, server: asyncio.Server, connections: set[asyncio.Task[None]]) -> None:
        self._server = server
        self._connections = connections

    @property
    def port(self) -> int:
        """The port listened on (the one chosen when 0 was asked for)."""
        return int(self._server.sockets[0].getsockname()[1])

    def close(self) -> None:
        self._server.close()
        for task in list(self._connections):
            task.cancel()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def __aenter__(self) -> MllpServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


async def start_server(
    handler: Handler,
    host: str,
    port: int,
    *,
    max_frame: int = MAX_FRAME,
    idle_timeout: float = 300.0,
) -> MllpServer:
    """Listen for MLLP on ``host:port`` (0: any free port); each frame goes to ``handler``.

    The handler returns the ACK bytes (unframed). A connection idle for ``idle_timeout``
    seconds between frames is closed; frames over ``max_frame`` bytes are answered with AR
    and not read further.
    """
    connections: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            connections.add(task)
        address = writer.get_extra_info("peername")
        peer: Peer = (str(address[0]), int(address[1])) if address else ("", 0)
        try:
            await _connection(reader, writer, peer, handler, max_frame, idle_timeout)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError) as e:
            log.debug("MLLP peer %s:%s gone: %s", peer[0], peer[1], e)
        except asyncio.CancelledError:
            # The server is closing; this task is the connection's own, nothing awaits it.
            log.debug("MLLP connection from %s:%s closed with the server", peer[0], peer[1])
        finally:
            writer.close()
            if task is not None:
                connections.discard(task)

    server = await asyncio.start_server(serve, host, port)
    return MllpServer(server, connections)


async def _connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    peer: Peer,
    handler: Handler,
    max_frame: int,
    idle_timeout: float,
) -> None:
    buf = bytearray()
    oversized: bytes | None = None  # the head of a frame over the cap, while its tail is skipped
    while True:
        chunk = await asyncio.wait_for(reader.read(_CHUNK), idle_timeout)
        if not chunk:
            return
        buf += chunk
        while True:
            end = buf.find(END)
            if end < 0:
                if oversized is None and len(buf) > max_frame + 1:
                    oversized = bytes(buf[:_CHUNK])
                if oversized is not None:
                    del buf[:-1]  # keep a trailing FS in case its CR comes next
                break
            block = bytes(buf[:end])
            del buf[: end + len(END)]
            if oversized is not None or len(block) > max_frame + 1:
                head = oversized if oversized is not None else block[:_CHUNK]
                answer = _refusal(head, f"the frame is larger than {max_frame} bytes")
                oversized = None
            else:
                answer = await _answer(block, peer, handler)
            writer.write(VT + answer + END)
            await writer.drain()


async def _answer(block: bytes, peer: Peer, handler: Handler) -> bytes:
    block = block.lstrip(b"\r\n")
    if not block.startswith(VT):
        return _refusal(block, "bytes outside an MLLP block: a frame starts with VT (0x0B)")
    message = block[1:]
    try:
        return await handler(peer, message)
    except Exception:
        log.exception("MLLP handler failed on a message from %s:%s", peer[0], peer[1])
        return build_ack(
            read_header(message),
            "AE",
            control_id=_ack_id(),
            text="the receiver failed; send again",
            problems=(Problem(207, "the receiver failed on this message; send it again"),),
        )


def _refusal(head: bytes, reason: str) -> bytes:
    """AR for bytes no handler sees, addressed from whatever MSH they start with."""
    head = head.lstrip(b"\r\n")
    body = head[1:] if head.startswith(VT) else head
    return build_ack(
        read_header(body),
        "AR",
        control_id=_ack_id(),
        text=reason,
        problems=(Problem(100, reason, ErrorLocation("MSH")),),
        now=datetime.now(UTC),
    )


def _ack_id() -> str:
    return uuid.uuid4().hex[:20]
