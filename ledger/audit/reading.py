"""Reading a log over the network without trusting its host: one deadline for the whole run,
and answers read no further than their cap.

Both network sources of an audit (the log API, exchange/audit/sources.py; a tile host,
ledger/tiles/source.py) read through these, so a host that trickles bytes, never stops, or
sends a gzip bomb is stopped the same way whichever the audit reads.

Deadline: with a timeout, every step of a request may wait at most the time left, and when the
time is up a watchdog shuts down every socket the run registered, which ends a blocked read
however slowly the host sends. read_capped: a body, undone from gzip, read at most one byte
past its cap.
"""

from __future__ import annotations

import socket
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Iterable

from .source import SourceMalformed, SourceUnavailable

READ_TIMEOUT = 30.0
"""Seconds one step of a request (connect, send, each receive) may wait, or the time left."""


class Deadline:
    """The time limit of a whole run (None: each step waits at most READ_TIMEOUT).

    Register each socket the run opens with `watch`; `close` stops the watchdog. Thread-safe.
    """

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self._at = None if timeout is None else time.monotonic() + timeout
        self._lock = threading.Lock()
        self._expired = False
        # Weak: a connection the client has since dropped needs no shutting down.
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._watchdog: threading.Timer | None = None
        if timeout is not None:
            self._watchdog = threading.Timer(timeout, self._expire)
            self._watchdog.daemon = True
            self._watchdog.start()

    def _expire(self) -> None:
        with self._lock:
            self._expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            shut(sock)

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down when the time is up (at once, if it already is)."""
        with self._lock:
            self._sockets.add(sock)
            expired = self._expired
        if expired:
            shut(sock)

    def passed(self) -> bool:
        """Whether the time is up: what to blame when a read fails."""
        return self._at is not None and (self._expired or time.monotonic() >= self._at)

    def step(self, where: str) -> float:
        """Seconds the next step of a request reading `where` may wait; SourceUnavailable once
        the time is up."""
        if self._at is None:
            return READ_TIMEOUT
        left = self._at - time.monotonic()
        if left <= 0 or self._expired:
            raise self.out_of_time(where)
        return min(READ_TIMEOUT, left)

    def out_of_time(self, where: str) -> SourceUnavailable:
        return SourceUnavailable(
            f"the time limit of {self.timeout:g} s for the whole run ran out reading {where}",
            "retry later, or raise --timeout for a large log or a slow link",
        )

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()


def shut(sock: socket.socket) -> None:
    """Shut a socket down both ways: a read blocked on it returns at once."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def read_capped(
    chunks: Iterable[bytes],
    *,
    length: str,
    coding: str,
    limit: int,
    malformed: Callable[[str], SourceMalformed],
) -> bytes:
    """The body `chunks` carry, undone from gzip, read no further than `limit` bytes past
    the undoing. `length` and `coding` are the Content-Length and Content-Encoding headers
    ("" when absent); `malformed(what)` makes the error an answer over its cap or in another
    encoding raises."""
    coding = coding.strip().lower() or "identity"
    if coding == "identity" and length.isdigit() and (len(length) > 20 or int(length) > limit):
        raise malformed(f"an answer of more than {limit:,} bytes")
    if coding not in ("identity", "gzip"):
        raise malformed(f"content encoding {coding!r}; only gzip is accepted")
    inflate = zlib.decompressobj(wbits=31) if coding == "gzip" else None
    out = bytearray()
    for chunk in chunks:
        if inflate is not None:
            try:
                # At most one byte past the cap: a bomb is never inflated further.
                chunk = inflate.decompress(chunk, limit + 1 - len(out))
            except zlib.error as e:
                raise malformed(f"gzip that does not inflate ({e})") from e
        out += chunk
        if len(out) > limit:
            raise malformed(f"an answer of more than {limit:,} bytes")
    if inflate is not None and (not inflate.eof or inflate.unused_data):
        raise malformed("gzip cut short or followed by other bytes")
    return bytes(out)
