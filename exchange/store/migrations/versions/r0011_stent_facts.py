"""Quality facts hold the facts of the indicators after coronary stent placement too.

The table keeps its columns; its rows are derived from the Bundles, and the facts the new
indicators read (placements, LVEF, blood pressure, smoking status, deaths) were never taken
from the Bundles already indexed. The rows and the mark go, and the next catch-up rebuilds
them, sealed as before, from every stored Bundle.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, MetaData, String, Table, delete

from exchange.store.migrations.helpers import columns_of, note

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

NAME = "exchange_quality_facts"
_meta = MetaData()
facts = Table(NAME, _meta, Column("fact", String(16)))
state = Table("exchange_derived_state", _meta, Column("name", String(32), primary_key=True))


def upgrade() -> None:
    conn = op.get_bind()
    if not columns_of(conn, NAME):
        return
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA secure_delete = ON")  # zero the freed pages
    gone = conn.execute(delete(facts)).rowcount or 0
    conn.execute(delete(state).where(state.c.name == "quality"))
    if gone:
        note("quality facts dropped, to be rebuilt with the stent indicators' facts")


def downgrade() -> None:
    raise NotImplementedError("a store is never downgraded: restore a backup instead")
