"""The witness's HTTP interface (c2sp.org/tlog-witness), on the standard library's server.

    POST /add-checkpoint
    GET  /<hex SHA-256 of origin>/checkpoint

POST /add-checkpoint answers 200 with the cosignature line (text/plain; charset=utf-8), or
the status of core.AddCheckpointError with a one-line reason, except: 409 has the body
``<size>\\n`` and Content-Type text/x.tlog.size, as the spec requires; a refused fork (422)
has the evidence file (medledger-evidence/v1 JSON) as its body. A request without
Content-Length is refused with 411, one larger than core.MAX_REQUEST_BYTES with 413 unread.

GET /<origin hash>/checkpoint is the spec's monitoring endpoint: the latest checkpoint the
witness cosigned for that log, with the log signatures it verified and its cosignature.

Connections are HTTP/1.1 keep-alive (the spec asks witnesses to support it). Each read
from a client waits at most `timeout` seconds and a request body must arrive whole within
it; at most `max_connections` are served at once, more are answered 503 and closed.
"""

from __future__ import annotations

import logging
import re
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .core import (
    MAX_REQUEST_BYTES,
    SIZE_TYPE,
    AddCheckpointError,
    ForkRefused,
    SizeConflict,
    Witness,
)
from .store import WitnessStoreError

log = logging.getLogger("ledger.witness")

_MONITOR_PATH = re.compile(r"/([0-9a-f]{64})/checkpoint")
TEXT_TYPE = "text/plain; charset=utf-8"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog; socketserver's 5 resets bursts of clients
    witness: Witness
    timeout_s: float

    def __init__(self, address: tuple[str, int], max_connections: int) -> None:
        super().__init__(address, _Handler)
        self._slots = threading.BoundedSemaphore(max_connections)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n"
                )
            except OSError:
                pass
            super().shutdown_request(request)
            return
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Ends every kept-alive connection: its next read sees the end of the stream, so
        an idle one closes now and one mid-request still sends its answer."""
        with self._open_lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "medledger-witness"

    def setup(self) -> None:
        self.request.settimeout(self.server.timeout_s)  # every read waits at most this long
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        log.info("%s %s", self.address_string(), format % args)

    def _reply(
        self, status: int, body: bytes, content_type: str = TEXT_TYPE, **headers: str
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _text(self, status: int, message: str, **headers: str) -> None:
        self._reply(status, (message.rstrip("\n") + "\n").encode(), **headers)

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        m = _MONITOR_PATH.fullmatch(path)
        if path == "/add-checkpoint":
            self._text(405, "use POST", Allow="POST")
        elif m is None:
            self._text(404, "not found")
        else:
            note = self.server.witness.checkpoint(m.group(1))
            if note is None:
                self._text(404, "this witness has not cosigned a checkpoint of that log")
            else:
                self._reply(200, note.encode(), Cache_Control="no-cache")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        path = self.path.partition("?")[0]
        if path != "/add-checkpoint":
            # The body stays unread: the connection cannot carry another request.
            self.close_connection = True
            if _MONITOR_PATH.fullmatch(path):
                self._text(405, "use GET", Allow="GET, HEAD")
            else:
                self._text(404, "not found")
            return
        body = self._body()
        if body is None:
            return
        try:
            line = self.server.witness.add_checkpoint(body)
        except SizeConflict as e:
            self._reply(409, f"{e.size}\n".encode(), SIZE_TYPE)
        except ForkRefused as e:
            log.warning("refused a fork of %s: %s", e.evidence.origin, e.reason)
            self._reply(422, e.evidence.to_json(), "application/json")
        except AddCheckpointError as e:
            self._text(e.status, e.reason)
        except WitnessStoreError as e:
            log.error("%s", e)
            self._text(503, "the witness cannot reach its store; try again later")
        else:
            self._reply(200, line.encode())

    def _body(self) -> bytes | None:
        """The request body, read within the size cap and the deadline; None when the
        request was answered (and the connection is to be closed) instead."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._text(411, "send the body with a Content-Length")
            return None
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit() or len(length_text) > 12:
            self.close_connection = True
            self._text(411, "a Content-Length is required")
            return None
        length = int(length_text)
        if length > MAX_REQUEST_BYTES:
            self.close_connection = True
            self._text(413, f"request body over {MAX_REQUEST_BYTES:,} bytes")
            return None
        deadline = time.monotonic() + self.server.timeout_s
        chunks, got = [], 0
        try:
            while got < length:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.connection.settimeout(left)
                chunk = self.rfile.read1(length - got)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
        except TimeoutError:
            self.close_connection = True
            self._text(408, "the request body did not arrive in time")
            return None
        finally:
            self.connection.settimeout(self.server.timeout_s)
        if got < length:
            self.close_connection = True  # the client went away mid-body
            return None
        return b"".join(chunks)


class _Signalled(Exception):
    """Raised in the serving thread by SIGINT or SIGTERM (WitnessServer.serve_until_signalled)."""


class WitnessServer:
    """A witness served over HTTP. `start()` serves on a background thread (tests, or a host
    process), `serve_forever()` on the caller's; `stop()` ends either. A program serves with
    `serve_until_signalled()`."""

    def __init__(
        self,
        witness: Witness,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        timeout: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        self.witness = witness
        self._httpd = _Server((host, port), max_connections)
        self._httpd.witness = witness
        self._httpd.timeout_s = timeout
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """The submission prefix: POST <url>/add-checkpoint."""
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def start(self) -> WitnessServer:
        t = threading.Thread(
            target=self._httpd.serve_forever, args=(0.1,), name="witness-http", daemon=True
        )
        t.start()
        self._thread = t
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever(0.1)

    def serve_until_signalled(self) -> None:
        """Serves on the caller's (main) thread until SIGINT or SIGTERM, what a terminal and a
        service manager send, then stops. Both are handled even when the process inherited
        them ignored, as a background job does SIGINT."""

        def stop(signum: int, frame: object) -> None:
            raise _Signalled

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.serve_forever()
        except _Signalled:
            pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()

    def stop(self) -> None:
        """Stops accepting, closes the listening socket and every kept-alive connection
        (a request in flight still gets its answer)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
        self._httpd.close_connections()

    def __enter__(self) -> WitnessServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
