"""What several revisions do: append-only guards, a column added where missing, the work only
the domain can do (exchange.store.migrate.DataUpgrades)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Column, Connection, inspect, text

from ledger import store


def append_only(conn: Connection, table: str) -> None:
    """The table's append-only triggers, as the ledger's own tables have them (idempotent)."""
    store._create_append_only_trigger(conn, table)


def add_missing_column(conn: Connection, table: str, column: Column[object]) -> None:
    """Adds a nullable column where a store made before it lacks it (ADD COLUMN needs no
    default for a nullable column, on every backend)."""
    assert column.nullable, f"{table}.{column.name} cannot be added to old rows"
    if column.name in {c["name"] for c in inspect(conn).get_columns(table)}:
        return
    kind = column.type.compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column.name} {kind}"))


def columns_of(conn: Connection, table: str) -> set[str]:
    inspector = inspect(conn)
    if not inspector.has_table(table):
        return set()
    return {c["name"] for c in inspector.get_columns(table)}


def data_upgrades() -> object | None:
    """The DataUpgrades the caller of exchange.store.migrate.upgrade gave, if any."""
    return context.config.attributes.get("data_upgrades")


def note(text_: str) -> None:
    """Records what a revision changed, for the caller to report."""
    context.config.attributes.setdefault("notes", []).append(text_)
