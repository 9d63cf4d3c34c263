"""mypy over the packages pyproject.toml lists, with the committed configuration: no errors.

Runs ``python -m mypy`` with no arguments from the repository root, exactly as a developer or
CI does, so the configuration under test is the one committed (strict, ``warn_unreachable``,
every ``# type: ignore`` naming its error code). mypy keeps its cache in ``.mypy_cache``: a
rerun with nothing changed takes under a second; a cold run over adapters/, exchange/ and
ledger/ takes about a minute.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest

from tests.paths import ROOT


@pytest.mark.typecheck
def test_mypy_reports_no_errors() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    assert {"adapters", "exchange", "ledger"} <= set(config["files"]), config["files"]
    result = subprocess.run(
        [sys.executable, "-m", "mypy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    # A run that checked nothing also exits 0.
    checked = re.search(r"no issues found in (\d+) source files", report)
    assert checked is not None and int(checked.group(1)) > 0, report
