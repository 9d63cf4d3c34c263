"""Every exit code of verify, audit and verify-evidence, and a next step in every failure.

0 ok; 1 usage; 2 network or database unavailable; 3 malformed input or local state;
4 verification failed (naming the first bad index); 5 proven log misbehaviour.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from exchange.cli.exits import (
    EXIT_MALFORMED,
    EXIT_MISBEHAVIOUR,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    EXIT_VERIFY_FAILED,
)
from exchange.cli.main import main
from ledger.note import Signer
from tests.audit_helpers import (
    MemorySource,
    append,
    build_log,
    closed_port,
    copy_db,
    drop_sqlite_triggers,
    serve_http,
    signer,
)
from tests.paths import ROOT


@dataclass
class Setup:
    signer: Signer
    db: Path
    mem: MemorySource
    receipt: Path
    dir: Path

    @property
    def vkey(self) -> str:
        return self.signer.verifier.vkey()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    d = tmp_path_factory.mktemp("codes")
    s = signer()
    log = build_log(f"sqlite:///{d / 'l.db'}", 300, s)
    (d / "r.tlog-proof").write_text(log.receipt(123))
    mem = MemorySource.from_log(log)
    log.close()
    log.engine.dispose()
    return Setup(s, d / "l.db", mem, d / "r.tlog-proof", d)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(args)
    except SystemExit as e:  # argparse usage errors
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


def assert_next(code: int, text: str) -> None:
    """Every failure names what to do next (argparse's own usage errors aside)."""
    if code not in (EXIT_OK, EXIT_MISBEHAVIOUR) and "usage:" not in text:
        assert "next:" in text or '"next"' in text, text


# --- 0 ---------------------------------------------------------------------------------------


def test_ok(setup: Setup, capsys) -> None:
    assert run(["verify", str(setup.receipt), "--key", setup.vkey], capsys)[0] == EXIT_OK
    assert run(["audit", "--db", str(setup.db), "--key", setup.vkey], capsys)[0] == EXIT_OK
    with serve_http(setup.mem) as url:
        code, text = run(["audit", "--url", url, "--key", setup.vkey, "--explain"], capsys)
    assert code == EXIT_OK and "how:" in text


# --- 1 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["verify"],
        ["audit", "--db", "x.db"],  # no --key
        ["audit", "--key", "k"],  # neither --url nor --db
        ["audit", "--url", "http://x", "--db", "x.db", "--key", "k"],
        ["audit", "--db", "x.db", "--key", "k", "--from", "-3"],
        ["verify-evidence", "--key", "k"],
        ["no-such-command"],
    ],
)
def test_usage(args: list[str], capsys) -> None:
    assert run(args, capsys)[0] == EXIT_USAGE


def test_usage_found_late(setup: Setup, capsys) -> None:
    code, text = run(["audit", "--db", str(setup.db), "--key", setup.vkey, "--from", "301"], capsys)
    assert code == EXIT_USAGE and "beyond" in text
    assert_next(code, text)
    code, text = run(["verify", str(setup.receipt), "--key", setup.vkey, "--salt", "AAAA"], capsys)
    assert code == EXIT_USAGE
    assert_next(code, text)


# --- 2 ---------------------------------------------------------------------------------------


def test_unavailable(setup: Setup, capsys) -> None:
    port = closed_port()
    code, text = run(["audit", "--url", f"http://127.0.0.1:{port}", "--key", setup.vkey], capsys)
    assert code == EXIT_UNAVAILABLE
    assert_next(code, text)
    for status in (500, 503, 429, 401):
        with serve_http(setup.mem, status=status) as url:
            code, text = run(["audit", "--url", url, "--key", setup.vkey, "--json"], capsys)
        assert code == EXIT_UNAVAILABLE, status
        assert json.loads(text)["result"] == "unavailable"
        assert_next(code, text)
    code, text = run(
        [
            "audit",
            "--db",
            f"postgresql+psycopg://nobody:x@127.0.0.1:{port}/none",
            "--key",
            setup.vkey,
        ],
        capsys,
    )
    assert code == EXIT_UNAVAILABLE
    assert_next(code, text)


def test_not_a_log_api_is_unavailable(setup: Setup, capsys) -> None:
    with serve_http(setup.mem) as url:
        code, text = run(["audit", "--url", url + "/nothing-here", "--key", setup.vkey], capsys)
    assert code == EXIT_UNAVAILABLE and "--url" in text
    assert_next(code, text)


# --- 3 ---------------------------------------------------------------------------------------


def test_malformed(setup: Setup, capsys, tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_text("not a receipt\n")
    empty_db = tmp_path / "empty.db"
    sqlite3.connect(empty_db).execute("CREATE TABLE t (x)").connection.close()
    state = tmp_path / "state.json"
    state.write_text('{"format": "medledger-audit-state/v1", "sha256": "0"}')
    cases = [
        ["verify", str(junk), "--key", setup.vkey],
        ["verify", str(tmp_path / "missing"), "--key", setup.vkey],
        ["verify", str(setup.receipt), "--key", "bad+key+text"],
        ["verify", str(setup.receipt), "--key", str(tmp_path / "no-such-key-file")],
        ["audit", "--db", str(setup.db), "--key", "x"],
        ["audit", "--db", str(empty_db), "--key", setup.vkey],
        ["audit", "--db", str(tmp_path / "absent.db"), "--key", setup.vkey],
        ["audit", "--db", str(setup.db), "--key", setup.vkey, "--state", str(state)],
        ["verify-evidence", str(junk), "--key", setup.vkey],
        ["verify-evidence", str(tmp_path / "missing"), "--key", setup.vkey],
    ]
    for args in cases:
        code, text = run(args, capsys)
        assert code == EXIT_MALFORMED, (args, text)
        assert_next(code, text)


# --- 4 ---------------------------------------------------------------------------------------


def test_verification_failed(setup: Setup, capsys, tmp_path: Path) -> None:
    text = setup.receipt.read_text()
    bad = tmp_path / "r.tlog-proof"
    bad.write_text(text.replace("index 123", "index 124"))
    code, out = run(["verify", str(bad), "--key", setup.vkey], capsys)
    assert code == EXIT_VERIFY_FAILED
    assert_next(code, out)
    db = tmp_path / "t.db"
    copy_db(setup.db, db)
    drop_sqlite_triggers(db)
    con = sqlite3.connect(db)
    data = con.execute("SELECT data FROM ledger_entries WHERE idx=200").fetchone()[0]
    con.execute(
        "UPDATE ledger_entries SET data=? WHERE idx=200", (data.replace(b'"v":1', b'"v":2'),)
    )
    con.commit()
    con.close()
    code, out = run(["audit", "--db", str(db), "--key", setup.vkey, "--json"], capsys)
    obj = json.loads(out)
    assert code == EXIT_VERIFY_FAILED and obj["error"]["index"] == 200
    assert obj["error"]["next"]
    code, out = run(["audit", "--db", str(db), "--key", setup.vkey], capsys)
    assert code == EXIT_VERIFY_FAILED and "FAILED at entry 200" in out
    assert_next(code, out)
    wrong = signer().verifier.vkey()
    code, out = run(["audit", "--db", str(setup.db), "--key", wrong], capsys)
    assert code == EXIT_VERIFY_FAILED and "--key" in out
    assert_next(code, out)


# --- 5 ---------------------------------------------------------------------------------------


def test_misbehaviour_and_its_evidence(setup: Setup, capsys, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    assert (
        run(["audit", "--db", str(setup.db), "--key", setup.vkey, "--state", str(state)], capsys)[0]
        == EXIT_OK
    )
    # The same key signs a different history of a larger size.
    fresh = tmp_path / "fresh.db"
    forked = build_log(f"sqlite:///{fresh}", 250, setup.signer, seed=99)
    append(forked, 100)
    forked.close()
    forked.engine.dispose()
    code, out = run(
        ["audit", "--db", str(fresh), "--key", setup.vkey, "--state", str(state)], capsys
    )
    assert code == EXIT_MISBEHAVIOUR and "evidence written to" in out and "next:" in out
    evidence = next(tmp_path.glob("state.json.evidence-*.json"))
    code, out = run(["verify-evidence", str(evidence), "--key", setup.vkey], capsys)
    assert code == EXIT_MISBEHAVIOUR and "CONFIRMED" in out and "next:" in out


def test_exit_codes_through_a_subprocess(setup: Setup, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def code(*args: str) -> int:
        return subprocess.run(
            [sys.executable, "-m", "exchange.cli", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            check=False,
        ).returncode

    assert code("audit", "--db", str(setup.db), "--key", setup.vkey, "-q") == EXIT_OK
    assert code("audit", "--db", str(setup.db)) == EXIT_USAGE
    assert (
        code("audit", "--url", f"http://127.0.0.1:{closed_port()}", "--key", setup.vkey)
        == EXIT_UNAVAILABLE
    )
    assert code("audit", "--db", str(tmp_path / "none.db"), "--key", setup.vkey) == EXIT_MALFORMED


def test_http_audit_reads_only_public_log_endpoints(setup: Setup) -> None:
    """No personal data and no credential: only /v1/log/* reads, no token unless given."""
    from exchange.audit.sources import HttpSource
    from ledger.audit import audit
    from tests.audit_helpers import mock_http

    seen: list[str] = []
    src = HttpSource("http://ledger.test", client=mock_http(setup.mem, seen=seen))
    assert audit(src, [setup.signer.verifier], from_index=10).ok
    assert seen and all(s.startswith("/v1/log/") and s.endswith(" -") for s in seen)
    seen.clear()
    src = HttpSource("http://ledger.test", token="aud-123", client=mock_http(setup.mem, seen=seen))
    assert audit(src, [setup.signer.verifier]).ok
    assert all(s.endswith(" Bearer aud-123") for s in seen)


def test_progress_bar_on_a_terminal(setup: Setup, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert run(["audit", "--db", str(setup.db), "--key", setup.vkey], capsys)[0] == EXIT_OK


def test_against_the_service_app(tmp_path: Path) -> None:
    """The real FastAPI app's log reads, audited with no credential (skipped until it exists)."""
    app_mod = pytest.importorskip("exchange.app")
    from fastapi.testclient import TestClient

    from exchange.audit.sources import HttpSource
    from exchange.bootstrap import open_engine, open_log
    from exchange.config import Settings
    from ledger.audit import audit
    from ledger.keys import load_signer

    settings = Settings(data_dir=tmp_path / "data", origin="app.example/log")
    log, _ = open_log(settings, open_engine(settings))
    append(log, 240)
    log.close()
    log.engine.dispose()
    key = load_signer(settings.signing_key_path, settings.origin).verifier
    with TestClient(app_mod.create_app(settings)) as client:
        assert client.get("/v1/log/key").text.strip() == key.vkey()
        src = HttpSource("http://testserver", client=client)
        r = audit(src, [key])
        assert r.ok and r.size == 240, r.error
        receipt = client.get("/v1/log/entries/17/receipt").text
    path = tmp_path / "r.tlog-proof"
    path.write_text(receipt)
    assert main(["verify", str(path), "--key", key.vkey()]) == EXIT_OK
