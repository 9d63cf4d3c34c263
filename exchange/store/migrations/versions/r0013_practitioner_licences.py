"""Practitioner licences: one row per signed licence attestation (registry.practitioners)."""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, Index, Integer, LargeBinary, MetaData, String, Table

from exchange.store.migrations.helpers import columns_of

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

NAME = "practitioner_licences"
licences = Table(
    NAME,
    MetaData(),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("org", String(64), nullable=False),
    Column("practitioner", String(64), nullable=False),
    Column("licence_number", String(64), nullable=False),
    Column("salt", LargeBinary, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Index("ix_practitioner_licences_org", "org"),
    Index("ix_practitioner_licences_practitioner", "practitioner"),
    Index("ix_practitioner_licences_licence_number", "licence_number"),
)


def upgrade() -> None:
    conn = op.get_bind()
    if not columns_of(conn, NAME):
        licences.create(conn)


def downgrade() -> None:
    raise NotImplementedError("a store is never downgraded: restore a backup instead")
