"""A log whose store went backwards, or was altered, refuses to append and says why."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ledger.errors import LogStateError
from ledger.store import durability_problems

from ..ledger_helpers import new_signer, open_log, submission


def _copy_db(src: Path, dst: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        if Path(str(src) + suffix).exists():
            shutil.copy(str(src) + suffix, str(dst) + suffix)


def test_restored_older_copy_opens_read_only(tmp_path: Path) -> None:
    signer = new_signer()
    db = tmp_path / "l.db"
    cp_file = tmp_path / "checkpoint"
    log = open_log(f"sqlite:///{db}", signer, checkpoint_file=cp_file)
    for i in range(5):
        log.append(submission(b"%d" % i))
    log.close()
    log.engine.dispose()
    _copy_db(db, tmp_path / "backup.db")
    log = open_log(f"sqlite:///{db}", signer, checkpoint_file=cp_file)
    for i in range(5):
        log.append(submission(b"later %d" % i))
    log.close()
    log.engine.dispose()
    # The operator restores yesterday's backup over the live database.
    _copy_db(tmp_path / "backup.db", db)
    restored = open_log(f"sqlite:///{db}", signer, checkpoint_file=cp_file)
    assert restored.read_only_reason is not None
    assert "older copy" in restored.read_only_reason
    with pytest.raises(LogStateError, match="read-only"):
        restored.append(submission(b"would fork"))
    assert restored.size() == 5
    assert restored.checkpoint()  # reads still work


def test_replaced_store_opens_read_only(tmp_path: Path) -> None:
    signer = new_signer()
    cp_file = tmp_path / "checkpoint"
    log = open_log(f"sqlite:///{tmp_path / 'a.db'}", signer, checkpoint_file=cp_file)
    for i in range(3):
        log.append(submission(b"%d" % i))
    # Another database, same key, same size or larger, different entries.
    other = open_log(f"sqlite:///{tmp_path / 'b.db'}", signer)
    for i in range(4):
        other.append(submission(b"other %d" % i))
    reopened = open_log(f"sqlite:///{tmp_path / 'b.db'}", signer, checkpoint_file=cp_file)
    assert reopened.read_only_reason and "do not have the root" in reopened.read_only_reason


def test_healthy_log_stays_writable(tmp_path: Path) -> None:
    signer = new_signer()
    cp_file = tmp_path / "checkpoint"
    url = f"sqlite:///{tmp_path / 'l.db'}"
    log = open_log(url, signer, checkpoint_file=cp_file)
    log.append(submission(b"x"))
    assert cp_file.read_text() == log.checkpoint()
    again = open_log(url, signer, checkpoint_file=cp_file)
    assert again.read_only_reason is None
    again.append(submission(b"y"))
    assert again.size() == 2 and cp_file.read_text() == again.checkpoint()


def test_durability_settings_checked(db_url: str) -> None:
    log = open_log(db_url, new_signer())
    assert durability_problems(log.engine) == []
