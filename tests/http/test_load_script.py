"""benchmarks/load.py against a real server: a short noisy run reports what it should."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.paths import ROOT


def _load_module():
    name = "benchmarks_load"
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


load = _load_module()


@pytest.mark.parametrize(
    ("received", "status"),
    [
        (b"", None),
        (b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 5\r\n", None),
        (b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 5\r\n\r\n{}", None),
        (b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\n\r\n{}", 429),
        (b"HTTP/1.1 201 Created\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n", 201),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204),
    ],
)
def test_a_response_is_read_only_when_whole(received: bytes, status: int | None) -> None:
    assert load._complete_status(bytearray(received)) == status


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
    # Ten times the quota of 8/s for 2 s did arrive, and every request was answered.
    assert set(flood["answers"]) == {"201", "429"}
    assert sum(flood["answers"].values()) >= 0.8 * 10 * 8 * 2
    at_quota = runs["the extra client, beside a client at its quota"]
    assert "429" not in at_quota["answers"]
    summary = next(line for line in lines if "quiet_p99_ms" in line)
    assert set(summary["quiet_p99_ms"]) == {
        "alone",
        "beside a client at its quota",
        "beside a client at 10x its quota",
    }
    assert lines[-1]["server_peak_rss_kb"] > 0
    assert set(lines[0]["server_stack"]) == {"loop", "http"}
