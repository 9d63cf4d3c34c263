"""An export file's SHA-256 is sealed under the Bundle keys of the Bundles in it.

The first format kept it as hex text (`sha256`), which confirms a guess of the file after an
erasure. Each file's digest is sealed again by exchange.settlement.bulk_export.upgrade_schema
(it needs the vault: the caller's DataUpgrades); a table with no rows is simply rebuilt.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, Text, func, select

from exchange.store.migrations.helpers import columns_of, data_upgrades, note

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NAME = "exchange_export_files"
files = Table(
    NAME,
    MetaData(),
    Column("job_id", String(36), primary_key=True),
    Column("n", Integer, primary_key=True, autoincrement=False),
    Column("resource_type", String(32), nullable=False),
    Column("count", Integer, nullable=False),
    Column("digest", LargeBinary),
    Column("bundles", Text, nullable=False),
    Column("refs", Text, nullable=False),
)


def upgrade() -> None:
    conn = op.get_bind()
    if not columns_of(conn, NAME) & {"sha256", "keys"}:
        return
    rows = conn.execute(select(func.count()).select_from(Table(NAME, MetaData()))).scalar_one()
    if not rows:
        op.drop_table(NAME)
        files.create(conn)
        return
    upgrades = data_upgrades()
    if upgrades is None:
        raise RuntimeError(
            "this store holds export files of an earlier format: open it with its vault "
            "(medledger serve, or any medledger command on it) to upgrade it"
        )
    if upgrades.export_digests(conn):  # type: ignore[attr-defined]  # migrate.DataUpgrades
        note("export digests sealed under the Bundle keys")


def downgrade() -> None:
    raise NotImplementedError("a store is never downgraded: restore a backup instead")
