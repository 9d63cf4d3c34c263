"""`medledger witness init|vkey|serve`: the witness program under the medledger command,
run as a real process and cosigning a real log's checkpoint over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from exchange.cli.main import main
from ledger import witness
from ledger.cosignature import CosignerVerifier
from ledger.witness.client import WitnessClient, cosign
from tests.ledger_helpers import new_signer, open_log, submission
from tests.paths import ROOT


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_init_and_vkey(tmp_path: Path, capsys: Any) -> None:
    data = str(tmp_path / "w")
    code, out, err = run(capsys, "witness", "init", "--data", data, "--name", "ha.example/w1")
    assert code == 0, err
    vkey = out.strip()
    assert CosignerVerifier.from_vkey(vkey).name == "ha.example/w1"
    assert vkey == witness.vkey(tmp_path / "w")
    assert run(capsys, "witness", "vkey", "--data", data)[1].strip() == vkey
    code, _, err = run(capsys, "witness", "init", "--data", data, "--name", "other.example/w")
    assert code == 3 and "already holds a witness" in err and vkey in err
    code, _, err = run(capsys, "witness", "init", "--data", data + "2", "--name", "a b")
    assert code == 3 and "invalid witness name" in err
    code, _, err = run(capsys, "witness", "vkey", "--data", str(tmp_path / "nothing"))
    assert code == 3 and "not a witness's data directory" in err


def test_serve_cosigns_a_logs_checkpoint(tmp_path: Path, capsys: Any) -> None:
    signer = new_signer()
    log = open_log(f"sqlite:///{tmp_path / 'log.db'}", signer)
    log.append_batch([submission(b"%d" % i) for i in range(12)], receipts=False)
    data = str(tmp_path / "w")
    assert run(capsys, "witness", "init", "--data", data, "--name", "ha.example/w1")[0] == 0
    verifier = witness.verifier(tmp_path / "w")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "exchange.cli", "witness", "serve", "--data", data,
         "--log", signer.verifier.vkey(), "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"witness {verifier.vkey()}"
        url = proc.stdout.readline().strip().removeprefix("listening on ")
        assert url == f"http://127.0.0.1:{port}"
        client = WitnessClient(url)
        try:
            c = cosign(client, log.checkpoint(), verifier, log.consistency_proof)
        finally:
            client.close()
        assert c.name == "ha.example/w1"
        # A second witness on the same port cannot bind: exit 2.
        code, _, err = run(capsys, "witness", "serve", "--data", data, "--log",
                           signer.verifier.vkey(), "--port", str(port))  # fmt: skip
        assert code == 2 and "cannot listen" in err
    finally:
        # What a service manager sends; it stops cleanly (exit 0), as on SIGINT.
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        log.close()
    assert proc.returncode == 0
    code, _, err = run(capsys, "witness", "serve", "--data", data, "--log", "not-a-key")
    assert code == 3 and "not-a-key" in err
