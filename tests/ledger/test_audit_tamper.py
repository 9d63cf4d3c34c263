"""Tamper tests: every single mutation of a stored log is caught at the right first bad index.

The log has 2,000 entries in random-sized batches (one signed checkpoint each). Mutations are
made to what an attacker with the database can change: an entry's bytes (a flipped byte),
entries deleted, inserted (garbage, a copy, or a forged entry that chains correctly), moved or
swapped, a stored tree hash replaced, a stored checkpoint replaced (a changed character, another
size's note, a note signed by a foreign key). "The right first bad index" is defined in
tests/audit_helpers.py: for entries, the first position where the stored list differs from the
signed one; for a stored hash, the leaf whose append wrote it; for a checkpoint of size s, s-1.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from exchange.audit.sources import DbSource
from exchange.cli.main import main
from ledger.audit import AuditResult, audit
from ledger.audit.stream import _match_entry
from ledger.entry import EntryError, parse_entry
from ledger.note import Signer

from ..audit_helpers import (
    KINDS,
    MemorySource,
    Mutation,
    append,
    apply_db,
    apply_memory,
    build_log,
    copy_db,
    disable_triggers,
    entries_only,
    pg_schema_url,
    random_mutation,
    signer,
)

N_ENTRIES = 2000
N_MUTATIONS = int(os.environ.get("MEDLEDGER_TAMPER_N", "1000"))
PG_ENV = "MEDLEDGER_TEST_PG"


@dataclass
class Built:
    signer: Signer
    other: Signer  # a foreign key with the same name
    url: str
    engine: Engine
    mem: MemorySource
    path: Path | None = None


@pytest.fixture(scope="module")
def sqlite_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    path = tmp_path_factory.mktemp("tamper") / "medledger.db"
    s = signer()
    log = build_log(f"sqlite:///{path}", N_ENTRIES, s)
    log.close()
    yield Built(s, signer(), f"sqlite:///{path}", log.engine, MemorySource.from_log(log), path)
    log.engine.dispose()


@pytest.fixture(scope="module")
def pg_log() -> Iterator[Built]:
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} not set: no PostgreSQL server configured")
    schema = "tamper_" + secrets.token_hex(4)
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = pg_schema_url(base, schema)
    s = signer()
    log = build_log(url, N_ENTRIES, s)
    log.close()
    yield Built(s, signer(), url, log.engine, MemorySource.from_log(log))
    log.engine.dispose()
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def _expect_caught(result: AuditResult, m: Mutation) -> None:
    assert result.status == "failed", (m.kind, m.detail, result.status)
    assert result.error is not None
    assert result.error.index == m.expected, (m.kind, m.detail, str(result.error))
    assert result.error.hint  # every failure says what to do next


def _mutations(
    built: Built, n: int, seed: int, kinds: tuple[str, ...] = KINDS
) -> Iterator[Mutation]:
    rng = random.Random(seed)
    for i in range(n):
        yield random_mutation(built.mem, rng, kinds[i % len(kinds)], built.other)


def test_fast_entry_check_accepts_only_what_parse_entry_accepts(sqlite_log: Built) -> None:
    rng = random.Random(5)
    entries = sqlite_log.mem.entries_
    accepted = 0
    for _ in range(20_000):
        data = bytearray(rng.choice(entries))
        data[rng.randrange(len(data))] = rng.randrange(256)
        if _match_entry(bytes(data)):
            accepted += 1
            parse_entry(bytes(data))  # must not raise
        else:
            try:
                parse_entry(bytes(data))
            except EntryError:
                pass
    assert all(_match_entry(e) for e in entries)
    assert accepted > 100  # some flips keep an entry well-formed (and leave it to the chain)


def test_untouched_log_passes(sqlite_log: Built, capsys: pytest.CaptureFixture[str]) -> None:
    keys = [sqlite_log.signer.verifier]
    for src in (sqlite_log.mem, entries_only(sqlite_log.mem), DbSource(sqlite_log.engine)):
        r = audit(src, keys)
        assert r.ok and r.size == N_ENTRIES and r.entries_checked == N_ENTRIES, r.error
    r = audit(sqlite_log.mem, keys)
    assert r.checkpoints_checked == len(sqlite_log.mem.checkpoints_) > 50
    assert r.hashes_checked == len(sqlite_log.mem.hashes)
    code = main(
        [
            "audit",
            "--db",
            str(sqlite_log.path),
            "--key",
            sqlite_log.signer.verifier.vkey(),
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["result"] == "ok" and out["entries_checked"] == N_ENTRIES


def test_mutations_as_the_http_api_shows_them(sqlite_log: Built) -> None:
    """Only entries and the latest checkpoint: the hash chain alone must name the entry."""
    keys = [sqlite_log.signer.verifier]
    for m in _mutations(sqlite_log, N_MUTATIONS // 2, 21, ("flip", "delete", "insert", "reorder")):
        _expect_caught(audit(entries_only(apply_memory(sqlite_log.mem, m)), keys), m)


def test_mutations_in_memory(sqlite_log: Built) -> None:
    keys = [sqlite_log.signer.verifier]
    for m in _mutations(sqlite_log, N_MUTATIONS, 22):
        _expect_caught(audit(apply_memory(sqlite_log.mem, m), keys), m)


def _db_mutations(built: Built, seed: int) -> None:
    keys = [built.signer.verifier]
    rng = random.Random(seed)
    seen = set()
    for m in _mutations(built, N_MUTATIONS, seed):
        with built.engine.connect() as conn:
            tx = conn.begin()
            disable_triggers(conn)
            apply_db(conn, built.mem, m, rng)
            result = audit(DbSource(conn), keys)
            tx.rollback()
        _expect_caught(result, m)
        seen.add(m.kind)
    assert seen == set(KINDS)
    assert audit(DbSource(built.engine), keys).ok  # every mutation was rolled back


def test_mutations_in_sqlite(sqlite_log: Built) -> None:
    _db_mutations(sqlite_log, 23)


@pytest.mark.postgres
def test_mutations_in_postgresql(pg_log: Built) -> None:
    _db_mutations(pg_log, 24)


@pytest.mark.postgres
def test_cli_on_postgresql(pg_log: Built, capsys: pytest.CaptureFixture[str]) -> None:
    vkey = pg_log.signer.verifier.vkey()
    assert main(["audit", "--db", pg_log.url, "--key", vkey, "--json"]) == 0
    capsys.readouterr()
    m = random_mutation(pg_log.mem, random.Random(8), "flip", pg_log.other)
    with pg_log.engine.begin() as conn:
        disable_triggers(conn)
        apply_db(conn, pg_log.mem, m, random.Random(8))
    try:
        assert main(["audit", "--db", pg_log.url, "--key", vkey, "--json"]) == 4
        out = json.loads(capsys.readouterr().out)
        assert out["error"]["index"] == m.expected and out["error"]["next"]
    finally:
        with pg_log.engine.begin() as conn:
            disable_triggers(conn)
            restore = Mutation("flip", "restore", m.expected, entries=pg_log.mem.entries_)
            apply_db(
                conn,
                MemorySource(pg_log.mem.head, m.entries or [], {}, {}),
                restore,
                random.Random(9),
            )
    assert main(["audit", "--db", pg_log.url, "--key", vkey]) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_cli_on_a_tampered_sqlite_copy(
    kind: str, sqlite_log: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attacker's own copy of the file, triggers dropped with the sqlite3 module."""
    copy = tmp_path / "copy.db"
    copy_db(sqlite_log.path, copy)  # type: ignore[arg-type]
    rng = random.Random(KINDS.index(kind))
    m = random_mutation(sqlite_log.mem, rng, kind, sqlite_log.other)
    engine = create_engine(f"sqlite:///{copy}")
    with engine.begin() as conn:
        disable_triggers(conn)
        apply_db(conn, sqlite_log.mem, m, rng)
    engine.dispose()
    code = main(["audit", "--db", str(copy), "--key", sqlite_log.signer.verifier.vkey(), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 4, out
    assert out["result"] == "failed" and out["error"]["index"] == m.expected, (m.detail, out)
    assert out["error"]["next"]


def test_head_rolled_back_or_forged(
    sqlite_log: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy.db"
    copy_db(sqlite_log.path, copy)  # type: ignore[arg-type]
    sizes = sorted(sqlite_log.mem.checkpoints_)
    older = sizes[len(sizes) // 2]
    con = sqlite3.connect(copy)
    con.execute(
        "UPDATE ledger_head SET size=?, checkpoint=? WHERE id=1",
        (older, sqlite_log.mem.checkpoints_[older]),
    )
    con.commit()
    con.close()
    vkey = sqlite_log.signer.verifier.vkey()
    assert main(["audit", "--db", str(copy), "--key", vkey, "--json"]) == 4
    out = json.loads(capsys.readouterr().out)
    assert out["error"]["index"] == older and out["error"]["code"] == "extra-entry"
    con = sqlite3.connect(copy)
    con.execute("UPDATE ledger_head SET checkpoint=replace(checkpoint, 'audit', 'audjt')")
    con.commit()
    con.close()
    assert main(["audit", "--db", str(copy), "--key", vkey, "--json"]) == 4
    out = json.loads(capsys.readouterr().out)
    assert out["error"]["code"] == "latest-checkpoint" and out["error"]["index"] is None


def test_a_log_growing_during_the_audit_passes(tmp_path: Path) -> None:
    """Entries appended while the database is audited are the log's, not an attacker's."""
    s = signer()
    log = build_log(f"sqlite:///{tmp_path / 'live.db'}", 500, s)

    class Live(DbSource):
        grown = False

        def entries(self, start: int, end: int) -> list[bytes]:
            if not self.grown:
                self.grown = True
                append(log, 120)
            return super().entries(start, end)

    src = Live(create_engine(f"sqlite:///{tmp_path / 'live.db'}"))
    src.page_size = 100
    r = audit(src, [s.verifier])
    assert r.ok and r.size == 500, r.error
    assert audit(DbSource(log.engine), [s.verifier]).size == 620
    log.close()
