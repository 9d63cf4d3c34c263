"""Slow and lying clients against a real `medledger serve`, over raw sockets.

A header sent a byte at a time (slowloris), a body trickled forever, headers larger than any
real engine sends, a client that hangs up mid-body, and one hospital trying to hold every
submission slot: each must cost the server a bounded time and memory and leave the others
served, and a hang-up is one log line, not a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.api_helpers import observation_bundle
from tests.http.test_serve_uvicorn import ROOT, START_TIMEOUT, cli, free_port

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
MAX_HEADER_BYTES = 8192
MAX_IN_FLIGHT = 4
# How long past its timeout the server may take to act (this machine's cores are shared).
SLACK = 4.0


@dataclass
class Server:
    host: str
    port: int
    stderr: Path
    tokens: dict[str, str]

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def connect(self) -> socket.socket:
        s = socket.create_connection((self.host, self.port), timeout=30)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def head(self, org: str, length: int) -> bytes:
        return (
            f"POST /fhir/Bundle HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {self.tokens[org]}\r\n"
            f"Content-Type: application/fhir+json\r\nContent-Length: {length}\r\n\r\n"
        ).encode()


def _token(data: Path, org: str) -> str:
    added = cli("clients", "add", "--data", str(data), "--name", org, "--role", "hospital",
                "--org", org, "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    return str(json.loads(added.stdout)["token"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("slow")
    data = root / "data"
    tokens = {org: _token(data, org) for org in ("hospital-a", "hospital-b")}
    port = free_port()
    stderr = root / "stderr.txt"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exchange.cli", "serve", "--data", str(data),
             "--port", str(port), "--intake-workers", "0",
             "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
             "--max-header-bytes", str(MAX_HEADER_BYTES), "--max-in-flight", str(MAX_IN_FLIGHT)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    s = Server("127.0.0.1", port, stderr, tokens)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, s.log()[-3000:]
            try:
                if httpx.get(f"{s.base}/fhir/metadata", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "medledger serve did not answer in time"
            time.sleep(0.1)
        yield s
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answer(sock: socket.socket, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed."""
    sock.settimeout(within)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except TimeoutError:
        pytest.fail(f"the server still held the connection after {within} s; got {got[:200]!r}")
    except ConnectionResetError:
        pass
    return got, time.monotonic()


def _trickle(sock: socket.socket, data: bytes, every: float, stop: threading.Event) -> None:
    for byte in data:
        if stop.wait(every):
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _submit(server: Server, org: str) -> httpx.Response:
    headers = {
        "Authorization": f"Bearer {server.tokens[org]}",
        "Content-Type": "application/fhir+json",
    }
    return httpx.post(f"{server.base}/fhir/Bundle", content=observation_bundle(), headers=headers,
                      timeout=30)  # fmt: skip


def test_slowloris_headers_are_cut_off(server: Server) -> None:
    sock, stop = server.connect(), threading.Event()
    started = time.monotonic()
    sock.sendall(b"GET /v1/log/key HTTP/1.1\r\n")
    slow = threading.Thread(target=_trickle, args=(sock, b"X-Slow: " + b"a" * 1000, 0.2, stop))
    slow.start()
    try:
        answer, closed = _answer(sock, HEADER_TIMEOUT + SLACK)
    finally:
        stop.set()
        slow.join()
        sock.close()
    assert _status(answer) == 408 and b"OperationOutcome" in answer
    assert closed - started < HEADER_TIMEOUT + SLACK


def test_an_idle_connection_that_never_sends_a_request_is_closed(server: Server) -> None:
    sock = server.connect()
    started = time.monotonic()
    try:
        answer, closed = _answer(sock, HEADER_TIMEOUT + SLACK)
    finally:
        sock.close()
    assert answer == b"" or _status(answer) == 408
    assert closed - started < HEADER_TIMEOUT + SLACK


def test_a_body_trickled_forever_is_cut_off(server: Server) -> None:
    sock, stop = server.connect(), threading.Event()
    sock.sendall(server.head("hospital-a", 100_000))
    started = time.monotonic()
    slow = threading.Thread(target=_trickle, args=(sock, b"{" + b" " * 10_000, 0.2, stop))
    slow.start()
    try:
        answer, closed = _answer(sock, BODY_TIMEOUT + SLACK)
    finally:
        stop.set()
        slow.join()
        sock.close()
    assert _status(answer) == 408 and b"OperationOutcome" in answer
    assert closed - started < BODY_TIMEOUT + SLACK
    assert _submit(server, "hospital-a").status_code == 201  # the server is still serving


@pytest.mark.parametrize("headers", [1, 200], ids=["one-huge-header", "many-headers"])
def test_oversize_headers_are_refused(server: Server, headers: int) -> None:
    each = 2 * MAX_HEADER_BYTES // headers
    head = b"GET /v1/log/key HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-Pad-%d: %s\r\n" % (i, b"a" * each) for i in range(headers)
    )
    with server.connect() as sock:
        try:
            sock.sendall(head + b"\r\n")
        except OSError:
            pass  # refused and closed before all of it was sent
        answer, _ = _answer(sock, SLACK)
    assert _status(answer) == 431 and b"OperationOutcome" in answer


def test_a_body_larger_than_the_head_limit_in_one_write_is_served(server: Server) -> None:
    # Only the head counts against --max-header-bytes, however the client's writes fall.
    note = '"note":[{"text":"' + "x" * (4 * MAX_HEADER_BYTES) + '"}],'
    body = observation_bundle().replace(b'"status":"final",', f'"status":"final",{note}'.encode())
    with server.connect() as sock:
        sock.sendall(server.head("hospital-a", len(body)) + body)
        sock.settimeout(30)
        answer = sock.recv(65536)
    assert _status(answer) == 201, answer[:500]


def test_a_disconnect_mid_body_is_one_log_line(server: Server) -> None:
    before = server.log()
    with server.connect() as sock:
        sock.sendall(server.head("hospital-a", 50_000) + b'{"resourceType":"Bundle",')
        time.sleep(0.3)  # the handler is reading the body when the client goes
    deadline = time.monotonic() + SLACK
    while "disconnect" not in server.log()[len(before) :] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _submit(server, "hospital-b").status_code == 201
    added = server.log()[len(before) :]
    assert "Traceback" not in added and "Exception" not in added, added
    lines = [line for line in added.splitlines() if "disconnect" in line]
    assert len(lines) == 1, added


def _feed(sock: socket.socket, every: float, stop: threading.Event) -> None:
    """Body bytes fast enough (2 KB/s) that the server has no reason to cut them off."""
    while not stop.wait(every):
        try:
            sock.sendall(b" " * 200)
        except OSError:
            return


def test_one_client_cannot_hold_every_submission_slot(server: Server) -> None:
    held: list[socket.socket] = []
    feeders: list[threading.Thread] = []
    stop = threading.Event()
    try:
        answers = []
        for _ in range(MAX_IN_FLIGHT):
            sock = server.connect()
            held.append(sock)
            sock.sendall(server.head("hospital-a", 1_000_000) + b"{")
            feeders.append(threading.Thread(target=_feed, args=(sock, 0.1, stop)))
            feeders[-1].start()
            sock.settimeout(0.5)
            try:
                answers.append(_status(sock.recv(65536)))
            except TimeoutError:
                answers.append(None)  # admitted: the server is reading its body
        # A lone client gets half the slots; the rest stay free for the others.
        assert answers == [None] * (MAX_IN_FLIGHT // 2) + [429] * (MAX_IN_FLIGHT // 2)
        assert _submit(server, "hospital-b").status_code == 201
    finally:
        stop.set()
        for thread in feeders:
            thread.join()
        for sock in held:
            sock.close()
