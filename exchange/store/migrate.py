"""Brings a store's schema to the current version: the one path every process opens a store by.

The ledger's tables come first (ledger.store.create_schema: on PostgreSQL it also defines the
trigger function the exchange's append-only tables use); then the exchange's Alembic
revisions (exchange/store/migrations/versions) run on one connection inside
ledger.store.schema_transaction, so two servers starting together on one empty database
wait for each other (PostgreSQL's advisory lock, SQLite's write lock) and the second finds
the schema made; every revision and the version row commit together, or none does.

A store without an `alembic_version` table is one the first released version wrote (or an
empty one): the baseline revision makes whatever of its tables is missing, and the later
revisions upgrade it in place. Revisions that rewrite stored values need the vault, which
only the caller can open: it passes them as :class:`DataUpgrades`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from ledger import store

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@dataclass(frozen=True)
class DataUpgrades:
    """The work of the revisions that rewrite stored values, which needs the vault.

    `vault` seals values of the vault's first format again (revision 0004) and returns what it
    did, in words; `export_digests` seals export files' digests (revision 0005) and returns
    whether there were any. Each works inside the migration's transaction, on `conn`.
    """

    vault: Callable[[Connection], str]
    export_digests: Callable[[Connection], bool]


def _config(conn: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if conn is not None:
        config.attributes["connection"] = conn
    return config


def head() -> str:
    """The newest revision."""
    found = ScriptDirectory.from_config(_config()).get_current_head()
    assert found is not None
    return found


def current(conn: Connection) -> str | None:
    """The revision the store is at (None: unversioned, empty or of the first version)."""
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(
    engine: Engine, upgrades: DataUpgrades | None = None, target: str = "head"
) -> list[str]:
    """Upgrades the store to `target` (every revision by default); returns what rewrote
    stored values, in words (nothing: only the schema changed, or nothing at all)."""
    store.create_schema(engine)
    with store.schema_transaction(engine) as conn:
        config = _config(conn)
        config.attributes["data_upgrades"] = upgrades
        if current(conn) != head() or target != "head":
            command.upgrade(config, target)
        notes: list[str] = config.attributes.get("notes", [])
    if notes and engine.dialect.name == "sqlite":
        # The old values' pages were zeroed (secure_delete); empty the write-ahead log that
        # still held them, as after an erasure.
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return notes
