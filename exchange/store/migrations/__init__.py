"""The Alembic environment and revisions of the exchange's schema (exchange.store.migrate)."""
