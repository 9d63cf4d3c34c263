"""In-place upgrades of stored formats, run when a log's services open.

Until the schema has versioned migrations, a change to what a table stores is upgraded here,
idempotently, in one transaction: a store written by an earlier version opens upgraded, and
one already upgraded is left alone.

- Bulk export digests (exchange.bulk_export): the plain SHA-256 of each export file, which
  would confirm a guess of its contents after an erasure, becomes the same digest sealed under
  the joint key of the file's Bundles' data keys.
- Quality facts (exchange.quality_facts): the fact table with codes, values and times in the
  clear is dropped; as a derived index it is rebuilt, sealed, by the next catch-up.
"""

from __future__ import annotations

from sqlalchemy import Engine, text

from exchange import bulk_export, quality_facts, vault
from ledger import store

# Taken by every process upgrading the same PostgreSQL database, so one does it.
_PG_LOCK = 6964


def upgrade(engine: Engine, opened: vault.Vault) -> list[str]:
    """Upgrades what needs it; returns the names of the formats upgraded (none: up to date)."""
    done: list[str] = []
    with store.write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"SELECT pg_advisory_xact_lock({_PG_LOCK})"))
        if bulk_export.upgrade_schema(conn, opened):
            done.append("export digests sealed")
        if quality_facts.upgrade_schema(conn):
            done.append("quality facts dropped, to be rebuilt sealed")
    if done and engine.dialect.name == "sqlite":
        # The zeroed pages go into the database file, and the write-ahead log that held them
        # is emptied (as after an erasure, exchange.erasure).
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return done
