"""What one connection may cost `medledger serve`: limits uvicorn's HTTP protocol lacks.

A client that sends its request head a byte at a time (slowloris), trickles a body forever,
or sends headers no engine needs would otherwise hold a connection, a task and its buffers as
long as it likes. The protocol here is uvicorn's httptools protocol with three limits:

- the request head (request line and headers) must be complete within `header_timeout`
  seconds of the connection opening or of the request's first byte, else 408 (a connection
  that sends nothing at all is closed without an answer);
- the head may hold at most `max_header_bytes`, else 431 (RFC 6585 §5);
- the body must arrive within `body_timeout` seconds plus one second per BODY_MIN_RATE bytes
  received so far, else 408. The allowance grows with what arrives, so a large Bundle on a
  slow link passes while a trickle does not.

Each answer is a FHIR OperationOutcome sent with `Connection: close`, and the connection is
closed. A request cut off mid-body reaches the app as a disconnect, which it logs in one line
(exchange.outcome).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from exchange.http.errors import CUT_OFF

log = logging.getLogger("medledger.exchange")

# The slowest body the server waits for beyond the first `body_timeout` seconds.
BODY_MIN_RATE = 1024  # bytes per second


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    body_timeout: float = 20.0
    max_header_bytes: int = 32 * 1024

    def __post_init__(self) -> None:
        if not (self.header_timeout > 0 and self.body_timeout > 0):
            raise ValueError("timeouts must be positive numbers of seconds")
        if self.max_header_bytes < 1024:
            raise ValueError(f"--max-header-bytes {self.max_header_bytes} is below 1024")


def _answer(status: int, reason: str, diagnostics: str) -> bytes:
    code = "too-long" if status == 431 else "timeout"
    issue = {"severity": "error", "code": code, "diagnostics": diagnostics}
    body = json.dumps({"resourceType": "OperationOutcome", "issue": [issue]}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/fhir+json; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module doc (`limits` is set on the
    subclass protocol_class makes)."""

    limits = ConnectionLimits()

    def connection_made(self, transport: Any) -> None:  # noqa: ANN401  (asyncio's type)
        super().connection_made(transport)
        self._head_timer: Any = None
        self._body_timer: Any = None
        self._head_started = False  # a byte of the current request's head has arrived
        self._head_bytes = 0  # the head's request line and headers, as parsed
        self._raw_bytes = 0  # what arrived while the head was incomplete (a head never ending)
        self._awaiting_head = True
        self._body_start = 0.0
        self._body_bytes = 0
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    # Once this protocol has answered and closed, the rest of what the client sent (in this
    # read or later ones) is not parsed: no callback may start or feed a request.

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        counted = self._awaiting_head
        if counted:
            self._raw_bytes += len(data)
        super().data_received(data)
        # A head still incomplete after this much is too large, however it ends. (Once the
        # head is complete, the same read may hold body bytes too: then the parsed size counts.)
        if counted and self._awaiting_head and self._raw_bytes > self.limits.max_header_bytes:
            self._head_too_large()

    # -- parser callbacks

    def on_message_begin(self) -> None:
        if self.transport.is_closing():
            return
        super().on_message_begin()
        self._head_started = True
        if not self._awaiting_head:
            self._awaiting_head = True
            self._head_bytes = self._raw_bytes = 0
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        if not self.transport.is_closing():
            super().on_url(url)
            self._head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.transport.is_closing():
            super().on_header(name, value)
            self._head_bytes += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        if self.transport.is_closing():
            return
        self._awaiting_head = False
        self._head_started = False
        self._cancel(self._head_timer)
        self._head_timer = None
        if self._head_bytes > self.limits.max_header_bytes:
            self._head_too_large()
            return
        super().on_headers_complete()
        if self._expects_body():
            self._body_start = self.loop.time()
            self._body_bytes = 0
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_check)

    def on_body(self, body: bytes) -> None:
        if not self.transport.is_closing():
            self._body_bytes += len(body)
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel(self._body_timer)
        self._body_timer = None
        if not self.transport.is_closing():
            super().on_message_complete()

    # -- the limits

    def _expects_body(self) -> bool:
        for name, value in self.headers:
            if name == b"content-length" and value.strip() not in (b"", b"0"):
                return True
            if name == b"transfer-encoding":
                return True
        return False

    def _arm_head_timer(self) -> None:
        self._cancel(self._head_timer)
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if not self._head_started:
            self.transport.close()  # nothing was asked: nothing to answer
            return
        limit = self.limits.header_timeout
        log.warning(
            "closed a connection from %s: its request head was not complete within %g s",
            self._peer(),
            limit,
        )
        self._close_with(
            408, "Request Timeout", f"the request head did not arrive within {limit:g} s"
        )

    def _head_too_large(self) -> None:
        limit = self.limits.max_header_bytes
        log.warning("refused a request head of more than %d bytes from %s", limit, self._peer())
        self._close_with(
            431,
            "Request Header Fields Too Large",
            f"the request line and headers exceed {limit} bytes",
        )

    def _body_check(self) -> None:
        self._body_timer = None
        allowed = self.limits.body_timeout + self._body_bytes / BODY_MIN_RATE
        late = self._body_start + allowed - self.loop.time()
        if late > 0:
            self._body_timer = self.loop.call_later(late, self._body_check)
            return
        diagnostics = (
            f"the request body did not arrive in time ({self._body_bytes} bytes in "
            f"{allowed:.0f} s; the server waits {self.limits.body_timeout:g} s plus one second "
            f"per {BODY_MIN_RATE} bytes)"
        )
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            # The app is waiting for the body: it sees a disconnect and logs it, with this.
            # An extension key of the ASGI scope, which HTTPScope's TypedDict does not list.
            scope = cast(dict[str, Any], self.scope)
            scope[CUT_OFF] = "its body arrived too slowly: the server cut it off"
            self._close_with(408, "Request Timeout", diagnostics)
        else:
            log.warning("closed a connection from %s: %s", self._peer(), diagnostics)
            self.transport.close()

    def _close_with(self, status: int, reason: str, diagnostics: str) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                self.transport.close()  # too late for another answer
                return
            # The app may not answer after this one; its receive() now reports a disconnect.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.write(_answer(status, reason, diagnostics))
        self.transport.close()
        self._cancel_timers()

    def _cancel_timers(self) -> None:
        self._cancel(self._head_timer)
        self._cancel(self._body_timer)
        self._head_timer = self._body_timer = None

    @staticmethod
    def _cancel(timer: Any) -> None:  # noqa: ANN401
        if timer is not None:
            timer.cancel()

    def _peer(self) -> str:
        return self.client[0] if self.client else "-"


def protocol_class(limits: ConnectionLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol uvicorn should instantiate per connection (uvicorn.Config(http=...))."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
