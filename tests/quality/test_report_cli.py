"""`medledger report quality` through the real CLI entry point, on a log a hospital filled
over HTTP: the table, --json, the plot files, and the exit codes."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from exchange.cli.main import main
from exchange.quality.indicators import INDICATORS
from tests.api_helpers import HOSPITAL_ORG, open_api
from tests.quality.test_quality_facts import expected_counts, submit_all


@pytest.fixture
def state(tmp_path: Path, db_url: str) -> list[str]:
    """The CLI's state options for a log holding the hand-built episodes."""
    data = tmp_path / "data"
    with open_api(data, db_url) as api:
        submit_all(api, api.credential(), datetime.now(UTC))
    return ["--db", db_url, "--key-file", str(data / "log.key")]


def _quality(*args: str) -> list[str]:
    return ["report", "quality", "--org", HOSPITAL_ORG, *args]


def test_table_json_and_plots(state: list[str], tmp_path: Path, capsys) -> None:
    want = expected_counts(datetime.now(UTC))
    assert main(_quality("--period", "2026", *state)) == 0
    table = capsys.readouterr().out
    assert "2026-01-01 to 2026-12-31" in table
    for code, (num, den) in want.items():
        line = next(row for row in table.splitlines() if row.startswith(code + " "))
        assert re.match(rf"{re.escape(code)}\s+{num}\s+{den}\s+{num / den:.4f}\s", line), line

    assert main(_quality("--period", "2026-01-01..2026-03-31", "--json", *state)) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["period"] == {"start": "2026-01-01", "end": "2026-03-31"}
    q1 = expected_counts(datetime.now(UTC), date(2026, 1, 1), date(2026, 3, 31))
    assert {r["indicator"]: (r["numerator"], r["denominator"]) for r in doc["indicators"]} == q1
    assert [r["indicator"] for r in doc["indicators"]] == list(INDICATORS)

    png, svg = tmp_path / "q.png", tmp_path / "q.svg"
    assert main(_quality("--period", "2026", "--plot", str(png), *state)) == 0
    assert f"plot written to {png}" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(_quality("--period", "2026", "--plot", str(svg), "--json", *state)) == 0
    head = svg.read_bytes()[:4000]
    assert b"<svg" in head and b"http://www.w3.org/2000/svg" in head


def test_exit_codes(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    with open_api(data) as api:
        submit_all(api, api.credential(), datetime.now(UTC))
    state = ["--data-dir", str(data)]  # the alias of --data
    assert main(_quality("--period", "2026", *state)) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as usage:
        main(_quality("--period", "2026-13", *state))
    assert usage.value.code == 1
    assert "2026-13" in capsys.readouterr().err
    assert main(_quality("--period", "2026", "--plot", str(tmp_path / "q.gif"), *state)) == 1
    assert ".png or .svg" in capsys.readouterr().err
    other = ["report", "quality", "--org", "nobody", "--period", "2026", *state]
    assert main(other) == 3
    assert "nobody" in capsys.readouterr().err
