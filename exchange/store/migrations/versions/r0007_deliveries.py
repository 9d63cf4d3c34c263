"""Delivery to home hospitals: recipients gain an endpoint, and the outbox its table.

`exchange_crossborder_recipients` gains `endpoint`, `endpoint_message` and `endpoint_secret`
(the credentials, sealed); `exchange_deliveries` is the outbox (exchange.outbox), one row per
(Bundle version, recipient).
"""

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

from exchange.store.migrations.helpers import add_missing_column

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

RECIPIENTS = "exchange_crossborder_recipients"

deliveries = Table(
    "exchange_deliveries",
    MetaData(),
    Column("id", String(36), primary_key=True),  # also the IPS document id / MSH-10 seed
    Column("bundle_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("bundle_idx", BigInteger, nullable=False),  # the delivered Bundle version's entry
    Column("sender", String(64), nullable=False),  # the hospital that submitted it
    Column("subject", LargeBinary),  # the patient's pseudonym (the entry's subject)
    Column("patient_tag", LargeBinary, nullable=False),  # lookup tag consents are found by
    Column("recipient", String(64), nullable=False),
    Column("transport", String(8), nullable=False),  # fhir | mllp
    Column("endpoint", String(512), nullable=False),  # the URL when queued, for the listing
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("queued", DateTime(timezone=True), nullable=False),  # also the payload's clock
    Column("attempts", Integer, nullable=False),
    Column("first_attempt", DateTime(timezone=True)),
    Column("next_at", DateTime(timezone=True), nullable=False),
    Column("claimed_until", DateTime(timezone=True)),  # a worker holds it until then
    Column("sent_digest", LargeBinary),  # SHA-256 of the bytes sent, fixed by the first attempt
    Column("last_error", String(1024)),
    Column("ledger_index", BigInteger),  # the kind=delivery entry of the final outcome
    Column("access_index", BigInteger),  # the access entry of the same outcome
    Column("salt", LargeBinary),  # the delivery entry's commitment: SHA-256(salt || record)
    Column("record", LargeBinary),
    Index("ix_exchange_deliveries_once", "bundle_idx", "recipient", unique=True),
    Index("ix_exchange_deliveries_due", "status", "next_at"),
    Index("ix_exchange_deliveries_sender", "sender"),
)


def upgrade() -> None:
    conn = op.get_bind()
    add_missing_column(conn, RECIPIENTS, Column("endpoint", String(512)))
    add_missing_column(conn, RECIPIENTS, Column("endpoint_message", String(16)))
    add_missing_column(conn, RECIPIENTS, Column("endpoint_secret", LargeBinary))
    deliveries.create(conn, checkfirst=True)


def downgrade() -> None:
    raise NotImplementedError("a store is never downgraded: restore a backup instead")
