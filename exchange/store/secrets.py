"""Per-log secrets kept in the store (`exchange_secrets`): made at random by whichever process
needs one first."""

from __future__ import annotations

import os

from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.exc import IntegrityError

from exchange.store.tables import secrets_table
from ledger import store

PSEUDONYM_KEY = "pseudonym-key"  # keys lookup tags (exchange.vault.lookup_tag)
# Seals SHL location tickets: shared by every process serving the log, never a link's key.
SHL_TICKET_KEY = "shl-ticket-key"
# Seals EPCIS nextPageToken cursors (adapters.epcis_query.PageTokens) for every process.
EPCIS_PAGE_KEY = "epcis-page-key"


def secret(engine: Engine, name: str, size: int = 32) -> bytes:
    """The named per-log secret, created at random on first use by whichever process is first."""
    with engine.connect() as conn:
        found = conn.execute(select(secrets_table.c.value).where(secrets_table.c.name == name))
        value = found.scalar()
    if value is not None:
        return bytes(value)
    try:
        with store.write_transaction(engine) as conn:
            conn.execute(insert(secrets_table).values(name=name, value=os.urandom(size)))
    except IntegrityError:
        pass  # another process created it first
    return secret(engine, name, size)


def secret_in(conn: Connection, name: str, size: int = 32) -> bytes:
    """:func:`secret`, in the caller's write transaction (a schema upgrade's)."""
    found = conn.execute(select(secrets_table.c.value).where(secrets_table.c.name == name))
    value = found.scalar()
    if value is None:
        value = os.urandom(size)
        conn.execute(insert(secrets_table).values(name=name, value=value))
    return bytes(value)
