"""Forks and rollbacks: two signed checkpoints that cannot both be true give exit 5 and
evidence that `medledger verify-evidence` confirms with only the log's key.

Two logs share one key and diverge after entry K: log A grows to A_SIZE; copies of the log
at K+1 entries grow differently (log B). A server restored from an older copy is log A's own
earlier state, served as is or grown again.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from exchange.audit.sources import DbSource, HttpSource
from exchange.cli.main import main
from ledger import merkle
from ledger.audit import Evidence, audit, verify_evidence
from ledger.checkpoint import format_checkpoint
from ledger.log import Log
from ledger.note import Signer, sign
from ledger.store import make_engine

from ..audit_helpers import (
    MemorySource,
    append,
    build_log,
    copy_db,
    drop_sqlite_triggers,
    mock_http,
    serve_http,
    signer,
)

K = 600  # entries 0..K are shared
A_SIZE = 1500


@dataclass
class Logs:
    signer: Signer
    dir: Path
    base: Path  # the shared history, K+1 entries
    a: Path  # log A, A_SIZE entries
    a_1100: Path  # log A when it had 1,100 entries

    @property
    def vkey(self) -> str:
        return self.signer.verifier.vkey()

    def open(self, path: Path) -> Log:
        return Log(make_engine(f"sqlite:///{path}"), self.signer, origin=self.signer.name)

    def grow_b(self, size: int, name: str) -> Path:
        """Log B: the shared history grown differently to `size` entries."""
        path = self.dir / name
        copy_db(self.base, path)
        log = self.open(path)
        if size > log.size():
            append(log, size - log.size(), seed=size)
        log.close()
        log.engine.dispose()
        return path

    def memory(self, path: Path) -> MemorySource:
        log = self.open(path)
        try:
            return MemorySource.from_log(log)
        finally:
            log.engine.dispose()


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Logs:
    d = tmp_path_factory.mktemp("fork")
    s = signer()
    log = build_log(f"sqlite:///{d / 'base.db'}", K + 1, s, seed=1)
    log.close()
    log.engine.dispose()
    copy_db(d / "base.db", d / "a.db")
    a = Log(make_engine(f"sqlite:///{d / 'a.db'}"), s, origin=s.name)
    append(a, 1100 - a.size(), seed=2)
    a.close()
    copy_db(d / "a.db", d / "a_1100.db")
    append(a, A_SIZE - a.size(), seed=3)
    a.close()
    a.engine.dispose()
    return Logs(s, d, d / "base.db", d / "a.db", d / "a_1100.db")


@pytest.fixture
def state_after_a(logs: Logs, tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "audit.json"
    assert (
        main(["audit", "--db", str(logs.a), "--key", logs.vkey, "--state", str(state), "-q"]) == 0
    )
    yield state


def _audit_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main([*args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def _confirm(logs: Logs, evidence: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    code = main(["verify-evidence", str(evidence), "--key", logs.vkey, "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 5 and out["result"] == "misbehaviour", out
    return out


@pytest.mark.parametrize("b_size", [A_SIZE + 400, A_SIZE, 1200])
def test_fork_gives_exit_5_and_evidence(
    b_size: int,
    logs: Logs,
    state_after_a: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    b = logs.grow_b(b_size, f"b{b_size}.db")
    before = state_after_a.read_bytes()
    evidence = tmp_path / "evidence.json"
    code, out = _audit_json(
        [
            "audit",
            "--db",
            str(b),
            "--key",
            logs.vkey,
            "--state",
            str(state_after_a),
            "--evidence",
            str(evidence),
        ],
        capsys,
    )
    assert code == 5 and out["result"] == "misbehaviour", out
    assert out["evidence_file"] == str(evidence)
    assert state_after_a.read_bytes() == before  # the state keeps the last good checkpoint
    ev = Evidence.from_json(evidence.read_bytes())
    assert ev.kind == "fork"
    assert {merkle_size(n) for n in ev.checkpoints} == {A_SIZE, b_size}
    confirmed = _confirm(logs, evidence, capsys)
    assert confirmed["kind"] == "fork" and any("PROVEN" in x for x in confirmed["findings"])
    if b_size > A_SIZE:
        assert ev.entries is not None and len(ev.entries) == b_size
        assert ev.divergence is not None and ev.divergence[0] <= K + 1 < ev.divergence[1]
        assert ev.server_proof is not None  # what the server answered, which fails


def merkle_size(note: str) -> int:
    return int(note.split("\n")[1])


def test_fork_over_http(logs: Logs, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "s.json"
    with serve_http(logs.memory(logs.a)) as url:
        assert main(["audit", "--url", url, "--key", logs.vkey, "--state", str(state)]) == 0
    capsys.readouterr()
    b = logs.grow_b(A_SIZE + 100, "b_http.db")
    with serve_http(logs.memory(b)) as url:
        code, out = _audit_json(
            [
                "audit",
                "--url",
                url,
                "--key",
                logs.vkey,
                "--state",
                str(state),
                "--evidence",
                str(tmp_path / "ev.json"),
            ],
            capsys,
        )
    assert code == 5, out
    _confirm(logs, tmp_path / "ev.json", capsys)


def test_same_key_second_audit_of_the_same_log_is_fine(
    logs: Logs, state_after_a: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _audit_json(
        ["audit", "--db", str(logs.a), "--key", logs.vkey, "--state", str(state_after_a)], capsys
    )
    assert code == 0 and out["entries_checked"] == 0 and out["consistent_with"]["size"] == A_SIZE


# --- rollback: a server restored from an older copy ---------------------------------------


def test_restored_older_copy_smaller_tree(
    logs: Logs, state_after_a: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for copy in (logs.base, logs.a_1100):  # K+1 entries; 1,100 entries (a true prefix)
        restored = tmp_path / f"restored-{copy.name}"
        copy_db(copy, restored)
        evidence = tmp_path / f"ev-{copy.name}.json"
        code, out = _audit_json(
            [
                "audit",
                "--db",
                str(restored),
                "--key",
                logs.vkey,
                "--state",
                str(state_after_a),
                "--evidence",
                str(evidence),
            ],
            capsys,
        )
        assert code == 5 and out["evidence"]["kind"] == "rollback", out
        confirmed = _confirm(logs, evidence, capsys)
        assert confirmed["kind"] == "rollback" and confirmed["sizes"][0] == A_SIZE


@pytest.mark.parametrize("grown", [1200, A_SIZE, A_SIZE + 300])
def test_restored_older_copy_grown_again(
    grown: int,
    logs: Logs,
    state_after_a: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Restored to K+1 entries, then new submissions: a different tree, smaller or larger."""
    restored = logs.grow_b(grown, f"restored-{grown}.db")
    code, out = _audit_json(
        [
            "audit",
            "--db",
            str(restored),
            "--key",
            logs.vkey,
            "--state",
            str(state_after_a),
            "--evidence",
            str(tmp_path / "ev.json"),
        ],
        capsys,
    )
    assert code == 5, out
    assert _confirm(logs, tmp_path / "ev.json", capsys)["kind"] == "fork"


# --- one audit, no state: a stored checkpoint the log signed against its own entries ------


def test_signed_checkpoint_contradicting_its_entries(
    logs: Logs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "lie.db"
    copy_db(logs.a, db)
    mem = logs.memory(db)
    size = sorted(s for s in mem.checkpoints_ if 300 < s < 1000)[0]
    lie = sign(format_checkpoint(logs.signer.name, size, random.randbytes(32)), [logs.signer])
    drop_sqlite_triggers(db)
    import sqlite3

    con = sqlite3.connect(db)
    con.execute("UPDATE ledger_checkpoints SET note=? WHERE size=?", (lie, size))
    con.commit()
    con.close()
    evidence = tmp_path / "ev.json"
    code, out = _audit_json(
        ["audit", "--db", str(db), "--key", logs.vkey, "--evidence", str(evidence)], capsys
    )
    assert code == 5, out
    ev = Evidence.from_json(evidence.read_bytes())
    assert ev.checkpoints[0] == lie
    _confirm(logs, evidence, capsys)


def test_bad_proof_alone_is_not_misbehaviour(logs: Logs, tmp_path: Path) -> None:
    """A server whose entries verify but whose consistency proof is wrong: exit 4, not 5."""
    first = logs.memory(logs.a_1100)
    mem = logs.memory(logs.a)
    st = audit(first, [logs.signer.verifier])
    assert st.ok and st.state is not None
    bad = mem.copy()
    idx = merkle.consistency_proof_indexes(1100, A_SIZE)[0]
    bad.hashes[idx] = bytes(32)
    src = HttpSource("http://ledger.test", client=mock_http(bad))
    r = audit(src, [logs.signer.verifier], state=st.state)
    assert r.status == "failed" and r.error is not None and r.error.code == "proof"
    assert r.evidence is None


# --- evidence that does not hold ----------------------------------------------------------


@pytest.fixture
def evidence_file(logs: Logs, state_after_a: Path, tmp_path: Path) -> Path:
    b = logs.grow_b(A_SIZE + 50, "b_ev.db")
    path = tmp_path / "ev.json"
    assert (
        main(
            [
                "audit",
                "--db",
                str(b),
                "--key",
                logs.vkey,
                "--state",
                str(state_after_a),
                "--evidence",
                str(path),
                "-q",
            ]
        )
        == 5
    )
    return path


def test_altered_evidence_proves_nothing(
    logs: Logs, evidence_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = json.loads(evidence_file.read_text())
    variants = {}
    same = json.loads(json.dumps(obj))
    same["claims"][1]["root"] = same["claims"][0]["root"]
    variants["equal roots"] = same
    forged = json.loads(json.dumps(obj))
    forged["checkpoints"][1] = forged["checkpoints"][1].replace("\n1550\n", "\n1551\n")
    variants["altered checkpoint"] = forged
    proof = json.loads(json.dumps(obj))
    proof["claims"][1]["hashes"][0] = base64.b64encode(bytes(32)).decode()
    variants["altered proof"] = proof
    for name, v in variants.items():
        p = tmp_path / "bad.json"
        p.write_text(json.dumps(v))
        code = main(["verify-evidence", str(p), "--key", logs.vkey])
        err = capsys.readouterr().err
        assert code == 4, name
        assert "next:" in err
    other = signer()
    assert main(["verify-evidence", str(evidence_file), "--key", other.verifier.vkey()]) == 4
    (tmp_path / "junk.json").write_text("{not json")
    assert main(["verify-evidence", str(tmp_path / "junk.json"), "--key", logs.vkey]) == 3
    capsys.readouterr()


def test_evidence_round_trip_and_explain(
    logs: Logs, evidence_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ev = Evidence.from_json(evidence_file.read_bytes())
    assert Evidence.from_json(ev.to_json()) == ev
    report = verify_evidence(ev, [logs.signer.verifier])
    assert report.explain and "consistency" in report.explain[0]
    assert main(["verify-evidence", str(evidence_file), "--key", logs.vkey, "--explain"]) == 5
    out = capsys.readouterr().out
    assert "CONFIRMED" in out and "step 1" in out


def test_library_fork_detection_from_db_source(logs: Logs) -> None:
    keys = [logs.signer.verifier]
    st = audit(DbSource.from_url(str(logs.a)), keys)
    assert st.ok and st.state is not None
    b = logs.grow_b(A_SIZE + 10, "b_lib.db")
    r = audit(DbSource.from_url(str(b)), keys, state=st.state)
    assert r.status == "misbehaviour" and r.evidence is not None
    verify_evidence(Evidence.from_json(r.evidence.to_json()), keys)
