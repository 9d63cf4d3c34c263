"""SQLAlchemy storage of the log: entries, stored hashes, checkpoints, dedupe keys, one head row.

SQLite (the embedded default) runs in WAL mode with synchronous=FULL, and writers take the
database lock up front with BEGIN IMMEDIATE. PostgreSQL writers lock the head row
(SELECT ... FOR UPDATE). Either way one writer at a time extends the tree, and readers never
block. Indexes are assigned from the head row, never from a SEQUENCE, so a rolled-back
transaction leaves no gap. Ledger tables reject UPDATE and DELETE by trigger.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from .errors import LedgerUnavailable

metadata = MetaData()

head_table = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("origin", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("checkpoint", Text, nullable=False),
)

entries_table = Table(
    "ledger_entries",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("prev", LargeBinary, nullable=False, unique=True),
    Column("data", LargeBinary, nullable=False),
)

hashes_table = Table(
    "ledger_hashes",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary, nullable=False),
)

checkpoints_table = Table(
    "ledger_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("note", Text, nullable=False),
)

dedupe_table = Table(
    "ledger_dedupe",
    metadata,
    Column("key", String(512), primary_key=True),
    Column("idx", BigInteger, nullable=False),
    Column("digest", LargeBinary, nullable=False),
)

APPEND_ONLY_TABLES = ("ledger_entries", "ledger_hashes", "ledger_checkpoints", "ledger_dedupe")


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'medledger.db'}"


def make_engine(url: str) -> Engine:
    """An engine with the durability settings of the design (WAL + FULL on SQLite).

    A SQLite database file is created here, mode 0600, before SQLite opens it: SQLite gives
    its -wal and -shm files the database file's mode, so all three stay the owner's alone.
    """
    if url.startswith("sqlite"):
        _create_private_database(make_url(url).database)
        # As many pooled connections as the server has threads: a connection returned past
        # the pool's size is closed, and the next checkout pays for a new one and its PRAGMAs.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=SQLITE_POOL,
            max_overflow=SQLITE_POOL,
        )
        _WRITE_LOCKS[engine] = threading.RLock()

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control from pysqlite so BEGIN IMMEDIATE can be issued.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("ledger_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    try:
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    except ModuleNotFoundError as e:  # the URL's driver is an optional dependency
        raise LedgerUnavailable(
            f"the database driver {e.name!r} that {make_url(url).drivername} needs is not "
            "installed: for PostgreSQL install the postgres extra "
            "(pip install 'medledger[postgres]', which brings psycopg)"
        ) from None


def _create_private_database(database: str | None) -> None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except FileNotFoundError:
        pass  # no such directory: SQLite names the problem when it opens the file


# The SQLite pool's size: the server's worker threads (anyio's default 40) and the log's writer.
SQLITE_POOL = 48
# SQLite has one writer at a time. Writers of one process queue here, in order, rather than in
# SQLite's busy handler, which sleeps up to 100 ms between tries: under contention that sleep,
# not the work, set the pace. Other processes still meet the busy handler.
_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()
_WRITE_LOCK_WAIT = 30.0  # as the busy timeout: then on to SQLite's own waiting


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """One write transaction holding the log's write lock; commits on success."""
    lock = _WRITE_LOCKS.get(engine)
    held = lock is not None and lock.acquire(timeout=_WRITE_LOCK_WAIT)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(ledger_write=True)
            with conn.begin():
                yield conn
    except OperationalError as e:
        raise LedgerUnavailable(f"the ledger store cannot be written: {e.orig}") from e
    finally:
        if held:
            assert lock is not None
            lock.release()


# The PostgreSQL advisory lock every schema change holds for its whole transaction. One key
# for every table of every package: replicas starting together on one database must not
# interleave CREATE TABLE, CREATE OR REPLACE FUNCTION or the first head row.
SCHEMA_LOCK = 6962


@contextmanager
def schema_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction that excludes every other schema change until it commits.

    On PostgreSQL it holds the advisory lock SCHEMA_LOCK (transaction-scoped, so a crash
    releases it); on SQLite BEGIN IMMEDIATE holds the database's write lock. Every path that
    creates tables, triggers or a log's first rows runs in one, so processes started at the
    same moment on an empty database wait for one another instead of failing on a duplicate
    CREATE; whatever later replaces create_all (a migration tool) runs inside it too.
    """
    with write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        yield conn


def create_schema(engine: Engine) -> None:
    """Creates the ledger tables and their append-only triggers (idempotent)."""
    with schema_transaction(engine) as conn:
        metadata.create_all(conn)
        for table in APPEND_ONLY_TABLES:
            _create_append_only_trigger(conn, table)


def _create_append_only_trigger(conn: Connection, table: str) -> None:
    if conn.dialect.name == "sqlite":
        for op in ("UPDATE", "DELETE"):
            conn.exec_driver_sql(
                f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )
    elif conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "CREATE OR REPLACE FUNCTION medledger_append_only() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION '%% is append-only', TG_TABLE_NAME; END $$ LANGUAGE plpgsql"
        )
        conn.exec_driver_sql(
            f"CREATE OR REPLACE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION medledger_append_only()"
        )
        conn.exec_driver_sql(
            f"CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION medledger_append_only()"
        )


@contextmanager
def append_only_lifted(conn: Connection, table: str) -> Iterator[None]:
    """Inside the caller's write transaction, lets an in-place upgrade of the store rewrite
    rows of an append-only table. The guard is back before the transaction commits (a
    rollback restores it too), and, the DDL being transactional on both databases, no other
    transaction ever sees it missing."""
    if conn.dialect.name == "sqlite":
        for op in ("update", "delete"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_no_{op}")
    elif conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    yield
    _create_append_only_trigger(conn, table)


# The write path's statements, built once: building a statement costs more than running it.
_HEAD = select(head_table.c.origin, head_table.c.size, head_table.c.checkpoint).where(
    head_table.c.id == 1
)
_HEAD_FOR_UPDATE = _HEAD.with_for_update()
_HASHES = select(hashes_table.c.idx, hashes_table.c.hash).where(
    hashes_table.c.idx.in_(bindparam("indexes", expanding=True))
)
_DEDUPE = select(dedupe_table.c.key, dedupe_table.c.idx, dedupe_table.c.digest).where(
    dedupe_table.c.key.in_(bindparam("keys", expanding=True))
)
INSERT_ENTRIES = insert(entries_table)
INSERT_HASHES = insert(hashes_table)
INSERT_CHECKPOINT = insert(checkpoints_table)
INSERT_DEDUPE = insert(dedupe_table)
UPDATE_HEAD = (
    update(head_table)
    .where(head_table.c.id == 1)
    .values(size=bindparam("new_size"), checkpoint=bindparam("new_checkpoint"))
)


def lock_head(conn: Connection) -> tuple[str, int, str] | None:
    """(origin, size, signed checkpoint) of the log, locked for this transaction."""
    q = _HEAD if conn.dialect.name == "sqlite" else _HEAD_FOR_UPDATE
    row = conn.execute(q).first()
    return None if row is None else (row[0], int(row[1]), row[2])


def read_head(conn: Connection) -> tuple[str, int, str] | None:
    row = conn.execute(_HEAD).first()
    return None if row is None else (row[0], int(row[1]), row[2])


def read_hashes(conn: Connection, indexes: Sequence[int]) -> list[bytes]:
    """The stored hashes at `indexes`, in order, in one query."""
    if not indexes:
        return []
    wanted = sorted(set(indexes))
    rows = conn.execute(_HASHES, {"indexes": wanted}).all()
    found = {int(i): bytes(h) for i, h in rows}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise LookupError(f"stored hashes missing at {missing[:5]}")
    return [found[i] for i in indexes]


def read_entries(conn: Connection, start: int, end: int) -> list[bytes]:
    rows = conn.execute(
        select(entries_table.c.data)
        .where(entries_table.c.idx >= start, entries_table.c.idx < end)
        .order_by(entries_table.c.idx)
    ).all()
    return [bytes(r[0]) for r in rows]


def read_checkpoint_covering(conn: Connection, index: int) -> tuple[int, str] | None:
    """The first signed checkpoint whose tree contains entry `index`: its batch's checkpoint."""
    row = conn.execute(
        select(checkpoints_table.c.size, checkpoints_table.c.note)
        .where(checkpoints_table.c.size > index)
        .order_by(checkpoints_table.c.size)
        .limit(1)
    ).first()
    return None if row is None else (int(row[0]), row[1])


def read_checkpoints(conn: Connection, start_size: int = 0) -> list[tuple[int, str]]:
    rows = conn.execute(
        select(checkpoints_table.c.size, checkpoints_table.c.note)
        .where(checkpoints_table.c.size >= start_size)
        .order_by(checkpoints_table.c.size)
    ).all()
    return [(int(s), n) for s, n in rows]


def read_dedupe(conn: Connection, keys: Sequence[str]) -> dict[str, tuple[int, bytes]]:
    if not keys:
        return {}
    rows = conn.execute(_DEDUPE, {"keys": list(keys)}).all()
    return {k: (int(i), bytes(d)) for k, i, d in rows}


def durability_problems(engine: Engine) -> list[str]:
    """Settings under which a committed entry could be lost in a crash; empty when sound."""
    problems = []
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
            if str(mode).lower() != "wal":
                problems.append(f"SQLite journal_mode is {mode}, expected wal")
            if sync != 2:
                problems.append(f"SQLite synchronous is {sync}, expected 2 (FULL)")
        elif engine.dialect.name == "postgresql":
            for name in ("fsync", "synchronous_commit", "full_page_writes"):
                value = conn.exec_driver_sql(f"SHOW {name}").scalar()
                if str(value).lower() not in ("on", "remote_write", "remote_apply"):
                    problems.append(f"PostgreSQL {name} is {value}, expected on")
    return problems
