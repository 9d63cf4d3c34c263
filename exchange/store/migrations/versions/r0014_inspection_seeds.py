"""Inspection seeds: the seed document and salt of each `inspection` entry
(exchange.inspections.draw)."""

from __future__ import annotations

from alembic import op
from sqlalchemy import BigInteger, Column, LargeBinary, MetaData, String, Table

from exchange.store.migrations.helpers import columns_of

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

NAME = "inspection_seeds"
seeds = Table(
    NAME,
    MetaData(),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("seed", String(128), nullable=False, unique=True),
    Column("salt", LargeBinary, nullable=False),
    Column("data", LargeBinary, nullable=False),
)


def upgrade() -> None:
    conn = op.get_bind()
    if not columns_of(conn, NAME):
        seeds.create(conn)


def downgrade() -> None:
    raise NotImplementedError("a store is never downgraded: restore a backup instead")
