"""The log's side of one witness: cosign() against a real witness (409 followed, witness
ahead, refusals), and WitnessClient against servers that break the protocol or go away."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.cosignature import Cosigner
from ledger.witness.client import (
    WitnessBadAnswer,
    WitnessClient,
    WitnessConflict,
    WitnessRefused,
    WitnessUnavailable,
    cosign,
)

from ..ledger_helpers import new_signer, open_log, submission
from ..witness_helpers import start_witness


@pytest.fixture
def env(tmp_path: Path):
    signer = new_signer()
    log = open_log(f"sqlite:///{tmp_path / 'log.db'}", signer)
    server, wv = start_witness(tmp_path / "w", "witness.example/w1", [signer.verifier])
    client = WitnessClient(server.url, timeout=5)
    yield log, server, wv, client
    client.close()
    server.stop()
    log.close()


def _grow(log, n: int) -> str:
    for i in range(n):
        log.append(submission(b"%d %f" % (i, time.time())))
    return log.checkpoint()


def test_cosign_starts_from_zero_and_follows_409(env) -> None:
    log, _, wv, client = env
    first = _grow(log, 3)
    assert cosign(client, first, wv, log.consistency_proof).timestamp > 0
    calls: list[tuple[int, int]] = []

    def prove(a: int, b: int) -> list[bytes]:
        calls.append((a, b))
        return log.consistency_proof(a, b)

    later = _grow(log, 4)
    # The caller does not know what the witness holds: 0, then the 409's size.
    cosig = cosign(client, later, wv, prove, 0)
    assert calls == [(3, 7)]
    assert cosig.name == wv.name


def test_a_witness_ahead_of_the_checkpoint(env) -> None:
    log, _, wv, client = env
    older = _grow(log, 2)
    newer = _grow(log, 3)
    cosign(client, newer, wv, log.consistency_proof)
    with pytest.raises(WitnessConflict) as e:
        cosign(client, older, wv, log.consistency_proof)
    assert e.value.size == 5


def test_refusals_carry_the_status(env) -> None:
    log, _, wv, client = env
    note = _grow(log, 3)
    stranger = new_signer("other.example/log")
    other = open_log(f"sqlite:///{Path(log.engine.url.database).with_name('o.db')}", stranger)
    with pytest.raises(WitnessRefused) as e:
        cosign(client, _grow(other, 1), wv, other.consistency_proof)
    assert e.value.status == 404 and e.value.evidence is None
    other.close()
    cosign(client, note, wv, log.consistency_proof)
    bad_prove: Callable[[int, int], list[bytes]] = lambda a, b: [b"\x00" * 32]  # noqa: E731
    with pytest.raises(WitnessRefused) as e:
        cosign(client, _grow(log, 2), wv, bad_prove, 3)
    assert e.value.status == 422


def test_a_cosignature_by_another_key_is_a_bad_answer(env) -> None:
    log, _, _, client = env
    impostor = Cosigner("witness.example/w1", Ed25519PrivateKey.generate()).verifier
    with pytest.raises(WitnessBadAnswer, match="no cosignature by"):
        cosign(client, _grow(log, 1), impostor, log.consistency_proof)


def test_nobody_listening_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = WitnessClient(f"http://127.0.0.1:{port}", timeout=2)
    t0 = time.monotonic()
    with pytest.raises(WitnessUnavailable):
        client.add_checkpoint("x\n", 0, [])
    assert time.monotonic() - t0 < 2


def test_bad_urls() -> None:
    for url in ("ftp://w.example", "w.example", "http://"):
        with pytest.raises(ValueError, match="http"):
            WitnessClient(url)


# --- servers that break the protocol -------------------------------------------------------


def _hostile(answer: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[str]:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            answer(self)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _send(h: BaseHTTPRequestHandler, status: int, ctype: str, data: bytes) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


@pytest.mark.parametrize(
    ("status", "ctype", "data", "error", "match"),
    [
        (409, "text/plain", b"5\n", WitnessBadAnswer, "Content-Type"),
        (409, "text/x.tlog.size", b"five\n", WitnessBadAnswer, "not a size"),
        (409, "text/x.tlog.size", b"5", WitnessBadAnswer, "not a size"),
        (200, "text/plain", b"not a signature line\n", WitnessBadAnswer, "signature lines"),
        (200, "text/plain", b"x" * (300 << 10), WitnessBadAnswer, "over"),
        (422, "application/json", b"{}", WitnessBadAnswer, "evidence"),
        (503, "text/plain", b"busy\n", WitnessUnavailable, "503"),
        (429, "text/plain", b"slow down\n", WitnessUnavailable, "429"),
        (400, "text/plain", b"no\n", WitnessRefused, "400"),
    ],
)
def test_protocol_breaches(status: int, ctype: str, data: bytes, error: type, match: str) -> None:
    for url in _hostile(lambda h: _send(h, status, ctype, data)):
        with pytest.raises(error, match=match):
            WitnessClient(url, timeout=5).add_checkpoint("x\n", 0, [])


def test_a_409_with_the_size_is_a_conflict() -> None:
    for url in _hostile(lambda h: _send(h, 409, "text/x.tlog.size", b"12\n")):
        with pytest.raises(WitnessConflict) as e:
            WitnessClient(url, timeout=5).add_checkpoint("x\n", 0, [])
        assert e.value.size == 12


def test_a_witness_that_never_answers_times_out() -> None:
    release = threading.Event()
    for url in _hostile(lambda h: release.wait(10) and None):
        t0 = time.monotonic()
        with pytest.raises(WitnessUnavailable):
            WitnessClient(url, timeout=0.5).add_checkpoint("x\n", 0, [])
        assert time.monotonic() - t0 < 3
        release.set()
