"""benchmarks/load.py against a real server: a short noisy run reports what it should."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_short_noisy_run_reports_latency_and_throttling() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "load.py"),
            "--noisy",
            "--clients",
            "2",
            "--rate",
            "4",
            "--rate-limit",
            "8",
            "--burst",
            "8",
            "--seconds",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    runs = {line["run"]: line for line in lines if "run" in line}
    quiet = [v for k, v in runs.items() if k == "steady" or k.startswith("quiet clients")]
    assert len(quiet) == 3
    for run in quiet:
        # Every quiet submission was answered 201, with a latency for each.
        assert run["answers"] == {"201": run["receipts"]} and run["receipts"] >= 12
        assert 0 < run["p50_ms"] <= run["p99_ms"]
        assert run["server_cores"] is not None and run["generator_cores"] >= 0
    flood = runs["the extra client, beside a client at 10x its quota"]
    assert flood["answers"].get("429", 0) > flood["answers"].get("201", 0) > 0
    at_quota = runs["the extra client, beside a client at its quota"]
    assert "429" not in at_quota["answers"]
    summary = next(line for line in lines if "quiet_p99_ms" in line)
    assert set(summary["quiet_p99_ms"]) == {
        "alone",
        "beside a client at its quota",
        "beside a client at 10x its quota",
    }
    assert lines[-1]["server_peak_rss_kb"] > 0
