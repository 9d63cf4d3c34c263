"""Quality facts are sealed under the Bundle key of the Bundle they come from.

The first format kept codes, values and times in the clear. The table is a derived index:
it is dropped with its mark, and the next catch-up rebuilds it sealed from the Bundles (an
erased Bundle gives no rows).
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
)

from exchange.store.migrations.helpers import columns_of, note

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NAME = "exchange_quality_facts"
_meta = MetaData()
facts = Table(
    NAME,
    _meta,
    Column("idx", BigInteger, nullable=False),
    Column("sender", String(64), nullable=False),
    Column("bundle_id", String(64), nullable=False),
    Column("fact", String(16), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Index("ix_exchange_quality_facts_sender", "sender", "fact"),
)
state = Table("exchange_derived_state", _meta, Column("name", String(32), primary_key=True))


def upgrade() -> None:
    conn = op.get_bind()
    old = columns_of(conn, NAME)
    if old and not old & {"code", "key_id"}:
        return
    if old:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA secure_delete = ON")  # zero the dropped pages
        had_rows = conn.exec_driver_sql(f"SELECT 1 FROM {NAME} LIMIT 1").first() is not None
        op.drop_table(NAME)
        conn.execute(delete(state).where(state.c.name == "quality"))
        if had_rows:
            note("quality facts dropped, to be rebuilt sealed under the Bundle keys")
    facts.create(conn)


def downgrade() -> None:
    raise NotImplementedError("a store is never downgraded: restore a backup instead")
