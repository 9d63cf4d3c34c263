"""Start-up durability checks: refused in production mode, warned otherwise (real servers)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger.keys import load_or_create_signer
from ledger.store import durability_problems, make_engine

CLI = [sys.executable, "-m", "exchange.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unsafe(pg_url: str) -> str:
    """The same database with commits acknowledged before they reach disk (a session setting)."""
    return pg_url + "%20-csynchronous_commit%3Doff"


def _serve(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, MEDLEDGER_PRODUCTION="")
    return subprocess.Popen(
        [*CLI, "serve", "--intake-workers", "0", "--port", str(_free_port()), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_serving(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """Stdout up to the 'serving' line (the process is then stopped)."""
    assert proc.stdout is not None
    deadline, seen = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if "serving" in line:
            break
    proc.terminate()
    proc.wait(timeout=30)
    return seen


def test_postgres_setting_that_loses_commits_is_reported(pg_url: str) -> None:
    engine = make_engine(_unsafe(pg_url))
    try:
        problems = durability_problems(engine)
    finally:
        engine.dispose()
    assert any("synchronous_commit is off" in p for p in problems)


def test_production_mode_refuses_an_unsafe_postgres(pg_url: str, tmp_path: Path) -> None:
    load_or_create_signer(tmp_path / "log.key", "medledger.example/log")
    proc = _serve(
        ["--db", _unsafe(pg_url), "--key-file", str(tmp_path / "log.key"), "--production"],
        tmp_path,
    )
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3
    assert "refusing to start in production mode" in err
    assert "synchronous_commit" in err


def test_without_production_mode_an_unsafe_postgres_is_warned_and_served(
    pg_url: str, tmp_path: Path
) -> None:
    load_or_create_signer(tmp_path / "log.key", "medledger.example/log")
    proc = _serve(["--db", _unsafe(pg_url), "--key-file", str(tmp_path / "log.key")], tmp_path)
    out = _wait_serving(proc)
    assert "serving http://" in out
    assert proc.stderr is not None
    assert "warning: PostgreSQL synchronous_commit is off" in proc.stderr.read()


def test_production_mode_serves_a_sound_postgres(pg_url: str, tmp_path: Path) -> None:
    load_or_create_signer(tmp_path / "log.key", "medledger.example/log")
    engine = make_engine(pg_url)
    try:
        if durability_problems(engine):
            pytest.skip("this PostgreSQL server itself runs without full durability")
    finally:
        engine.dispose()
    proc = _serve(
        ["--db", pg_url, "--key-file", str(tmp_path / "log.key"), "--production"], tmp_path
    )
    assert "serving http://" in _wait_serving(proc)


def test_production_mode_serves_the_embedded_sqlite(tmp_path: Path) -> None:
    proc = _serve(["--data", str(tmp_path / "data"), "--production"], tmp_path)
    assert "serving http://" in _wait_serving(proc)
