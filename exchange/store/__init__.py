"""The exchange's schema: its tables on one MetaData (tables.py), the Alembic revisions
(migrations/) and the one way to run them (migrate.py), stored secrets."""
