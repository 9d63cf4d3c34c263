"""The recall index follows content: packs of every kind of Bundle, by approval and code too.

Rows now come from every Bundle that carries RWD content, whatever its kind, and name a pack
by its GTIN, its special-import approval number or its Chinese drug trace code (a pack known
by the last two alone has no GTIN). The table is a derived index: it is dropped with its mark,
and the next catch-up rebuilds it from the Bundles, including those of other kinds the old
mark had passed over.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import BigInteger, Column, Index, MetaData, String, Table, Text, delete

from exchange.store.migrations.helpers import columns_of, note

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

NAME = "exchange_trace"
_meta = MetaData()
trace = Table(
    NAME,
    _meta,
    Column("idx", BigInteger, nullable=False),
    Column("sender", String(64), nullable=False),
    Column("bundle_id", String(64), nullable=False),
    Column("gtin", String(14)),
    Column("lot", Text),
    Column("serial", Text),
    Column("expiry", String(10)),
    Column("cn_code", String(20)),
    Column("import_approval", Text),
    Index("ix_exchange_trace_gtin_lot", "gtin", "lot"),
    Index("ix_exchange_trace_gtin_serial", "gtin", "serial"),
    Index("ix_exchange_trace_idx", "idx"),
    Index("ix_exchange_trace_approval", "import_approval"),
    Index("ix_exchange_trace_cn_code", "cn_code"),
)
state = Table("exchange_derived_state", _meta, Column("name", String(32), primary_key=True))


def upgrade() -> None:
    conn = op.get_bind()
    old = columns_of(conn, NAME)
    if "import_approval" in old:
        return
    if old:
        had_rows = conn.exec_driver_sql(f"SELECT 1 FROM {NAME} LIMIT 1").first() is not None
        op.drop_table(NAME)
        conn.execute(delete(state).where(state.c.name == "trace"))
        if had_rows:
            note("recall index dropped, to be rebuilt from the Bundles of every kind")
    trace.create(conn)


def downgrade() -> None:
    raise NotImplementedError("a store is never downgraded: restore a backup instead")
