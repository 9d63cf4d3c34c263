"""`medledger audit` and `verify` against a hostile server and hostile files.

A real HTTP server on 127.0.0.1 answers the log's reads from an honest log, except the paths a
test hands it, whose raw bytes (status line, headers, body) the test writes: bytes trickled
forever, bodies past every cap, gzip bombs, JSON with 5,000-digit integers, deep nesting and
wrong types, malformed checkpoints, entries and proofs. Hostile files are fed to `verify`,
`audit --state`, `verify-evidence`, `--key` and `--keys`. Every run must end in its documented
exit code (docs/audit.md, "Hostile servers and files") with a message, never a traceback.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.cli.exits import EXIT_MALFORMED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_VERIFY_FAILED
from ledger.note import Signer
from tests.audit_helpers import MemorySource, build_log, mock_http, signer
from tests.hostile_helpers import (
    bodies,
    mutated,
    mutated_member,
    python_json_refuses,
    run,
    run_captured,
)

MiB = 1 << 20
HUGE = b"9" * 5000  # past int()'s 4,300-digit limit
DEEP = b"[" * 100_000 + b"]" * 100_000

Answer = Callable[[BaseHTTPRequestHandler], None]


# --- the hostile server --------------------------------------------------------------------


@dataclass
class Hostile:
    """`answers` maps a path (or "*" for every path) to a writer of the raw answer; the other
    paths are answered honestly from the log, which `honest(handler)` also does on demand."""

    url: str = ""
    answers: dict[str, Answer] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    sent: int = 0  # body bytes the writers got out before the client hung up
    honest: Answer = lambda h: None  # noqa: E731 - replaced by the server


@contextmanager
def serve_hostile(src: MemorySource) -> Iterator[Hostile]:
    client = mock_http(src)
    state = Hostile()

    def honest(h: BaseHTTPRequestHandler) -> None:
        r = client.get(h.path)
        h.send_response(r.status_code)
        h.send_header("content-type", r.headers.get("content-type", "text/plain"))
        h.send_header("content-length", str(len(r.content)))
        h.end_headers()
        h.wfile.write(r.content)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = urlsplit(self.path).path
            answer = state.answers.get(path) or state.answers.get("*") or honest
            try:
                answer(self)
            except OSError:
                pass  # the client hung up, as a capped reader does

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    state.honest = honest
    try:
        yield state
    finally:
        state.stop.set()
        server.shutdown()
        server.server_close()
        thread.join()


def answer_200(body: bytes, *headers: str) -> Answer:
    """A complete answer: status 200, Content-Length, `headers`, then `body`."""
    head = ["HTTP/1.0 200 OK", f"Content-Length: {len(body)}", *headers]

    def write(h: BaseHTTPRequestHandler) -> None:
        h.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    return write


def trickle(hostile: Hostile, head: bytes, every: float) -> Answer:
    """`head`, then one byte every `every` seconds for as long as the client listens."""

    def write(h: BaseHTTPRequestHandler) -> None:
        h.wfile.write(head)
        while not hostile.stop.wait(every):
            h.wfile.write(b"a")

    return write


def slowly(hostile: Hostile, delay: float) -> Answer:
    """The honest answer, whole, after `delay` seconds: every read is under any per-read limit."""

    def write(h: BaseHTTPRequestHandler) -> None:
        if not hostile.stop.wait(delay):
            hostile.honest(h)

    return write


def flood(hostile: Hostile, total: int, *, declared: bool) -> Answer:
    """`total` bytes of body as fast as the client takes them, with or without Content-Length."""
    chunk = b"A" * 65536

    def write(h: BaseHTTPRequestHandler) -> None:
        length = f"Content-Length: {total}\r\n" if declared else ""
        h.wfile.write(f"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n{length}\r\n".encode())
        for _ in range(total // len(chunk)):
            h.wfile.write(chunk)
            hostile.sent += len(chunk)

    return write


def gzip_of_zeros(n: int) -> bytes:
    """gzip of n zero bytes, made a mebibyte at a time (about 1 KiB per MiB)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    zero = bytes(MiB)
    return b"".join([z.compress(zero) for _ in range(n // MiB)] + [z.flush()])


# --- fixtures and the in-process runner ----------------------------------------------------


@dataclass
class Log:
    signer: Signer
    db: Path
    mem: MemorySource
    receipt: str
    state: bytes

    @property
    def vkey(self) -> str:
        return self.signer.verifier.vkey()


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Log:
    d = tmp_path_factory.mktemp("hostile")
    s = signer()
    ledger = build_log(f"sqlite:///{d / 'l.db'}", 300, s)
    receipt = ledger.receipt(123)
    mem = MemorySource.from_log(ledger)
    ledger.close()
    ledger.engine.dispose()
    state = d / "state.json"
    code, text = run(
        ["audit", "--db", str(d / "l.db"), "--key", s.verifier.vkey(), "--state", str(state)]
    )
    assert code == EXIT_OK, text
    return Log(s, d / "l.db", mem, receipt, state.read_bytes())


@pytest.fixture(scope="module")
def hostile(log: Log) -> Iterator[Hostile]:
    with serve_hostile(log.mem) as h:
        yield h


@pytest.fixture(autouse=True)
def honest_again(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "hostile" in request.fixturenames:
        request.getfixturevalue("hostile").answers.clear()


@contextmanager
def stdin_bytes(data: io.BufferedIOBase) -> Iterator[None]:
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(data)
    try:
        yield
    finally:
        sys.stdin = saved


def audit_url(h: Hostile, log: Log, *more: str) -> tuple[int, str]:
    return run(["audit", "--url", h.url, "--key", log.vkey, "--timeout", "60", *more])


# --- a total deadline ------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["trickled-headers", "trickled-body", "slow-pages"])
def test_timeout_bounds_the_whole_run(log: Log, hostile: Hostile, how: str) -> None:
    """Every single read answers within the per-read limit, yet the run ends at --timeout."""
    if how == "trickled-headers":
        hostile.answers["*"] = trickle(hostile, b"HTTP/1.1 200 OK\r\nX-Slow: ", 1.0)
    elif how == "trickled-body":
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"  # under every cap
        hostile.answers["*"] = trickle(hostile, head, 1.0)
    else:
        hostile.answers["*"] = slowly(hostile, 1.0)
    args = ["audit", "--url", hostile.url, "--key", log.vkey, "--timeout", "2", "--page-size", "10"]
    ended: list[tuple[int, str]] = []
    worker = threading.Thread(target=lambda: ended.append(run_captured(args)), daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(15)
    assert not worker.is_alive(), "the audit still runs after 15 s"
    code, text = ended[0]
    assert code == EXIT_UNAVAILABLE and "--timeout" in text, text
    assert "Traceback" not in text
    assert time.monotonic() - started < 15


# --- size caps and decompression -------------------------------------------------------------


@pytest.mark.parametrize(
    "path,declared",
    [("/v1/log/checkpoint", True), ("/v1/log/checkpoint", False), ("/v1/log/entries", False)],
)
def test_a_gigantic_answer_is_refused_unread(
    log: Log, hostile: Hostile, path: str, declared: bool
) -> None:
    hostile.sent = 0
    hostile.answers[path] = flood(hostile, 64 * MiB, declared=declared)
    code, text = audit_url(hostile, log)
    assert code == EXIT_MALFORMED and "bytes" in text and "next:" in text
    time.sleep(0.2)  # let the writer see the hang-up
    assert hostile.sent < 32 * MiB  # the rest was never read


def test_a_gzip_bomb_is_not_inflated(log: Log, hostile: Hostile) -> None:
    bomb = gzip_of_zeros(128 * MiB)
    hostile.answers["/v1/log/checkpoint"] = answer_200(bomb, "Content-Encoding: gzip")
    tracemalloc.start()
    try:
        code, text = audit_url(hostile, log)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == EXIT_MALFORMED and "bytes" in text, text
    assert peak < 16 * MiB, f"{peak / MiB:.0f} MiB"


@pytest.mark.parametrize(
    "headers,body,expected",
    [
        # honest gzip is read: compression is allowed, inflation is capped
        (("Content-Encoding: gzip",), "checkpoint-gzip", EXIT_OK),
        (("Content-Encoding: gzip",), b"\x1f\x8b\x08\x00 not gzip", EXIT_MALFORMED),
        (("Content-Encoding: gzip",), "truncated-gzip", EXIT_MALFORMED),
        (("Content-Encoding: br",), b"\x0b\x02\x80hi\x03", EXIT_MALFORMED),
        (("Content-Encoding: gzip, gzip",), "checkpoint-gzip", EXIT_MALFORMED),
    ],
)
def test_content_encodings(
    log: Log, hostile: Hostile, headers: tuple[str, ...], body: bytes | str, expected: int
) -> None:
    if isinstance(body, str):
        z = zlib.compressobj(9, zlib.DEFLATED, 31)
        packed = z.compress(log.mem.head.encode()) + z.flush()
        body = packed[:-6] if body == "truncated-gzip" else packed
    hostile.answers["/v1/log/checkpoint"] = answer_200(body, *headers)
    code, text = audit_url(hostile, log)
    assert code == expected, text


# --- JSON no log API gives: 5,000-digit integers, deep nesting, wrong types ------------------

HOSTILE_JSON = {
    "5000-digit-integer": b"[" + HUGE + b"]",
    "5000-digit-in-object": b'{"hashes": [], "index": ' + HUGE + b"}",
    "deep-nesting": DEEP,
    "deep-unbalanced": b"[" * 100_000,
    "object-for-list": b'{"a": 1}',
    "numbers-for-strings": b"[1, 2]",
    "non-ascii-base64": '["é"]'.encode(),
    "not-base64": b'["%%%"]',
    "invalid-utf8": b'["\xff"]',
    "fraction": b"[1.5]",
    "nan": b"[NaN]",
    "duplicate-keys": b'{"hashes": [], "hashes": []}',
    "lone-surrogate": b'["\\ud800"]',
    "empty": b"",
    "hashes-not-a-list": b'{"hashes": "AAAA"}',
    "documents-not-objects": b'[{"documents": [1]}]',
    "document-index-a-string": b'[{"documents": [{"index": "1", "note": "x", "salt": ""}]}]',
}
JSON_PATHS = {
    "/v1/log/entries": (),
    "/v1/log/keys": (),
    "/v1/log/proof/inclusion": ("--from", "100"),
}


@pytest.mark.parametrize("body", sorted(HOSTILE_JSON))
@pytest.mark.parametrize("path", sorted(JSON_PATHS))
def test_hostile_json_answers_are_malformed_input(
    log: Log, hostile: Hostile, path: str, body: str
) -> None:
    hostile.answers[path] = answer_200(HOSTILE_JSON[body], "Content-Type: application/json")
    code, text = audit_url(hostile, log, *JSON_PATHS[path])
    assert code == EXIT_MALFORMED, text
    assert "next:" in text


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


ENTRY_0 = (
    b'{"commit":"vDN3paLRRlbdEwCrHCcGc0s7a9ZM0UQaMGU9CdU+gpI=","index":0,"kind":"record",'
    b'"media":"application/fhir+json","prev":"","sender":"hosp-1",'
    b'"time":"2026-11-28T21:27:00.042Z","v":1}'
)


def _entry_with_index(index: bytes) -> bytes:
    return ENTRY_0.replace(b'"index":0', b'"index":' + index)


@pytest.mark.parametrize(
    "path,body,expected,more",
    [
        ("/v1/log/checkpoint", b"not a checkpoint\n", EXIT_VERIFY_FAILED, ()),
        ("/v1/log/checkpoint", b"\xff\xfe not UTF-8\n", EXIT_MALFORMED, ()),
        (
            "/v1/log/checkpoint",
            b"o\n" + HUGE + b"\nAAAA\n\n\xe2\x80\x94 o AAAAAAAA\n",
            EXIT_VERIFY_FAILED,
            (),
        ),
        (
            "/v1/log/entries",
            json.dumps([_b64(b"[" * 50_000)]).encode(),
            EXIT_VERIFY_FAILED,
            (),
        ),
        (
            "/v1/log/entries",
            json.dumps([_b64(_entry_with_index(HUGE))]).encode(),
            EXIT_VERIFY_FAILED,
            (),
        ),
        (
            "/v1/log/proof/inclusion",
            json.dumps({"hashes": [_b64(bytes(32))] * 9}).encode(),
            EXIT_VERIFY_FAILED,
            ("--from", "100"),
        ),
        (
            "/v1/log/proof/inclusion",
            json.dumps({"hashes": [_b64(bytes(7))]}).encode(),
            EXIT_VERIFY_FAILED,
            ("--from", "100"),
        ),
    ],
    ids=[
        "checkpoint-garbage",
        "checkpoint-not-utf8",
        "checkpoint-5000-digit-size",
        "entry-deeply-nested",
        "entry-5000-digit-index",
        "proof-wrong-hashes",
        "proof-short-hash",
    ],
)
def test_malformed_log_data(
    log: Log, hostile: Hostile, path: str, body: bytes, expected: int, more: tuple[str, ...]
) -> None:
    """Well-formed answers whose log data is wrong fail verification (4, naming the first bad
    entry where there is one); answers that are not even text are malformed input (3)."""
    hostile.answers[path] = answer_200(body)
    code, text = audit_url(hostile, log, *more)
    assert code == expected, text
    if path == "/v1/log/entries":
        assert "entry 0" in text


# --- hostile files ---------------------------------------------------------------------------


def _receipt_lines(log: Log) -> list[str]:
    return log.receipt.split("\n")


def _receipt(log: Log, edit: Callable[[list[str]], None]) -> bytes:
    lines = _receipt_lines(log)
    edit(lines)
    return "\n".join(lines).encode()


def _set(i: int, text: str) -> Callable[[list[str]], None]:
    def edit(lines: list[str]) -> None:
        lines[i] = text

    return edit


def _line_of(log: Log, prefix: str) -> int:
    return next(i for i, ln in enumerate(_receipt_lines(log)) if ln.startswith(prefix))


def hostile_receipts(log: Log) -> dict[str, bytes]:
    lines = _receipt_lines(log)
    blank = lines.index("")
    cp_size, cp_root, sig = blank + 2, blank + 3, blank + 5
    proof_line = _line_of(log, "index ") + 1
    return {
        "index-5000-digits": _receipt(log, _set(_line_of(log, "index "), "index " + "9" * 5000)),
        "size-5000-digits": _receipt(log, _set(cp_size, "9" * 5000)),
        "extra-non-ascii": _receipt(log, _set(1, "extra é")),
        "proof-non-ascii": _receipt(log, _set(proof_line, "é" * 44)),
        "root-non-ascii": _receipt(log, _set(cp_root, "é" * 44)),
        "signature-non-ascii": _receipt(log, _set(sig, lines[sig].rsplit(" ", 1)[0] + " é")),
        "invalid-utf8": log.receipt.encode().replace(b"index", b"\xff\xfe"),
        "enormous": _receipt(log, _set(proof_line, "\n".join([lines[proof_line]] * 200_000))),
    }


@pytest.mark.parametrize(
    "name",
    [
        "index-5000-digits",
        "size-5000-digits",
        "extra-non-ascii",
        "proof-non-ascii",
        "root-non-ascii",
        "signature-non-ascii",
        "invalid-utf8",
        "enormous",
    ],
)
def test_verify_a_hostile_receipt_file(log: Log, tmp_path: Path, name: str) -> None:
    path = tmp_path / "r.tlog-proof"
    path.write_bytes(hostile_receipts(log)[name])
    code, text = run(["verify", str(path), "--key", log.vkey])
    assert code == EXIT_MALFORMED, text
    assert "next:" in text


@pytest.mark.parametrize("name", ["extra-deeply-nested", "extra-5000-digit-index"])
def test_verify_a_receipt_with_a_hostile_entry(log: Log, tmp_path: Path, name: str) -> None:
    extra = b"[" * 50_000 if name == "extra-deeply-nested" else _entry_with_index(HUGE)
    path = tmp_path / "r.tlog-proof"
    path.write_bytes(_receipt(log, _set(1, "extra " + _b64(extra))))
    code, text = run(["verify", str(path), "--key", log.vkey])
    assert code == EXIT_VERIFY_FAILED and "123" in text, text


@pytest.mark.parametrize("source", ["enormous", "endless"])
def test_verify_a_hostile_stdin(log: Log, source: str) -> None:
    if source == "enormous":
        data: io.BufferedIOBase = io.BytesIO(hostile_receipts(log)["enormous"])
    else:
        data = open("/dev/zero", "rb")  # noqa: SIM115 - closed with stdin
    with data, stdin_bytes(data):
        code, text = run(["verify", "-", "--key", log.vkey])
    assert code == EXIT_MALFORMED and "bytes" in text, text


def test_key_files_are_capped(log: Log, tmp_path: Path) -> None:
    key = tmp_path / "log.vkey"
    key.write_text(log.vkey + "\n" + "# padding\n" * 200_000)
    receipt = tmp_path / "r.tlog-proof"
    receipt.write_text(log.receipt)
    code, text = run(["verify", str(receipt), "--key", str(key)])
    assert code == EXIT_MALFORMED and "bytes" in text, text


@pytest.mark.parametrize(
    "body",
    [DEEP, b'{"a":' * 50_000, b'[{"vkey": "x", "added_at": ' + HUGE + b"}]", b"\xff", b"[]" * MiB],
    ids=["deep", "deep-objects", "5000-digit", "invalid-utf8", "enormous"],
)
def test_verify_with_a_hostile_keys_file(log: Log, tmp_path: Path, body: bytes) -> None:
    receipt = tmp_path / "r.tlog-proof"
    receipt.write_text(log.receipt)
    keys = tmp_path / "keys.json"
    keys.write_bytes(body)
    code, text = run(["verify", str(receipt), "--keys", str(keys)])
    assert code == EXIT_MALFORMED, text


def hostile_states(log: Log) -> dict[str, bytes]:
    good = log.state
    obj = json.loads(good)
    return {
        "deep": DEEP,
        "5000-digit-size": good.replace(f'"size": {obj["size"]}'.encode(), b'"size": ' + HUGE),
        "invalid-utf8": good.replace(b'"origin"', b'"\xff"'),
        "enormous": good + b" " * (2 * MiB),
        "truncated": good[: len(good) // 2],
        "size-a-string": good.replace(
            f'"size": {obj["size"]}'.encode(), f'"size": "{obj["size"]}"'.encode()
        ),
        "size-a-fraction": good.replace(
            f'"size": {obj["size"]}'.encode(), f'"size": {obj["size"]}.0'.encode()
        ),
        "size-1e400": good.replace(f'"size": {obj["size"]}'.encode(), b'"size": 1e400'),
        "lone-surrogate": good.replace(b'"origin": "', b'"origin": "\\ud800'),
        "duplicate-key": good.replace(b'"origin":', b'"origin": "x", "origin":'),
    }


@pytest.mark.parametrize(
    "name",
    [
        "deep",
        "5000-digit-size",
        "invalid-utf8",
        "enormous",
        "truncated",
        "size-a-string",
        "size-a-fraction",
        "size-1e400",
        "lone-surrogate",
        "duplicate-key",
    ],
)
def test_audit_with_a_corrupted_state_file(log: Log, tmp_path: Path, name: str) -> None:
    state = tmp_path / "state.json"
    state.write_bytes(hostile_states(log)[name])
    code, text = run(["audit", "--db", str(log.db), "--key", log.vkey, "--state", str(state)])
    assert code == EXIT_MALFORMED and "next:" in text, text


@pytest.mark.parametrize(
    "body",
    [
        DEEP,
        b'{"format": "medledger-evidence/v1", "checkpoints": [' + DEEP + b"]}",
        b'{"format": "medledger-evidence/v1", "claims": [{"size": ' + HUGE + b"}]}",
        b"\xff",
        b"[]" * (33 * MiB),
    ],
    ids=["deep", "deep-inside", "5000-digit", "invalid-utf8", "enormous"],
)
def test_verify_evidence_with_a_hostile_file(log: Log, tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "evidence.json"
    path.write_bytes(body)
    code, text = run(["verify-evidence", str(path), "--key", log.vkey])
    assert code == EXIT_MALFORMED and "next:" in text, text


# --- fuzzing: every input ends in a documented exit code --------------------------------------


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=st.sampled_from(sorted(JSON_PATHS)), body=bodies)
def test_any_answer_ends_in_a_documented_code(
    log: Log, hostile: Hostile, path: str, body: bytes
) -> None:
    hostile.answers = {path: answer_200(body, "Content-Type: application/json")}
    code, _ = audit_url(hostile, log, *JSON_PATHS[path])
    assert code in (EXIT_OK, EXIT_MALFORMED, EXIT_VERIFY_FAILED)
    if python_json_refuses(body):
        assert code == EXIT_MALFORMED


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_receipt_ends_in_a_documented_code(log: Log, tmp_path: Path, data) -> None:
    path = tmp_path / "r.tlog-proof"
    path.write_bytes(mutated(log.receipt.encode(), data))
    code, _ = run(["verify", str(path), "--key", log.vkey])
    assert code in (EXIT_OK, EXIT_MALFORMED, EXIT_VERIFY_FAILED)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_state_file_ends_in_a_documented_code(log: Log, tmp_path: Path, data) -> None:
    state = tmp_path / "state.json"
    body = data.draw(st.sampled_from([mutated, mutated_member]))(log.state, data)
    state.write_bytes(body)
    code, _ = run(["audit", "--db", str(log.db), "--key", log.vkey, "--state", str(state)])
    assert code in (EXIT_OK, EXIT_MALFORMED)
    if python_json_refuses(body):
        assert code == EXIT_MALFORMED
