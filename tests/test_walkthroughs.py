"""docs/walkthroughs.md, run as written: every shell block of each newcomer's path, in order,
with bash, curl and jq, against a real `medledger serve --demo` (so the page cannot drift from
the service). `medledger` on the PATH is this tree's command."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.http.test_serve_uvicorn import serving
from tests.paths import ROOT

PAGE = ROOT / "docs" / "walkthroughs.md"
PATHS = (
    "## A hospital integration engineer",
    "## A regulator's auditor",
    "## An insurer's developer",
)

pytestmark = pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("jq")), reason="the walkthroughs use curl and jq"
)


def blocks(heading: str) -> list[str]:
    page = PAGE.read_text(encoding="utf-8")
    start = page.index(heading)
    end = page.find("\n## ", start + len(heading))
    return re.findall(r"```sh\n(.*?)```", page[start : end if end > 0 else None], flags=re.S)


def test_every_path_has_commands() -> None:
    assert all(blocks(h) for h in PATHS)


def test_the_walkthroughs_run_as_written(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "medledger"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m exchange.cli "$@"\n')
    shim.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    data = work / "medledger-data"
    with serving(data, "--demo", "--intake-workers", "0") as (base, _):
        env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(ROOT),
            "MEDLEDGER_URL": base,
        }
        for heading in PATHS:
            for block in blocks(heading):
                done = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", block], cwd=work, env=env,
                    capture_output=True, text=True, timeout=300, check=False,
                )  # fmt: skip
                assert done.returncode == 0, f"{heading}\n{block}\n{done.stdout}\n{done.stderr}"
    answer = json.loads((work / "answer.json").read_text())
    assert {"id", "index", "receipt", "salt"} <= set(answer)
    assert json.loads((work / "audit.json").read_text())["size"] >= answer["index"] + 1
    claims = json.loads((work / "claims.json").read_text())
    assert claims["resourceType"] == "Bundle", claims
    assert [e["resource"]["resourceType"] for e in claims.get("entry", [])] == ["Claim"], claims
