"""The witness over real HTTP (httpx as the client), fed real checkpoints of a real log.

Every status of c2sp.org/tlog-witness add-checkpoint: 200 with a cosignature, 409 with
text/x.tlog.size, 400, 403, 404, 422, and the body caps; a fork refused with evidence that
`medledger verify-evidence` confirms; the latest checkpoint kept across a restart and never
moved back, also under many concurrent requests; the monitoring endpoint.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.audit import Evidence, verify_evidence
from ledger.checkpoint import format_checkpoint, parse_checkpoint
from ledger.cosignature import CosignerVerifier
from ledger.merkle import empty_root
from ledger.note import Signer, open_note, parse_signature_lines, sign, split
from ledger.witness import WitnessSetupError, init, open_witness, vkey

from ..ledger_helpers import new_signer, open_log, submission
from ..witness_helpers import body, monitor_path, start_witness

NAME = "witness.example/w1"


@pytest.fixture
def env(tmp_path: Path):
    signer = new_signer()
    log = open_log(f"sqlite:///{tmp_path / 'log.db'}", signer)
    server, wv = start_witness(tmp_path / "w", NAME, [signer.verifier])
    client = httpx.Client(base_url=server.url, timeout=10)
    yield log, signer, server, wv, client
    client.close()
    server.stop()
    log.close()


def _grow(log, n: int) -> str:
    for i in range(n):
        log.append(submission(b"%d %f" % (i, time.time())))
    return log.checkpoint()


def _size(note: str) -> int:
    return parse_checkpoint(split(note)[0]).size


def _post(client: httpx.Client, data: bytes) -> httpx.Response:
    return client.post("/add-checkpoint", content=data)


def test_init_prints_a_cosignature_vkey_and_refuses_a_second(tmp_path: Path) -> None:
    v = init(tmp_path / "w", NAME)
    assert CosignerVerifier.from_vkey(v).name == NAME and vkey(tmp_path / "w") == v
    assert oct((tmp_path / "w").stat().st_mode & 0o777) == "0o700"
    assert oct((tmp_path / "w" / "witness.key").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "w" / "witness.db").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(WitnessSetupError, match="already holds a witness"):
        init(tmp_path / "w", "other.example/w")
    with pytest.raises(WitnessSetupError, match="invalid witness name"):
        init(tmp_path / "x", "has space")
    with pytest.raises(WitnessSetupError, match="not a witness"):
        open_witness(tmp_path / "nothing", [new_signer().verifier])


def test_first_checkpoint_then_a_consistency_proof(env) -> None:
    log, _, _, wv, client = env
    note = _grow(log, 5)
    r = _post(client, body(0, [], note))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    (sig,) = parse_signature_lines(r.text)
    cosig = wv.verify(split(note)[0], sig)
    assert abs(cosig.timestamp - time.time()) < 60
    later = _grow(log, 7)
    r = _post(client, body(5, log.consistency_proof(5, 12), later))
    assert r.status_code == 200, r.text
    wv.verify(split(later)[0], parse_signature_lines(r.text)[0])
    # The same checkpoint again, from its own size: cosigned again, no proof needed.
    assert _post(client, body(12, [], later)).status_code == 200


def test_stale_old_size_is_409_with_the_witness_size(env) -> None:
    log, _, _, _, client = env
    note = _grow(log, 5)
    assert _post(client, body(0, [], note)).status_code == 200
    later = _grow(log, 3)
    for old, proof in [(0, []), (3, log.consistency_proof(3, 8))]:
        r = _post(client, body(old, proof, later))
        assert r.status_code == 409
        assert r.headers["content-type"] == "text/x.tlog.size"
        assert r.content == b"5\n"


def test_bad_consistency_proof_is_422_and_changes_nothing(env) -> None:
    log, _, server, _, client = env
    assert _post(client, body(0, [], _grow(log, 5))).status_code == 200
    later = _grow(log, 6)
    proof = log.consistency_proof(5, 11)
    bad = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
    for p in (bad, proof[:-1], [*proof, proof[0]], []):
        r = _post(client, body(5, p, later))
        assert r.status_code == 422, (p, r.text)
        assert "does not verify" in r.text
    assert _size(client.get(monitor_path(log.origin)).text) == 5
    refusals = server.witness.store.refusals(log.origin)
    assert len(refusals) == 4 and all(x.status == 422 and x.note == later for x in refusals)


def test_unknown_log_is_404_and_untrusted_signatures_403(env) -> None:
    log, signer, _, _, client = env
    stranger = new_signer("other.example/log")
    text = format_checkpoint("other.example/log", 0, empty_root())
    r = _post(client, body(0, [], sign(text, [stranger])))
    assert r.status_code == 404 and "unknown log" in r.text
    # Right origin, wrong key.
    impostor = Signer(log.origin, Ed25519PrivateKey.generate())
    text = format_checkpoint(log.origin, 0, empty_root())
    r = _post(client, body(0, [], sign(text, [impostor])))
    assert r.status_code == 403 and "no signature by a trusted key" in r.text
    # The trusted key's line, one signature byte changed (the key id left alone).
    good = sign(text, [signer])
    head, sig64 = good.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(sig64))
    raw[20] ^= 1
    broken = head + " " + base64.b64encode(raw).decode() + "\n"
    r = _post(client, body(0, [], broken))
    assert r.status_code == 403 and "invalid signature by trusted key" in r.text
    # Extra lines by unknown keys are ignored.
    r = _post(client, body(0, [], good + sign(text, [impostor]).split("\n\n")[1]))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"old 0\n", "no empty line"),
        (b"old 0\n\n", "no checkpoint"),
        (b"0\n\nx", "`old <size>`"),
        (b"old 01\n\nx", "leading zeros"),
        (b"old -1\n\nx", "decimal"),
        (b"old 0\nnot base64!\n\nx", "proof line 1 is not base64"),
        (b"old 0\nAAAA\n\nx", "32-byte hash"),
        (b"old 0\n" + b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" * 64 + b"\nx", "63"),
        (b"old 0\n\n\xff\xfe", "not UTF-8"),
        (b"old 0\n\nnot a note\n", "malformed checkpoint"),
    ],
)
def test_malformed_requests_are_400(env, data: bytes, match: str) -> None:
    r = _post(env[4], data)
    assert r.status_code == 400 and match in r.text, r.text


def test_old_size_above_the_checkpoint_is_400(env) -> None:
    log, _, _, _, client = env
    note = _grow(log, 3)
    r = _post(client, body(4, [], note))
    assert r.status_code == 400 and "above the checkpoint's size" in r.text


def test_size_zero_rules_are_422(env) -> None:
    log, signer, _, _, client = env
    wrong = sign(format_checkpoint(log.origin, 0, b"\x01" * 32), [signer])
    r = _post(client, body(0, [], wrong))
    assert r.status_code == 422 and "empty tree" in r.text
    note = _grow(log, 3)
    r = _post(client, body(0, [b"\x00" * 32], note))
    assert r.status_code == 422 and "from size 0 must be empty" in r.text


def test_body_caps(env) -> None:
    client, server = env[4], env[2]
    r = _post(client, b"old 0\n" + b"x" * (65 << 10))
    assert r.status_code == 413
    host, port = server.address
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 411")
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 411")
    assert client.get("/add-checkpoint").status_code == 405
    r = client.post(monitor_path("test.example/log"), content=b"x")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    assert client.post("/elsewhere", content=b"x").status_code == 404


def test_a_slow_body_is_cut_off(tmp_path: Path) -> None:
    signer = new_signer()
    init(tmp_path / "w", NAME)
    from ledger.witness import serve

    server = serve(tmp_path / "w", [signer.verifier.vkey()], timeout=0.5).start()
    try:
        host, port = server.address
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\nContent-Length: 100\r\n\r\nold")
            t0 = time.monotonic()
            answer = s.recv(100)
            assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 3
    finally:
        server.stop()


def _fork(tmp_path: Path, signer: Signer, size: int) -> str:
    """A checkpoint of `size` signed with the log's key over other entries: a split view."""
    other = open_log(f"sqlite:///{tmp_path / 'fork.db'}", signer)
    note = _grow(other, size)
    other.close()
    return note


def test_fork_is_refused_with_evidence_verify_evidence_confirms(env, tmp_path: Path) -> None:
    log, signer, server, _, client = env
    real = _grow(log, 6)
    assert _post(client, body(0, [], real)).status_code == 200
    forked = _fork(tmp_path, signer, 6)
    assert split(forked)[0] != split(real)[0]
    r = _post(client, body(6, [], forked))
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/json"
    ev = Evidence.from_json(r.content)
    report = verify_evidence(ev, [signer.verifier])
    assert report.kind == "fork" and report.sizes == (6, 6)
    assert any(line.startswith("PROVEN") for line in report.lines)
    # Only the log's key is needed: the witness's cosignature on checkpoint 0 is ignored.
    assert NAME in ev.checkpoints[0] and ev.source.startswith(f"witness {NAME}+")
    # The witness keeps it too, and still holds the real tree.
    (kept,) = server.witness.refusal_evidence(log.origin)
    assert verify_evidence(kept, [signer.verifier]).kind == "fork"
    assert client.get(monitor_path(log.origin)).text.startswith(split(real)[0])
    # The command-line verifier confirms the answer as it came (exit 5: proven misbehaviour).
    path = tmp_path / "witness-refusal.json"
    path.write_bytes(r.content)
    cli = Path(sys.executable).with_name("medledger")
    done = subprocess.run(
        [str(cli), "verify-evidence", str(path), "--key", signer.verifier.vkey(), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 5, done.stderr
    assert json.loads(done.stdout)["kind"] == "fork"


def test_restart_keeps_the_latest_and_it_never_moves_back(env, tmp_path: Path) -> None:
    log, signer, server, _, client = env
    old_note = _grow(log, 4)
    assert _post(client, body(0, [], old_note)).status_code == 200
    new_note = _grow(log, 5)
    assert _post(client, body(4, log.consistency_proof(4, 9), new_note)).status_code == 200
    server.stop()
    again, _ = start_witness(tmp_path / "w", NAME, [signer.verifier])
    try:
        c2 = httpx.Client(base_url=again.url, timeout=10)
        r = _post(c2, body(0, [], old_note))
        assert r.status_code == 409 and r.content == b"9\n"
        # The older checkpoint from the size held: an old size above its size.
        assert _post(c2, body(9, [], old_note)).status_code == 400
        assert _post(c2, body(4, [], old_note)).status_code == 409
        assert _size(c2.get(monitor_path(log.origin)).text) == 9
        c2.close()
    finally:
        again.stop()


def test_concurrent_requests_never_move_it_back(env) -> None:
    """Many parallel add-checkpoint calls with every checkpoint of a growing log: of the
    requests built on one old size, one at most moves the witness on (compare-and-swap), and
    it ends at the largest checkpoint."""
    log, _, _, _, client = env
    notes = []
    for _ in range(24):
        notes.append(_grow(log, 1))
    size_of = {n: _size(n) for n in notes}
    moves: list[tuple[int, int]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(notes))

    errors: list[BaseException] = []

    def submit(note: str) -> None:
        try:
            settle(note)
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)

    def settle(note: str) -> None:
        size = size_of[note]
        held = 0
        with httpx.Client(base_url=client.base_url, timeout=30) as c:
            barrier.wait()
            for _ in range(200):
                if held > size:
                    return  # the witness is past this checkpoint
                proof = log.consistency_proof(held, size) if 0 < held < size else []
                r = _post(c, body(held, proof, note))
                if r.status_code == 200:
                    with lock:
                        moves.append((held, size))
                    return
                assert r.status_code == 409, r.text
                held = int(r.text)
        raise AssertionError("never settled")

    threads = [threading.Thread(target=submit, args=(n,)) for n in notes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    forward = [(a, b) for a, b in moves if b > a]
    olds = [a for a, _ in forward]
    assert len(olds) == len(set(olds)), sorted(forward)  # one winner per old size
    assert all(b >= a for a, b in moves)
    # The winners form one chain from 0 to the end.
    chain = dict(forward)
    at = 0
    while at in chain:
        at = chain[at]
    assert at == 24 and len(chain) == len(forward)
    assert _size(client.get(monitor_path(log.origin)).text) == 24


def test_monitoring_checkpoint(env) -> None:
    log, signer, _, wv, client = env
    assert client.get(monitor_path(log.origin)).status_code == 404
    note = _grow(log, 2)
    assert _post(client, body(0, [], note)).status_code == 200
    r = client.get(monitor_path(log.origin))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    opened = open_note(r.text, [signer.verifier])
    assert opened.text == split(note)[0]
    (cosig,) = [s for s in opened.unverified if s.name == NAME]
    wv.verify(opened.text, cosig)
    assert client.get("/" + "0" * 64 + "/checkpoint").status_code == 404
    assert client.get("/nothing").status_code == 404


def test_the_witness_runs_without_the_rest_of_the_service(tmp_path: Path) -> None:
    """`python -m ledger.witness` in a process where SQLAlchemy, FastAPI and the exchange
    package cannot be imported: init, serve, and a real submission."""
    signer = new_signer()
    log = open_log(f"sqlite:///{tmp_path / 'log.db'}", signer)
    note = _grow(log, 3)
    guard = (
        "import sys, runpy\n"
        "for m in ('sqlalchemy', 'fastapi', 'exchange', 'httpx', 'uvicorn'):\n"
        "    sys.modules[m] = None\n"
        "sys.argv[0] = 'ledger.witness'\n"
        "runpy.run_module('ledger.witness', run_name='__main__', alter_sys=True)\n"
    )
    root = Path(__file__).resolve().parents[2]
    init_run = subprocess.run(
        [sys.executable, "-c", guard, "init", "--data", str(tmp_path / "w"), "--name", NAME],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
    )
    assert init_run.returncode == 0, init_run.stderr
    wv = CosignerVerifier.from_vkey(init_run.stdout.strip())
    proc = subprocess.Popen(
        [sys.executable, "-c", guard, "serve", "--data", str(tmp_path / "w"), "--port", "0"]
        + ["--log", signer.verifier.vkey()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.strip() == f"witness {wv.vkey()}", proc.stderr.read() if proc.stderr else ""
        url = proc.stdout.readline().strip().removeprefix("listening on ")
        r = httpx.post(url + "/add-checkpoint", content=body(0, [], note), timeout=10)
        assert r.status_code == 200, r.text
        wv.verify(split(note)[0], parse_signature_lines(r.text)[0])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    log.close()


def test_stop_closes_kept_alive_connections(env) -> None:
    """A stopped witness answers nobody, not even a client holding a kept-alive connection."""
    log, _, server, _, client = env
    assert _post(client, body(0, [], _grow(log, 1))).status_code == 200
    server.stop()
    with pytest.raises(httpx.TransportError):
        _post(client, body(1, [], _grow(log, 1)))


def test_an_unread_body_never_becomes_the_next_request(env) -> None:
    """A POST refused before its body is read (wrong path) closes the connection: the body
    is not taken for a second request on it."""
    server = env[2]
    smuggled = b"GET /nothing HTTP/1.1\r\nHost: w\r\n\r\n"
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(
            b"POST /elsewhere HTTP/1.1\r\nHost: w\r\nContent-Length: %d\r\n\r\n" % len(smuggled)
            + smuggled
        )
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 404") and answer.count(b"HTTP/1.1 ") == 1
    assert b"Connection: close" in answer
