"""`medledger serve` under a witness policy for real: a uvicorn process given the policy by
MEDLEDGER_POLICY, two witnesses over HTTP, and the readers' commands against what it serves:
`audit --url --policy`, `tiles sync --witnessed` then `audit --tiles --policy`, and
`audit --db --policy` (the database holds no cosignature: exit 6)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from exchange.bootstrap import open_engine, open_log
from exchange.cli.main import main
from exchange.config import Settings
from exchange.intake.samples import sample_bundles
from ledger.policy import QuorumNotMet, load_policy
from tests.paths import ROOT
from tests.witness_helpers import policy_file, start_witness


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_with_a_policy_and_its_readers(tmp_path: Path, capsys: Any) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    log, _ = open_log(settings, open_engine(settings))
    vkey = log.signer.verifier
    log.close()
    code, out, err = run(capsys, "clients", "add", "--data", str(data), "--name", "his",
                         "--role", "hospital", "--org", "boao-lecheng-intl", "--json")  # fmt: skip
    assert code == 0, err
    token = json.loads(out)["token"]
    started = [start_witness(tmp_path / f"w{i}", f"w{i}.example/w", [vkey]) for i in range(2)]
    ws = [(f"W{i}", v, s.url) for i, (s, v) in enumerate(started)]
    policy_path = policy_file(tmp_path / "policy", vkey, ws, "group both all W0 W1\nquorum both")
    policy = load_policy(policy_path)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "exchange.cli", "serve", "--data", str(data), "--port", str(port),
         "--intake-workers", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "MEDLEDGER_POLICY": str(policy_path)},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        while not (line := proc.stdout.readline()).startswith("medledger: serving"):
            assert line, proc.communicate()[1][-3000:]
            lines.append(line)
        assert f"medledger: witnesses W0 {ws[0][2]}, W1 {ws[1][2]}; quorum both\n" in lines
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "medledger serve did not answer in time"
            time.sleep(0.05)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
        r = httpx.post(f"{base}/fhir/Bundle", content=sample_bundles()[6], headers=headers)
        assert r.status_code == 201, r.text
        index = r.json()["index"]

        def witnessed_size() -> int:
            try:
                note = httpx.get(f"{base}/v1/log/checkpoint").text
                return policy.require(note).checkpoint.size
            except QuorumNotMet:
                return -1

        deadline = time.monotonic() + 5
        while witnessed_size() <= index:
            assert time.monotonic() < deadline, "not witnessed within 5 s"
            time.sleep(0.05)
        code, out, err = run(capsys, "audit", "--url", base, "--policy", str(policy_path))
        assert code == 0 and "witnessed by W0, W1" in out, err
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        for s, _ in started:
            s.stop()

    out_dir = tmp_path / "tiles"
    code, _, err = run(capsys, "tiles", "sync", "--data", str(data), "--out", str(out_dir),
                       "--witnessed")  # fmt: skip
    assert code == 0, err
    code, out, err = run(capsys, "audit", "--tiles", str(out_dir), "--policy", str(policy_path))
    assert code == 0 and "witnessed by W0, W1" in out, err
    code, _, err = run(capsys, "audit", "--db", str(data), "--policy", str(policy_path))
    assert code == 6 and "no cosignature by W0, W1" in err
    kept = data / "witnessed-checkpoint"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    kept.unlink()
    code, _, err = run(capsys, "tiles", "sync", "--data", str(data), "--out", str(out_dir),
                       "--witnessed")  # fmt: skip
    assert code == 3 and "no witnessed checkpoint" in err
