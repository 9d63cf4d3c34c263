"""SMART Health Links: one row per link a hospital made (exchange.sharing)."""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
)

from exchange.store.migrations.helpers import columns_of

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

NAME = "exchange_shl_links"
links = Table(
    NAME,
    MetaData(),
    Column("id", String(43), primary_key=True),
    Column("created_by", String(64), nullable=False),
    Column("ips_bundle", String(64), nullable=False),
    Column("ips_version", Integer, nullable=False),
    Column("ips_index", BigInteger, nullable=False),
    Column("flag", String(3), nullable=False),
    Column("exp", BigInteger, nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("passcode_hash", String(160)),
    Column("remaining_attempts", Integer),
    Column("revoked_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_exchange_shl_links_created_by", "created_by"),
)


def upgrade() -> None:
    conn = op.get_bind()
    if not columns_of(conn, NAME):
        links.create(conn)


def downgrade() -> None:
    raise NotImplementedError("a store is never downgraded: restore a backup instead")
