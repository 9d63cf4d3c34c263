"""SIGKILL at random moments loses no acknowledged entry and leaves a log that verifies."""

from __future__ import annotations

import base64
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ledger.keys import load_signer
from ledger.log import Log
from ledger.store import make_engine
from ledger.verify import ChainAuditor, verify_checkpoint, verify_consistency, verify_receipt

ROOT = Path(__file__).resolve().parents[1]
ORIGIN = "crash.example/log"
KILLS = 24


def _run_and_kill(url: str, key: Path, rng: random.Random) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_child", url, str(key), ORIGIN],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout))  # type: ignore[arg-type]
    reader.start()
    time.sleep(rng.uniform(0.05, 0.6))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join()
    # A line cut by the kill was never fully acknowledged to anyone: drop it.
    return [base64.b64decode(x).decode() for x in lines if x.endswith("\n")]


def _check(url: str, key: Path, receipts: list[str]) -> None:
    signer = load_signer(key, ORIGIN)
    log = Log(make_engine(url), signer, origin=ORIGIN)
    size = log.size()
    entries = log.entries(0, size)
    assert len(entries) == size
    auditor = ChainAuditor()
    for data in entries:
        auditor.add(data)
    final = verify_checkpoint(log.checkpoint(), [signer.verifier])
    auditor.check(final)
    # Every checkpoint the log ever signed is consistent with the final one.
    for cp_size, note in log.checkpoints(1):
        cp = verify_checkpoint(note, [signer.verifier])
        verify_consistency(cp, final, log.consistency_proof(cp_size, size) if cp_size else [])
    for text in receipts:
        v = verify_receipt(text, [signer.verifier])
        assert v.entry.index < size
        assert entries[v.entry.index] == v.entry_bytes
    log.engine.dispose()


def test_sigkill_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    key = tmp_path / "log.key"
    rng = random.Random(6962)
    acknowledged: list[str] = []
    for _ in range(KILLS):
        acknowledged += _run_and_kill(url, key, rng)
    assert len(acknowledged) > KILLS, "the child acknowledged too few appends to mean anything"
    _check(url, key, acknowledged)


def test_sigkill_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    key = tmp_path / "log.key"
    rng = random.Random(9162)
    acknowledged: list[str] = []
    for _ in range(KILLS):
        acknowledged += _run_and_kill(pg_url, key, rng)
    assert len(acknowledged) > KILLS
    _check(pg_url, key, acknowledged)
