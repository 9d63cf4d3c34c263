"""A SMART client's keys may be registered by the URL they are published at.

`exchange_smart_jwks` gains `jwks_url`, and `jwks` may be empty where it is set: a row holds
one of the two (exchange.identity.clients). On SQLite the nullability change rebuilds the
table (Alembic's batch mode); its rows are kept as they are.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, String, Text

from exchange.store.migrations.helpers import add_missing_column

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

NAME = "exchange_smart_jwks"


def upgrade() -> None:
    conn = op.get_bind()
    add_missing_column(conn, NAME, Column("jwks_url", String(2048)))
    with op.batch_alter_table(NAME) as batch:
        batch.alter_column("jwks", existing_type=Text(), nullable=True)


def downgrade() -> None:
    raise NotImplementedError("a store is never downgraded: restore a backup instead")
