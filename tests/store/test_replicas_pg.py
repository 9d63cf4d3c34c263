"""Several `medledger serve` processes on one PostgreSQL database.

Started at the same moment on an empty database, every one comes up: schema creation runs
under one advisory lock (ledger.store.schema_transaction), so the second waits for the first
instead of failing on a duplicate CREATE. Appending through all of them never forks the log:
the head row is locked per batch, so each batch extends the tree the last one left.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from exchange.store import migrate
from ledger import store
from ledger.keys import generate_key_file
from ledger.note import Verifier
from ledger.verify import verify_receipt, verify_submission
from tests.api_helpers import observation_bundle
from tests.http.test_serve_uvicorn import ROOT, START_TIMEOUT, free_port

REPLICAS = 3


@contextmanager
def replicas(url: str, key_file: Path, n: int) -> Iterator[list[str]]:
    """`n` servers started at once on the database `url`; yields their base URLs once all
    answer /health/ready."""
    procs = []
    for _ in range(n):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "exchange.cli", "serve", "--db", url, "--key-file",
             str(key_file), "--port", str(port), "--intake-workers", "0"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        procs.append((proc, f"http://127.0.0.1:{port}"))
    try:
        deadline = time.monotonic() + START_TIMEOUT
        for proc, base in procs:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"a replica died: {proc.communicate()[1][-2000:]}")
                try:
                    if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "a replica did not become ready in time"
                time.sleep(0.1)
        yield [base for _, base in procs]
    finally:
        for proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _token(url: str, key_file: Path) -> str:
    added = subprocess.run(
        [sys.executable, "-m", "exchange.cli", "clients", "add", "--db", url, "--key-file",
         str(key_file), "--name", "his", "--role", "hospital", "--org", "hospital-a", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    return str(json.loads(added.stdout)["token"])


def test_replicas_started_at_once_all_come_up_and_never_fork(tmp_path: Path, pg_url: str) -> None:
    key_file = tmp_path / "keys" / "log.key"
    generate_key_file(key_file)
    with replicas(pg_url, key_file, REPLICAS) as bases:
        token = _token(pg_url, key_file)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
        bodies = [observation_bundle(f"{100 + i}.00") for i in range(8 * REPLICAS)]

        def post(i: int) -> dict:
            r = httpx.post(f"{bases[i % REPLICAS]}/fhir/Bundle", content=bodies[i],
                           headers=headers, timeout=60)  # fmt: skip
            assert r.status_code == 201, r.text
            return r.json()

        with ThreadPoolExecutor(2 * REPLICAS) as pool:
            answers = list(pool.map(post, range(len(bodies))))
        vkey = httpx.get(f"{bases[0]}/v1/log/key", timeout=30).text
        assert {httpx.get(f"{b}/v1/log/key", timeout=30).text for b in bases} == {vkey}

    # Every receipt, from whichever replica, verifies and commits to what was sent ...
    verifier = Verifier.from_vkey(vkey)
    for body, answer in zip(bodies, answers, strict=True):
        entry = verify_receipt(answer["receipt"], [verifier]).entry
        verify_submission(entry, body, base64.b64decode(answer["salt"]))
    assert sorted(a["index"] for a in answers) == list(range(len(bodies)))
    # ... and one audit of the database finds one tree: every checkpoint any replica signed
    # is consistent with every other.
    (tmp_path / "log.vkey").write_text(vkey)
    audited = subprocess.run(
        [sys.executable, "-m", "exchange.cli", "audit", "--db", pg_url, "--key",
         str(tmp_path / "log.vkey"), "--json", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert json.loads(audited.stdout)["size"] == len(bodies)


# Every path that creates tables: the ledger's own, and the exchange's migrations (which run
# the ledger's first). Each must wait while another session holds the schema lock.
SCHEMA_PATHS: dict[str, Callable[..., object]] = {
    "ledger": store.create_schema,
    "exchange": migrate.upgrade,
}


@pytest.mark.parametrize("path", list(SCHEMA_PATHS))
def test_every_schema_path_waits_for_the_schema_lock(pg_url: str, path: str) -> None:
    engine = store.make_engine(pg_url)
    try:
        store.create_schema(engine)  # what each path may build on
        holder = engine.connect()
        tx = holder.begin()
        holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": store.SCHEMA_LOCK})
        done = threading.Event()
        failed: list[BaseException] = []

        def create() -> None:
            try:
                SCHEMA_PATHS[path](engine)
            except BaseException as e:  # noqa: BLE001  (reported below)
                failed.append(e)
            done.set()

        worker = threading.Thread(target=create)
        worker.start()
        try:
            assert not done.wait(1.0), f"{path} created tables without the schema lock"
        finally:
            tx.rollback()
            holder.close()
        worker.join(30)
        assert done.is_set() and not failed, failed
    finally:
        engine.dispose()
