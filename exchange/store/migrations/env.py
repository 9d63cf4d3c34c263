"""Alembic's environment: runs the revisions on the connection exchange.store.migrate holds.

The connection is inside ledger.store.schema_transaction (the schema lock): every revision
and the version row commit together, or none does. Run through exchange.store.migrate, never
through the `alembic` command, which would hold no lock and open no vault.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

conn = context.config.attributes.get("connection")
if not isinstance(conn, Connection):
    raise RuntimeError(
        "the exchange's schema is upgraded by exchange.store.migrate.upgrade (medledger "
        "serve and every command that opens a store run it), not by the alembic command"
    )
context.configure(connection=conn, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
