"""Bundles by kind: the newest Bundle of a kind in one index seek, read on every record
submission to tell whether a patient's Consents may have changed
(exchange.settlement.index.consents_generation)."""

from __future__ import annotations

from alembic import op
from sqlalchemy import inspect

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

TABLE = "exchange_bundles"
NAME = "ix_exchange_bundles_kind"


def upgrade() -> None:
    conn = op.get_bind()
    if NAME not in {ix["name"] for ix in inspect(conn).get_indexes(TABLE)}:
        op.create_index(NAME, TABLE, ["kind", "idx"])


def downgrade() -> None:
    raise NotImplementedError("a store is never downgraded: restore a backup instead")
