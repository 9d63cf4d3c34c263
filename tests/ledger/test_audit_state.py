"""The audit state file: atomic, checksummed, self-checking, and resumed in O(new entries)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from exchange.cli.main import main
from ledger.audit import audit
from ledger.audit import state as audit_state
from ledger.audit.state import AuditState, StateError, load_state, save_state
from ledger.jcs import canonicalize

from ..audit_helpers import MemorySource, append, build_log, entries_only, signer


@pytest.fixture
def grown(tmp_path: Path):
    """A log of 700 entries, the state of an audit of it, then 300 more entries."""
    s = signer()
    log = build_log(f"sqlite:///{tmp_path / 'l.db'}", 700, s)
    first = MemorySource.from_log(log)
    r = audit(first, [s.verifier])
    assert r.ok and r.state is not None
    append(log, 300)
    later = MemorySource.from_log(log)
    log.close()
    yield s, r.state, later, tmp_path / "l.db"
    log.engine.dispose()


def test_round_trip_and_checksum(grown, tmp_path: Path) -> None:
    s, state, _, _ = grown
    path = tmp_path / "state.json"
    save_state(path, state)
    assert load_state(path, [s.verifier]) == state
    obj = json.loads(path.read_text())
    want = obj.pop("sha256")
    import hashlib

    assert hashlib.sha256(canonicalize(obj)).hexdigest() == want
    assert obj["size"] == 700 and len(obj["frontier"]) == bin(700).count("1")
    assert load_state(tmp_path / "missing.json", [s.verifier]) is None


def test_atomic_write_leaves_old_file_on_failure(grown, tmp_path: Path, monkeypatch) -> None:
    s, state, _, _ = grown
    path = tmp_path / "state.json"
    save_state(path, state)
    before = path.read_bytes()
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(audit_state.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    newer = AuditState(**{**state.__dict__, "saved": "2026-11-29T00:00:00.000Z"})
    save_state(path, newer)
    assert len(synced) == 2  # the file, then its directory
    assert load_state(path, [s.verifier]) == newer

    def crash(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(audit_state.os, "replace", crash)
    with pytest.raises(StateError, match="No space left"):
        save_state(path, state)
    assert load_state(path, [s.verifier]) == newer  # old content intact
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".state")) == []
    del before


@pytest.mark.parametrize(
    "damage",
    ["truncate", "flip", "frontier", "note", "not-json", "wrong-format"],
)
def test_corrupted_state_is_exit_3_never_5(
    damage: str, grown, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s, state, later, db = grown
    path = tmp_path / "state.json"
    save_state(path, state)
    data = path.read_bytes()
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data = data.replace(b'"size": 700', b'"size": 701')
    elif damage in ("frontier", "note"):
        obj = json.loads(data)
        obj.pop("sha256")
        if damage == "frontier":
            obj["frontier"][0] = obj["frontier"][-1]
        else:
            obj["checkpoint"] = obj["checkpoint"].replace("audit.example", "audit.exbmple")
        obj["sha256"] = __import__("hashlib").sha256(canonicalize(obj)).hexdigest()
        data = json.dumps(obj).encode()  # a valid checksum over contradictory content
    elif damage == "not-json":
        data = b"\x00\x01garbage"
    else:
        data = json.dumps({"format": "something-else"}).encode()
    path.write_bytes(data)
    with pytest.raises(StateError):
        load_state(path, [s.verifier])
    code = main(["audit", "--db", str(db), "--key", s.verifier.vkey(), "--state", str(path)])
    err = capsys.readouterr().err
    assert code == 3
    assert "next:" in err and "MISBEHAVIOUR" not in err
    assert path.read_bytes() == data  # left alone for the operator to look at


def test_state_of_another_key_is_exit_3(grown, tmp_path: Path, capsys) -> None:
    s, state, _, db = grown
    path = tmp_path / "state.json"
    save_state(path, state)
    other = signer()
    with pytest.raises(StateError, match="do not verify"):
        load_state(path, [other.verifier])
    assert (
        main(["audit", "--db", str(db), "--key", other.verifier.vkey(), "--state", str(path)]) == 3
    )
    assert "--key" in capsys.readouterr().err


def test_incremental_audit_reads_only_new_entries(grown) -> None:
    s, state, later, _ = grown
    src = entries_only(later)
    r = audit(src, [s.verifier], state=state)
    assert r.ok and r.start == 700 and r.entries_checked == 300
    assert min(a for a, _ in src.reads) == 700  # nothing before the state was read
    assert r.consistency is not None and r.consistency[:2] == (700, 1000)
    assert r.state is not None and r.state.size == 1000
    again = audit(entries_only(later), [s.verifier], state=r.state)
    assert again.ok and again.entries_checked == 0


def test_incremental_equals_full(grown) -> None:
    s, state, later, _ = grown
    full = audit(later, [s.verifier])
    inc = audit(later, [s.verifier], state=state)
    assert full.state is not None and inc.state is not None
    assert (full.state.frontier, full.state.last_leaf, full.state.root) == (
        inc.state.frontier,
        inc.state.last_leaf,
        inc.state.root,
    )


def test_from_index_starts_there_with_a_proven_prefix(grown, capsys) -> None:
    s, _, later, db = grown
    src = entries_only(later)
    r = audit(src, [s.verifier], from_index=900)
    assert r.ok and r.start == 900 and r.entries_checked == 100
    assert min(a for a, _ in src.reads) == 899
    # a lying inclusion proof cannot smuggle a wrong prefix in
    bad = later.copy()
    bad.hashes = {i: bytes(32) for i in bad.hashes}
    r = audit(entries_only(bad), [s.verifier], from_index=900)
    assert r.status == "failed" and r.error is not None and r.error.index == 899
    assert main(["audit", "--db", str(db), "--key", s.verifier.vkey(), "--from", "5000"]) == 1
    assert main(["audit", "--db", str(db), "--key", s.verifier.vkey(), "--from", "990"]) == 0
    capsys.readouterr()


def test_cli_saves_state_only_after_success(grown, tmp_path: Path, capsys) -> None:
    s, _, _, db = grown
    path = tmp_path / "state.json"
    vkey = s.verifier.vkey()
    assert main(["audit", "--db", str(db), "--key", vkey, "--state", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["state_file"] == str(path) and load_state(path, [s.verifier]).size == 1000
    assert main(["audit", "--db", str(db), "--key", vkey, "--state", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["entries_checked"] == 0 and out["consistent_with"]["size"] == 1000


def test_state_of_another_log_is_exit_3(grown, tmp_path: Path, capsys) -> None:
    s, state, _, _ = grown
    path = tmp_path / "state.json"
    save_state(path, state)
    t = signer("other.example/log")
    log = build_log(f"sqlite:///{tmp_path / 'o.db'}", 20, t)
    log.close()
    code = main(
        [
            "audit",
            "--db",
            str(tmp_path / "o.db"),
            "--key",
            s.verifier.vkey(),
            "--key",
            t.verifier.vkey(),
            "--state",
            str(path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 3 and "separate --state" in err


def test_explain_shows_the_consistency_steps(grown, tmp_path: Path, capsys) -> None:
    s, state, _, db = grown
    path = tmp_path / "state.json"
    save_state(path, state)
    code = main(
        ["audit", "--db", str(db), "--key", s.verifier.vkey(), "--state", str(path), "--explain"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "extends the last verified checkpoint (size 700)" in out
    assert "consistency 700 → 1000" in out and "old root" in out and "new root" in out
