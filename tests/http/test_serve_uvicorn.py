"""`medledger serve` for real: a uvicorn process on a temporary directory, driven over HTTP."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from exchange.intake.samples import sample_bundles
from ledger.note import Verifier
from ledger.verify import verify_receipt, verify_submission
from tests.paths import ROOT

START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exchange.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextmanager
def serving(data: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exchange.cli",
            "serve",
            "--data",
            str(data),
            "--port",
            str(port),
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            try:
                if httpx.get(f"{base}/fhir/metadata", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "medledger serve did not answer in time"
            time.sleep(0.1)
        yield base, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_submit_and_verify_the_receipt_offline(tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = cli(
        "clients",
        "add",
        "--data",
        str(data),
        "--name",
        "his",
        "--role",
        "hospital",
        "--org",
        "boao-lecheng-intl",
        "--json",
    )
    assert added.returncode == 0, added.stderr
    token = json.loads(added.stdout)["token"]
    body = sample_bundles()[6]

    with serving(data) as (base, proc):
        with httpx.Client(base_url=base, timeout=30) as http:
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
            r = http.post("/fhir/Bundle", content=body, headers=headers)
            assert r.status_code == 201, r.text
            answer = r.json()
            original = r.headers["location"].replace("/fhir/Bundle/", "/fhir/Binary/")
            assert http.get(original, headers=headers).content == body
            receipt = http.get(f"/v1/log/entries/{answer['index']}/receipt").text
            vkey = http.get("/v1/log/key").text
        assert proc.poll() is None

    verified = verify_receipt(receipt, [Verifier.from_vkey(vkey)])
    verify_submission(verified.entry, body, base64.b64decode(answer["salt"]))
    assert verified.entry.kind == "settlement" and verified.entry.sender == "boao-lecheng-intl"
    assert (data / "checkpoint").is_file()  # the log's last checkpoint, kept beside its key


def test_serve_demo_prints_credentials_that_work(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serving(data, "--demo", "--intake-workers", "0") as (base, proc):
        assert proc.stdout is not None
        printed = []
        for line in proc.stdout:
            printed.append(line)
            if "serving" in line:
                break
        text = "".join(printed)
        token = text.split("export HOSPITAL_TOKEN=")[1].split()[0]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
        try_me = (data / "demo" / "try-me.json").read_bytes()
        r = httpx.post(f"{base}/fhir/Bundle", content=try_me, headers=headers, timeout=30)
        assert r.status_code == 201 and r.json()["index"] == 9
        assert "curl" in text and "medledger verify" in text
