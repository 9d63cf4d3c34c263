"""`medledger tiles sync --out DIR` and `medledger audit --tiles`: the log of a data directory
written out as tiles, incrementally, and audited from the directory and from the service's
own /tlog over real HTTP."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from exchange.app import create_app
from exchange.bootstrap import open_engine, open_log
from exchange.cli.main import main
from exchange.config import Settings
from tests.api_helpers import served
from tests.ledger_helpers import submission


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _grow(data: Path, n: int) -> str:
    """Appends n entries to the log of `data`; its verifier key."""
    settings = Settings(data_dir=data)
    log, _ = open_log(settings, open_engine(settings))
    try:
        log.append_batch([submission(os.urandom(8)) for _ in range(n)], receipts=False)
        return log.signer.verifier.vkey()
    finally:
        log.close()


def test_sync_is_incremental_and_the_directory_audits(tmp_path: Path, capsys: Any) -> None:
    data, out = tmp_path / "data", tmp_path / "tiles"
    vkey = _grow(data, 300)
    code, stdout, err = run(capsys, "tiles", "sync", "--data", str(data), "--out", str(out))
    assert code == 0, err
    first = stdout.split()
    assert first[-1] == "checkpoint" and "tile/0/000" in first and "tile/0/001.p/44" in first
    assert "300 entries" in err and f"{len(first)} written, 0 unchanged" in err

    code, stdout, err = run(capsys, "tiles", "sync", "--data", str(data), "--out", str(out))
    assert (code, stdout) == (0, "") and "0 written" in err  # nothing changed, nothing written

    _grow(data, 230)  # tile 1 becomes full: its partial tiles go
    code, stdout, _ = run(capsys, "tiles", "sync", "--data", str(data), "--out", str(out),
                          "--json")  # fmt: skip
    r = json.loads(stdout)
    assert code == 0 and r["size"] == 530
    assert set(r["written"]) == {
        "tile/0/001", "tile/0/002.p/18", "tile/1/000.p/2", "tile/entries/001",
        "tile/entries/002.p/18", "checkpoint",
    }  # fmt: skip
    assert r["removed"] == ["tile/0/001.p/44", "tile/entries/001.p/44"]
    assert r["unchanged"] == 2  # tile/0/000 and tile/entries/000

    code, stdout, err = run(capsys, "audit", "--tiles", str(out), "--key", vkey, "-q")
    assert code == 0 and "OK: log medledger.example/log, 530 entries" in stdout, err


def test_sync_refuses_another_logs_directory(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "tiles"
    _grow(tmp_path / "a", 3)
    _grow(tmp_path / "b", 5)
    assert run(capsys, "tiles", "sync", "--data", str(tmp_path / "a"), "--out", str(out))[0] == 0
    code, _, err = run(capsys, "tiles", "sync", "--data", str(tmp_path / "b"), "--out", str(out))
    assert code == 3 and "does not extend" in err
    code, _, err = run(capsys, "tiles", "sync", "--data", str(tmp_path / "c"), "--out", str(out))
    assert code == 3 and "no log in" in err
    assert not (tmp_path / "c").exists()  # nothing made for a log that is not there


def test_audit_tiles_from_the_service(tmp_path: Path, capsys: Any) -> None:
    vkey = _grow(tmp_path / "data", 520)
    app = create_app(Settings(data_dir=tmp_path / "data"), public_url="http://testserver")
    with served(app) as base:
        code, out, err = run(capsys, "audit", "--tiles", f"{base}/tlog", "--key", vkey, "--json")
    answer = json.loads(out)
    assert code == 0, err
    assert (answer["result"], answer["size"], answer["entries_checked"]) == ("ok", 520, 520)
    code, _, err = run(capsys, "audit", "--tiles", f"{base}/tlog", "--key", vkey)
    assert code == 2 and "cannot reach" in err  # the service has stopped
