"""docs/smart.md's worked example, run exactly as the page shows it: its Python blocks and its
commands, read from the page, against a real `medledger serve` process (so page and test
cannot drift apart)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.http.test_serve_uvicorn import serving
from tests.paths import ROOT

SECTION = "## A worked example: an insurer's backend, from key to claim search"


def example_blocks() -> list[tuple[str, str]]:
    """The (language, code) of each fenced block of the example section, in order."""
    page = (ROOT / "docs" / "smart.md").read_text(encoding="utf-8")
    start = page.index(SECTION)
    end = page.index("\n## ", start + len(SECTION))
    return re.findall(r"```(\w+)\n(.*?)```", page[start:end], flags=re.S)


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def command(line: str) -> list[str]:
    argv = shlex.split(line)
    assert argv[0] == "medledger"
    return [sys.executable, "-m", "exchange.cli", *argv[1:]]


def test_the_pages_example_runs_as_written(tmp_path: Path) -> None:
    blocks = example_blocks()
    assert [lang for lang, _ in blocks] == ["python", "sh", "python"]
    (_, make_key), (_, commands), (_, call) = blocks
    run([sys.executable, "-c", make_key], tmp_path)
    assert (tmp_path / "payer.key.pem").stat().st_mode & 0o077 == 0
    jwks = json.loads((tmp_path / "payer.jwks.json").read_text())
    assert [set(k) & {"d", "p", "q"} for k in jwks["keys"]] == [set()]  # public half only
    # The operator's commands, in the default data directory of the directory they run in.
    lines = [ln for ln in commands.splitlines() if ln.strip()]
    client_id = json.loads(run(command(lines[0]), tmp_path))["client_id"]
    for line in lines[1:]:
        run(command(line), tmp_path)
    data = tmp_path / "medledger-data"
    with serving(data, "--intake-workers", "0") as (base, _):
        out = run(
            [sys.executable, "-c", call], tmp_path, {"CLIENT_ID": client_id, "MEDLEDGER_URL": base}
        )
    assert "granted system/Claim.rs system/Organization.rs for 300 s" in out, out
    assert "searchset with 0 claims" in out
    # The search was recorded, with the purpose bound into the token.
    explained = run(
        [sys.executable, "-m", "exchange.cli", "access", "explain", "--client", client_id,
         "--data", str(data), "--json"],
        tmp_path,
    )  # fmt: skip
    [request] = json.loads(explained)["requests"]
    assert (request["action"], request["resource_type"]) == ("search", "Claim")
    assert request["purpose"] == "HPAYMT"
