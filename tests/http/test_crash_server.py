"""A real `medledger serve` under concurrent HTTP load, killed with SIGKILL and restarted.

Each round arms one fault point of `ledger.faults` (or none: a kill from outside at a random
moment), drives several clients posting Bundles until the server dies, restarts it unarmed and
checks: every acknowledged receipt verifies and its entry is in the log at its index, the log
has no gap or duplicate, the audit from the previous round's state passes (no fork, no
rollback). CI runs ROUNDS_CI rounds per fault point per backend; MEDLEDGER_SOAK=1 runs the long
soak (>= 200 kills on SQLite, >= 100 on PostgreSQL).
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from exchange.audit.sources import HttpSource
from ledger.audit import audit
from ledger.audit.state import AuditState
from ledger.entry import parse_entry
from ledger.faults import POINTS
from ledger.keys import load_or_create_signer
from ledger.note import Verifier
from ledger.verify import verify_receipt, verify_submission
from tests.api_helpers import observation_bundle
from tests.paths import ROOT

SOAK = os.environ.get("MEDLEDGER_SOAK", "") not in ("", "0")
ROUNDS_CI = 1
KILLS = {"sqlite": 200, "postgresql": 100}
CLIENTS = 4
ORIGIN = "medledger.example/log"
FAULTS = (*POINTS, "")  # "" = SIGKILL from outside at a random moment


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Harness:
    state_args: list[str]
    workdir: Path
    rng: random.Random
    token: str = ""
    acked: list[tuple[dict[str, Any], bytes]] = field(default_factory=list)
    audit_state: AuditState | None = None
    sent: int = 0
    kills: int = 0
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def server_log(self) -> Path:
        """Every server's stderr, kept for the failure message of a test that fails."""
        return self.workdir / "server.log"

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "exchange.cli", *args, *self.state_args],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT), "MEDLEDGER_FAULT": ""},
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    def start(self, fault: str) -> tuple[subprocess.Popen[bytes], str]:
        port = _free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exchange.cli",
                "serve",
                "--port",
                str(port),
                "--intake-workers",
                "0",
                "--rate-limit",
                "0",
                *self.state_args,
            ],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=self.server_log.open("ab"),
            env={**os.environ, "PYTHONPATH": str(ROOT), "MEDLEDGER_FAULT": fault},
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the server exited while starting"
            try:
                if httpx.get(url + "/v1/log/key", timeout=2).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                time.sleep(0.1)
        proc.kill()
        raise AssertionError("the server did not start")

    def load(self, url: str, proc: subprocess.Popen[bytes], stop: threading.Event) -> None:
        """One client: post distinct Bundles until the server is gone; keep acknowledged ones."""
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/fhir+json"}
        with httpx.Client(timeout=10) as http:
            while not stop.is_set() and proc.poll() is None:
                with self.lock:
                    self.sent += 1
                    n = self.sent
                body = observation_bundle(
                    value=f"{n}.00", identifier=f"urn:uuid:{self.rng.getrandbits(128):032x}"
                )
                try:
                    r = http.post(url + "/fhir/Bundle", content=body, headers=headers)
                except httpx.HTTPError:
                    return
                if r.status_code == 201:
                    with self.lock:
                        self.acked.append((r.json(), body))
                elif r.status_code not in (429, 503):
                    # Collected, not asserted: an assertion in this thread would only warn.
                    with self.lock:
                        self.unexpected.append(f"{r.status_code} {r.text[:300]}")

    def round(self, fault: str) -> None:
        armed = f"{fault}:{self.rng.choice((0.05, 0.2, 0.5))}" if fault else ""
        proc, url = self.start(armed)
        stop = threading.Event()
        threads = [
            threading.Thread(target=self.load, args=(url, proc, stop)) for _ in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        try:
            proc.wait(timeout=self.rng.uniform(0.2, 1.5) if not fault else 20)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}, not a kill"
        self.kills += 1
        stop.set()
        for t in threads:
            t.join()
        assert not self.unexpected, f"answers other than 201/429/503: {self.unexpected}"
        self.check()

    def check(self) -> None:
        proc, url = self.start("")
        try:
            key = Verifier.from_vkey(httpx.get(url + "/v1/log/key").text)
            result = audit(HttpSource(url), [key], state=self.audit_state)
            assert result.ok, result.error
            self.audit_state = result.state
            entries = HttpSource(url)
            size = result.size
            indices = set()
            for answer, body in self.acked:
                verified = verify_receipt(answer["receipt"], [key])
                verify_submission(verified.entry, body, base64.b64decode(answer["salt"]))
                assert verified.entry.index < size, "an acknowledged entry is missing"
                indices.add(verified.entry.index)
            assert len(indices) == len(self.acked), "two receipts for one index"
            stored = _entries(entries, size)
            assert [parse_entry(e).index for e in stored] == list(range(size))
            for answer, _ in self.acked:
                verified = verify_receipt(answer["receipt"], [key])
                assert parse_entry(stored[verified.entry.index]) == verified.entry
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def _entries(source: HttpSource, size: int) -> list[bytes]:
    out: list[bytes] = []
    while len(out) < size:
        out.extend(source.entries(len(out), min(size, len(out) + source.page_size)))
    return out


def _harness(state_args: list[str], tmp_path: Path, seed: int) -> Harness:
    h = Harness(state_args, tmp_path, random.Random(seed))
    info = json.loads(
        h.cli(
            "clients",
            "add",
            "--name",
            "crash",
            "--role",
            "hospital",
            "--org",
            "hospital-a",
            "--json",
        )
    )
    h.token = info["token"]
    return h


def _run(h: Harness, backend: str) -> None:
    rounds = max(1, KILLS[backend] // len(FAULTS)) if SOAK else ROUNDS_CI
    for _ in range(rounds):
        for fault in FAULTS:
            h.round(fault)
    assert h.kills == rounds * len(FAULTS)
    assert len(h.acked) > 0, "no submission was acknowledged: the load never ran"


def test_sigkill_under_load_loses_nothing_acknowledged_sqlite(tmp_path: Path) -> None:
    _run(_harness(["--data", str(tmp_path / "data")], tmp_path, 1), "sqlite")


def test_sigkill_under_load_loses_nothing_acknowledged_postgresql(
    pg_url: str, tmp_path: Path
) -> None:
    load_or_create_signer(tmp_path / "log.key", ORIGIN)
    args = ["--db", pg_url, "--key-file", str(tmp_path / "log.key")]
    _run(_harness(args, tmp_path, 2), "postgresql")


pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
