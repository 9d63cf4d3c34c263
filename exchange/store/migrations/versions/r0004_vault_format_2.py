"""The vault's second format: a Bundle sealed under a key that needs every patient it names.

The first format (`MLV1`) sealed a Bundle under its first patient's key alone, and keyed
patients by their identifier exactly as spelled. Stored values still in it are sealed again
by exchange.privacy.upgrade.upgrade_vault (which needs the vault's master key: the caller's
DataUpgrades), which also gives identifiers their one spelling. The store is marked done
(`exchange_secrets` row `vault-format`) once nothing is left to do.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import Column, LargeBinary, MetaData, String, Table, func, insert, select

from exchange.store.migrations.helpers import data_upgrades, note

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FORMAT_NAME = "vault-format"
FORMAT = b"2"
_meta = MetaData()
secrets = Table(
    "exchange_secrets",
    _meta,
    Column("name", String(64), primary_key=True),
    Column("value", LargeBinary, nullable=False),
)
bundles = Table("exchange_bundles", _meta, Column("data", LargeBinary))


def upgrade() -> None:
    conn = op.get_bind()
    done = select(secrets.c.value).where(secrets.c.name == FORMAT_NAME)
    if conn.execute(done).first() is not None:
        return
    legacy = select(func.count()).where(func.substr(bundles.c.data, 1, 4) == b"MLV1")
    if conn.execute(legacy).scalar_one():
        upgrades = data_upgrades()
        if upgrades is None:
            raise RuntimeError(
                "this store holds Bundles of the vault's first format: open it with its "
                "vault (medledger serve, or any medledger command on it) to upgrade it"
            )
        note(upgrades.vault(conn))  # type: ignore[attr-defined]  # migrate.DataUpgrades
    conn.execute(insert(secrets).values(name=FORMAT_NAME, value=FORMAT))


def downgrade() -> None:
    raise NotImplementedError("a store is never downgraded: restore a backup instead")
