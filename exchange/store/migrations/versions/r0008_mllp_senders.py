"""Home hospitals that send HL7 v2 over MLLP: each registered peer address or MSH-4 names the
hospital client its messages are submitted as (exchange.identity.mllp)."""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, MetaData, String, Table

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

senders = Table(
    "exchange_mllp_senders",
    MetaData(),
    Column("kind", String(8), primary_key=True),
    Column("value", String(255), primary_key=True),
    Column("client_id", String(64), nullable=False),
)


def upgrade() -> None:
    senders.create(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    raise NotImplementedError("a store is never downgraded: restore a backup instead")
