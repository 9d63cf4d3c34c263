"""`medledger keys add|retire|list`: key entries, key files, refusals and exit codes."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from exchange.bootstrap import open_engine, open_log
from exchange.cli.main import main
from exchange.config import DEFAULT_ORIGIN, Settings
from exchange.keys.keyring import KeyringError, append_key_event
from exchange.store.tables import key_events_table
from ledger.keyset import sign_key_document
from ledger.note import Verifier
from tests.ledger_helpers import new_signer


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def state(data: Path, db_url: str) -> list[str]:
    return ["--data", str(data), "--db", db_url]


def listed(capsys: Any, data: Path, db_url: str) -> list[dict[str, Any]]:
    code, out, _ = run(capsys, "keys", "list", "--json", *state(data, db_url))
    assert code == 0
    return json.loads(out)


def log_size(data: Path, db_url: str) -> int:
    settings = Settings(data_dir=data, db_url=db_url)
    log, _ = open_log(settings, open_engine(settings))
    try:
        return log.size()
    finally:
        log.close()
        log.engine.dispose()


def test_add_list_retire(tmp_path: Path, db_url: str, capsys) -> None:
    data = tmp_path / "data"
    [first] = listed(capsys, data, db_url)
    assert (first["added_at"], first["retired_at"], first["status"]) == (None, None, "active")
    code, out, _ = run(capsys, "keys", "add", "--json", *state(data, db_url))
    assert code == 0
    added = json.loads(out)
    assert added["action"] == "add" and added["index"] == 0
    key_file = data / "keys" / f"{added['key_id']}.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # The add entry's own checkpoint is signed by both keys: the overlap has begun.
    assert added["checkpoint"].count("\n\u2014 ") == 2
    keys = listed(capsys, data, db_url)
    assert [(k["key_id"], k["added_at"], k["status"]) for k in keys] == [
        (first["key_id"], None, "active"),
        (added["key_id"], 0, "active"),
    ]
    code, out, _ = run(capsys, "keys", "retire", first["key_id"], "--json", *state(data, db_url))
    assert code == 0
    retired = json.loads(out)
    assert retired["index"] == 1 and retired["checkpoint"].count("\n\u2014 ") == 1
    assert Verifier.from_vkey(added["vkey"]).key_id.hex() == added["key_id"]
    keys = listed(capsys, data, db_url)
    assert [(k["retired_at"], k["status"]) for k in keys] == [(1, "retired"), (None, "active")]
    code, out, _ = run(capsys, "keys", "list", *state(data, db_url))
    assert code == 0 and "retired by entry 1" in out


def test_refusals_append_nothing(tmp_path: Path, db_url: str, capsys) -> None:
    data = tmp_path / "data"
    [first] = listed(capsys, data, db_url)
    code, _, err = run(capsys, "keys", "retire", first["key_id"], *state(data, db_url))
    assert code == 1 and "last active key" in err
    code, _, err = run(capsys, "keys", "retire", "0badc0de", *state(data, db_url))
    assert code == 1 and "no key 0badc0de" in err
    assert log_size(data, db_url) == 0
    assert run(capsys, "keys", "add", *state(data, db_url))[0] == 0
    assert run(capsys, "keys", "retire", first["key_id"], *state(data, db_url))[0] == 0
    code, _, err = run(capsys, "keys", "retire", first["key_id"], *state(data, db_url))
    assert code == 1 and "already retired" in err
    assert log_size(data, db_url) == 2


def test_an_unauthorised_key_document_is_refused_whole(tmp_path: Path, db_url: str) -> None:
    settings = Settings(data_dir=tmp_path / "data", db_url=db_url)
    log, ring = open_log(settings, open_engine(settings))
    try:
        outsider, newcomer = new_signer(DEFAULT_ORIGIN), new_signer(DEFAULT_ORIGIN)
        note = sign_key_document(DEFAULT_ORIGIN, "add", newcomer.verifier, [outsider], newcomer)
        with pytest.raises(KeyringError, match="not an active key"):
            append_key_event(log, ring, note)
        assert log.size() == 0
        with log.engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(key_events_table)).scalar()
        assert rows == 0
    finally:
        log.close()
        log.engine.dispose()


def test_an_active_key_without_its_private_key_stops_appends(
    tmp_path: Path, db_url: str, capsys
) -> None:
    data = tmp_path / "data"
    [first] = listed(capsys, data, db_url)
    code, out, _ = run(capsys, "keys", "add", "--json", *state(data, db_url))
    assert code == 0
    missing = data / "keys" / f"{json.loads(out)['key_id']}.key"
    missing.unlink()
    code, _, err = run(capsys, "keys", "retire", first["key_id"], *state(data, db_url))
    assert code == 3 and str(missing) in err
    assert log_size(data, db_url) == 1


def test_bad_key_files_and_unreachable_database(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    assert run(capsys, "keys", "add", "--data", str(data))[0] == 0
    [key_file] = (data / "keys").glob("*.key")
    key_file.chmod(0o644)
    code, _, err = run(capsys, "keys", "list", "--data", str(data))
    assert code == 3 and "chmod 600" in err
    code, _, err = run(
        capsys, "keys", "list", "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none"
    )
    assert code == 2 and "cannot be read" in err
