"""A Bundle may name several patients: access entries name each, and one patient's keys of
two spellings of an identifier become one key and its aliases.

`access_event_subjects` (append-only) holds the further patients of an access entry beyond
its subject; `exchange_vault_aliases` the key rows that revision 0004 makes aliases.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, Index, Integer, LargeBinary, MetaData, String, Table

from exchange.store.migrations.helpers import append_only

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

metadata = MetaData()

Table(
    "access_event_subjects",
    metadata,
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("subject", LargeBinary, primary_key=True),
    Index("ix_access_event_subjects_subject", "subject"),
)

Table(
    "exchange_vault_aliases",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("sender", String(64), nullable=False),
    Column("lookup", LargeBinary, nullable=False),
    Index("ix_exchange_vault_aliases_lookup", "sender", "lookup"),
)


def upgrade() -> None:
    conn = op.get_bind()
    metadata.create_all(conn, checkfirst=True)
    append_only(conn, "access_event_subjects")


def downgrade() -> None:
    raise NotImplementedError("a store is never downgraded: restore a backup instead")
