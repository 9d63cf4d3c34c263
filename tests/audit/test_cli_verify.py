"""`medledger verify`: a receipt checked offline, with and without the submitted bytes."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from exchange.cli.main import main
from ledger.entry import commitment
from ledger.log import Submission
from ledger.note import Signer
from tests.audit_helpers import build_log, signer
from tests.paths import ROOT

BUNDLE = b'{"resourceType":"Bundle","type":"document","total":1200.00}'


@dataclass
class Receipted:
    signer: Signer
    receipt: Path
    bundle: Path
    salt: str
    index: int

    @property
    def vkey(self) -> str:
        return self.signer.verifier.vkey()


@pytest.fixture(scope="module")
def receipted(tmp_path_factory: pytest.TempPathFactory) -> Receipted:
    d = tmp_path_factory.mktemp("verify")
    s = signer()
    log = build_log(f"sqlite:///{d / 'l.db'}", 37, s)
    salt = os.urandom(32)
    appended = log.append(
        Submission(kind="record", sender="hosp-1", commit=commitment(salt, BUNDLE))
    )
    log.append_batch([Submission(kind="rwd", sender="hosp-2", commit=os.urandom(32))] * 3)
    log.close()
    (d / "r.tlog-proof").write_text(appended.receipt)
    (d / "bundle.json").write_bytes(BUNDLE)
    return Receipted(
        s,
        d / "r.tlog-proof",
        d / "bundle.json",
        base64.b64encode(salt).decode(),
        appended.entry.index,
    )


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_receipt_verifies(receipted: Receipted, capsys) -> None:
    code, out, _ = run(["verify", str(receipted.receipt), "--key", receipted.vkey], capsys)
    assert code == 0
    assert out.startswith(f"OK: entry {receipted.index} is in log audit.example/log")


def test_bundle_and_salt(receipted: Receipted, capsys, tmp_path: Path) -> None:
    args = ["verify", str(receipted.receipt), "--key", receipted.vkey]
    code, out, _ = run([*args, "--bundle", str(receipted.bundle), "--salt", receipted.salt], capsys)
    assert code == 0 and "commits to exactly the bytes" in out
    # The same Bundle re-serialised (1200.00 -> 1200.0) is other bytes.
    other = tmp_path / "b.json"
    other.write_bytes(BUNDLE.replace(b"1200.00", b"1200.0"))
    code, _, err = run([*args, "--bundle", str(other), "--salt", receipted.salt], capsys)
    assert code == 4 and "next:" in err
    code, _, err = run([*args, "--bundle", str(receipted.bundle), "--salt", "not base64!"], capsys)
    assert code == 3 and "next:" in err
    code, _, err = run([*args, "--bundle", str(receipted.bundle), "--salt", "AAAA"], capsys)
    assert code == 3  # base64, but not a 32-byte salt
    code, _, err = run(
        [*args, "--bundle", str(tmp_path / "nope"), "--salt", receipted.salt], capsys
    )
    assert code == 3
    code, _, err = run([*args, "--bundle", str(receipted.bundle)], capsys)
    assert code == 1 and "--salt" in err


def test_json_and_explain(receipted: Receipted, capsys) -> None:
    code, out, _ = run(
        ["verify", str(receipted.receipt), "--key", receipted.vkey, "--json", "--explain"], capsys
    )
    obj = json.loads(out)
    assert code == 0 and obj["result"] == "ok" and obj["index"] == receipted.index
    assert obj["size"] >= receipted.index + 1 and obj["entry"]["kind"] == "record"
    assert obj["steps"][0].startswith(f"leaf {receipted.index} of {obj['size']}")
    assert obj["steps"][-1] == f"root = {obj['root']}"
    code, out, _ = run(
        ["verify", str(receipted.receipt), "--key", receipted.vkey, "--explain"], capsys
    )
    assert "sibling on the" in out and "= the root signed in the checkpoint" in out


def test_keys_from_files_and_rotation(receipted: Receipted, capsys, tmp_path: Path) -> None:
    keyfile = tmp_path / "log.vkey"
    keyfile.write_text(f"# the log's key\n{receipted.vkey}\n")
    old = signer().verifier.vkey()
    assert run(["verify", str(receipted.receipt), "--key", str(keyfile)], capsys)[0] == 0
    assert (
        run(["verify", str(receipted.receipt), "--key", old, "--key", receipted.vkey], capsys)[0]
        == 0
    )
    code, _, err = run(["verify", str(receipted.receipt), "--key", old], capsys)
    assert code == 4 and "next:" in err  # a key of that name, but not the one that signed
    foreign = signer("other.example/log").verifier.vkey()
    code, _, err = run(["verify", str(receipted.receipt), "--key", foreign], capsys)
    assert code == 4 and "audit.example/log" in err
    code, _, err = run(["verify", str(receipted.receipt), "--key", "not-a-key"], capsys)
    assert code == 3 and "next:" in err


def test_tampered_receipts(receipted: Receipted, capsys, tmp_path: Path) -> None:
    text = receipted.receipt.read_text()
    lines = text.split("\n")
    cases = {}
    proof_line = next(i for i, ln in enumerate(lines) if i > 2 and len(ln) == 44)
    p = list(lines)
    p[proof_line] = base64.b64encode(bytes(32)).decode()
    cases["proof hash"] = ("\n".join(p), 4)
    e = list(lines)
    e[1] = (
        "extra "
        + base64.b64encode(base64.b64decode(lines[1][6:]).replace(b"hosp-1", b"hosp-9")).decode()
    )
    cases["entry"] = ("\n".join(e), 4)
    cases["index"] = (text.replace(f"index {receipted.index}\n", "index 0\n", 1), 4)
    cases["signature"] = (text[:-10] + ("A" if text[-10] != "A" else "B") + text[-9:], 4)
    cases["garbage"] = ("hello\n", 3)
    cases["no checkpoint"] = (text.split("\n\n")[0], 3)
    for name, (body, want) in cases.items():
        f = tmp_path / "r.tlog-proof"
        f.write_text(body)
        code, _, err = run(["verify", str(f), "--key", receipted.vkey], capsys)
        assert code == want, (name, err)
        assert "next:" in err, name


def test_stdin(receipted: Receipted, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(receipted.receipt.read_bytes())))
    assert run(["verify", "-", "--key", receipted.vkey], capsys)[0] == 0


def test_subprocess_and_help(receipted: Receipted) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "exchange.cli",
            "verify",
            str(receipted.receipt),
            "--key",
            receipted.vkey,
            "--bundle",
            str(receipted.bundle),
            "--salt",
            receipted.salt,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "exchange.cli", "verify", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert helped.returncode == 0 and "examples:" in helped.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "exchange.cli", "verify", str(receipted.receipt)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert missing.returncode == 1 and "--key" in missing.stderr


def test_verifier_path_needs_no_web_or_database_stack() -> None:
    code = (
        "import sys, ledger.audit, ledger.audit.state, ledger.verify; "
        "bad = {'httpx', 'fastapi', 'sqlalchemy', 'starlette'} & set(sys.modules); "
        "sys.exit(sorted(bad) and f'imported {sorted(bad)}' or 0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
