"""Restart to first receipt: how soon `medledger serve` binds, is ready, and answers a Bundle.

Prepares a data directory with a hospital client and starts the server once to create the
log, then restarts it `--runs` times. From the moment the process is
started it records when the port accepts connections (bound), when `GET /health/ready`
first answers 200 (ready), and when a `POST /fhir/Bundle` sent the moment the port accepts
is answered with its receipt (first receipt). The headline is bound -> ready and bound ->
first receipt, the time a client that retries on connection refused waits after a restart.

    .venv/bin/python benchmarks/startup.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
POLL = 0.005


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "exchange.cli", *args],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout


def bundle() -> bytes:
    """A small record Bundle with a fresh identifier, so each run appends."""
    doc = {
        "resourceType": "Bundle",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
        "type": "collection",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                    "valueQuantity": {"value": 120, "unit": "mm[Hg]"},
                },
            }
        ],
    }
    return json.dumps(doc).encode()


def one_run(data: Path, token: str, workers: list[str]) -> dict[str, float | None]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exchange.cli", "serve", "--data", str(data), "--port",
         str(port), *workers],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit("the server exited during start-up")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(POLL)
        bound = time.monotonic() - t0
        ready: list[float] = []

        def poll_ready() -> None:
            with httpx.Client(timeout=30) as http:
                while time.monotonic() - t0 < 120:
                    if http.get(f"{base}/health/ready").status_code == 200:
                        ready.append(time.monotonic() - t0)
                        return
                    time.sleep(POLL)

        poller = threading.Thread(target=poll_ready)
        poller.start()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
        answer = httpx.post(f"{base}/fhir/Bundle", content=bundle(), headers=headers, timeout=120)
        receipt = time.monotonic() - t0
        if answer.status_code != 201:
            raise SystemExit(f"the first submission was answered {answer.status_code}")
        poller.join()
    finally:
        proc.terminate()
        proc.wait()
    return {
        "bound_s": round(bound, 2),
        "ready_after_bound_s": round(ready[0] - bound, 2) if ready else None,
        "receipt_after_bound_s": round(receipt - bound, 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--intake-workers", help="passed to serve (default: the server's default)")
    args = ap.parse_args(argv)
    workers = [] if args.intake_workers is None else ["--intake-workers", args.intake_workers]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        added = cli("clients", "add", "--data", str(data), "--name", "bench", "--role",
                    "hospital", "--org", "hospital-a", "--json")  # fmt: skip
        token = json.loads(added)["token"]
        one_run(data, token, workers)  # the first start creates the log: not a restart
        runs = [one_run(data, token, workers) for _ in range(args.runs)]
    for run in runs:
        print(json.dumps(run), flush=True)
    summary: dict[str, object] = {"runs": len(runs), "cpus": os.cpu_count()}
    for key in ("bound_s", "ready_after_bound_s", "receipt_after_bound_s"):
        values = [r[key] for r in runs if r[key] is not None]
        summary[f"median_{key}"] = round(statistics.median(values), 2) if values else None
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
