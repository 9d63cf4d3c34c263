"""Credentials that expire and clients that are revoked; one epoch every process watches.

`exchange_clients` gains `expires` (unix seconds; NULL: never) and `revoked` (RFC 3339;
NULL: active), and `exchange_credential_epoch` holds the one row each change of a credential
bumps (exchange.identity.cache.ClientCache).
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, insert, select

from exchange.store.migrations.helpers import add_missing_column

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

epoch = Table(
    "exchange_credential_epoch",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("epoch", BigInteger, nullable=False),
)


def upgrade() -> None:
    conn = op.get_bind()
    add_missing_column(conn, "exchange_clients", Column("expires", BigInteger))
    add_missing_column(conn, "exchange_clients", Column("revoked", String(32)))
    epoch.create(conn, checkfirst=True)
    if conn.execute(select(epoch.c.id).where(epoch.c.id == 1)).first() is None:
        conn.execute(insert(epoch).values(id=1, epoch=0))


def downgrade() -> None:
    raise NotImplementedError("a store is never downgraded: restore a backup instead")
