"""serve --log-format json (or MEDLEDGER_LOG_FORMAT=json): every record of the process, the
HTTP server's included, is one JSON object per line on stderr, and no patient data is in it."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from exchange.config import Environment, JsonFormatter
from tests.api_helpers import patient_bundle
from tests.http.test_serve_uvicorn import cli, serving
from tests.paths import ROOT

KEYS = {"time", "level", "logger", "message"}


def records(stderr: str) -> list[dict[str, str]]:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert lines
    out = [json.loads(ln) for ln in lines]  # every line, not some: a collector reads them all
    for r in out:
        assert KEYS <= set(r) <= KEYS | {"exception"}, r
        assert r["time"].endswith("Z") and r["level"] in ("DEBUG", "INFO", "WARNING", "ERROR")
    return out


def test_the_formatter_makes_one_line_per_record() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "medledger.exchange", logging.ERROR, __file__, 1, "two\nlines %s", ("here",),
            sys.exc_info(),
        )  # fmt: skip
    line = JsonFormatter().format(record)
    assert "\n" not in line
    obj = json.loads(line)
    assert (obj["level"], obj["logger"], obj["message"]) == (
        "ERROR",
        "medledger.exchange",
        "two\nlines here",
    )
    assert "ValueError: boom" in obj["exception"]


@pytest.mark.parametrize("how", ["option", "environment"])
def test_serve_logs_json_lines_without_patient_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    data = tmp_path / "data"
    added = cli("clients", "add", "--data", str(data), "--name", "h", "--role", "hospital",
                "--org", "hospital-a", "--json")  # fmt: skip
    assert added.returncode == 0, added.stderr
    token = json.loads(added.stdout)["token"]
    extra = ["--log-format", "json"]
    if how == "environment":
        monkeypatch.setenv("MEDLEDGER_LOG_FORMAT", "json")
        extra = []
    # Bound to every address, without --public-url: serve warns, as a JSON record too.
    with serving(data, "--intake-workers", "0", "--access-log", "--host", "0.0.0.0", *extra) as (
        base,
        proc,
    ):
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
        r = httpx.post(f"{base}/fhir/Bundle", content=patient_bundle("MRN-7731", name="Seo"),
                       headers=headers, timeout=30)  # fmt: skip
        assert r.status_code == 201, r.text
        assert httpx.get(f"{base}/fhir/metadata", timeout=30).status_code == 200
    stderr = proc.stderr.read() if proc.stderr else ""
    found = records(stderr)
    loggers = {r["logger"] for r in found}
    assert {"uvicorn.error", "uvicorn.access"} <= loggers, loggers
    assert any("Application startup complete" in r["message"] for r in found)
    assert any(
        "POST /fhir/Bundle" in r["message"] for r in found if r["logger"] == "uvicorn.access"
    )
    assert any(
        r["level"] == "WARNING"
        and "--public-url" in r["message"]
        and r["logger"] == "medledger.serve"
        for r in found
    )
    assert "MRN-7731" not in stderr and "Seo" not in stderr


def test_an_unknown_log_format_is_refused(tmp_path: Path) -> None:
    assert Environment.read({"MEDLEDGER_LOG_FORMAT": "json"}).log_format == "json"
    done = subprocess.run(
        [sys.executable, "-m", "exchange.cli", "serve", "--data", str(tmp_path / "d")],
        cwd=ROOT, env={**os.environ, "MEDLEDGER_LOG_FORMAT": "xml"}, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "MEDLEDGER_LOG_FORMAT" in done.stderr
    assert not (tmp_path / "d").exists()
