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

import pytest

from ledger.audit import audit
from ledger.faults import POINTS
from ledger.keys import load_or_create_signer, load_signer
from ledger.log import Log
from ledger.store import make_engine
from ledger.verify import verify_checkpoint, verify_consistency, verify_receipt
from tests.paths import ROOT

from ..audit_helpers import MemorySource

ORIGIN = "crash.example/log"
KILLS = 24


def _run_and_kill(url: str, key: Path, rng: random.Random, fault: str = "") -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ledger.crash_child", url, str(key), ORIGIN],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MEDLEDGER_FAULT": fault},
    )
    assert proc.stdout is not None
    if proc.stdout.readline() != "ready\n":
        # Only an armed fault point may kill the child while it opens the log.
        assert fault, "the child died before opening the log"
        proc.wait()
        return []
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
    log = Log(make_engine(url), signer, origin=ORIGIN, checkpoint_file=key.with_name("checkpoint"))
    assert log.read_only_reason is None
    size = log.size()
    entries = log.entries(0, size)
    assert len(entries) == size
    audited = audit(MemorySource.from_log(log), [signer.verifier])
    assert audited.ok and audited.size == size, audited.error
    final = verify_checkpoint(log.checkpoint(), [signer.verifier])
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


@pytest.mark.parametrize("point", POINTS)
def test_crash_at_each_fault_point(tmp_path: Path, point: str) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    key = tmp_path / "log.key"
    rng = random.Random(point)
    acknowledged: list[str] = []
    for _ in range(5):
        # Armed with a probability, so some batches commit before the one that dies.
        acknowledged += _run_and_kill(url, key, rng, fault=f"{point}:0.05")
    _check(url, key, acknowledged)


@pytest.mark.parametrize(
    ("point", "committed"),
    [
        ("after-lock", False),
        ("after-insert", False),
        ("during-sign", False),
        ("after-commit", True),
    ],
)
def test_armed_point_kills_before_any_reply(tmp_path: Path, point: str, committed: bool) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    key = tmp_path / "log.key"
    # Create the log first, so the point fires on an append, not while signing size 0.
    Log(make_engine(url), load_or_create_signer(key, ORIGIN), origin=ORIGIN).engine.dispose()
    proc = subprocess.run(
        [sys.executable, "-m", "tests.ledger.crash_child", url, str(key), ORIGIN],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), "MEDLEDGER_FAULT": point},
    )
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout == "ready\n", "no receipt may be given out before the crash"
    log = Log(make_engine(url), load_signer(key, ORIGIN), origin=ORIGIN)
    assert (log.size() > 0) == committed
    _check(url, key, [])
