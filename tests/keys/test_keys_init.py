"""Setting up a log's key files before its first start: `medledger keys init`, `serve --db`
without --key-file refused, a missing key file or database driver named with the command
that fixes it, and `medledger --version`."""

from __future__ import annotations

import contextlib
import io
import json
import stat
from importlib import metadata
from pathlib import Path

import pytest

from exchange.bootstrap import open_engine, open_log
from exchange.cli.exits import EXIT_MALFORMED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from exchange.cli.main import main
from exchange.config import Settings


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse's --version and refusals
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_keys_init_makes_the_files_a_db_log_opens_with(tmp_path: Path) -> None:
    key = tmp_path / "etc" / "log.key"
    db = f"sqlite:///{tmp_path / 'store.db'}"
    code, out, err = _run("keys", "init", "--key-file", str(key), "--json")
    assert code == EXIT_OK, err
    made = json.loads(out)
    assert made["signing_key"] == str(key)
    assert made["vault_key"] == str(key.parent / "vault.key")
    assert made["checkpoint"] == str(key.parent / "checkpoint")
    for path in (key, key.parent / "vault.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    settings = Settings(db_url=db, key_file=key)
    log, _ = open_log(settings, open_engine(settings))
    try:
        assert log.signer.verifier.vkey() == made["vkey"]
    finally:
        log.close()

    before = key.read_bytes()
    code, _, err = _run("keys", "init", "--key-file", str(key))
    assert code == EXIT_USAGE and "never replaces" in err
    assert key.read_bytes() == before


def test_serve_db_needs_a_key_file_and_says_how_to_make_one(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    code, _, err = _run("serve", "--db", db)
    assert code == EXIT_USAGE and "medledger keys init --key-file" in err
    missing = tmp_path / "nowhere" / "log.key"
    code, _, err = _run("serve", "--db", db, "--key-file", str(missing))
    assert code == EXIT_MALFORMED
    assert f"medledger keys init --key-file {missing}" in err
    assert not missing.parent.exists()  # nothing made in its place


@pytest.mark.parametrize("command", [["clients", "list"], ["keys", "list"]])
def test_a_missing_database_driver_names_the_extra(tmp_path: Path, command: list[str]) -> None:
    url = "postgresql+pg8000://medledger@127.0.0.1/medledger"  # a driver never installed
    code, _, err = _run(*command, "--db", url, "--key-file", str(tmp_path / "log.key"))
    assert code == EXIT_UNAVAILABLE
    assert "'pg8000'" in err and "pip install 'medledger[postgres]'" in err
    assert "Traceback" not in err


def test_version() -> None:
    code, out, _ = _run("--version")
    assert code == EXIT_OK
    assert out.strip() == f"medledger {metadata.version('medledger')}"


def test_a_new_insurer_is_told_to_record_its_org_as_a_recipient(tmp_path: Path) -> None:
    data = ["--data", str(tmp_path / "data")]
    code, out, err = _run("clients", "add", "--name", "Munich Re", "--role", "insurer",
                          "--org", "insurer-de", "--json", *data)  # fmt: skip
    assert code == EXIT_OK and json.loads(out)["org"] == "insurer-de"
    assert "medledger recipients set --org insurer-de" in err
    basis = ["--country", "DE", "--basis", "standard-contract", "--reference", "SC-2026-001"]
    code, _, err = _run("recipients", "set", "--org", "insurer-de", *basis, *data)
    assert code == EXIT_OK, err
    code, _, err = _run("clients", "add", "--name", "Munich Re 2", "--role", "insurer",
                        "--org", "insurer-de", *data)  # fmt: skip
    assert code == EXIT_OK and "recipients set" not in err
