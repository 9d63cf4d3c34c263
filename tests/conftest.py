"""Shared fixtures: public vectors beside the project, and databases to run the store on.

PostgreSQL tests run when MEDLEDGER_TEST_PG holds a SQLAlchemy URL of a database the tests
may create schemas in (CI sets it; see .ci/run); otherwise they are skipped.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "vectors"
PG_ENV = "MEDLEDGER_TEST_PG"


@pytest.fixture(scope="session")
def vectors() -> Path:
    if not VECTORS.is_dir():
        pytest.skip(f"public test vectors not present at {VECTORS}")
    return VECTORS


def _pg_base() -> str | None:
    return os.environ.get(PG_ENV) or None


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    base = _pg_base()
    if base is None:
        pytest.skip(f"{PG_ENV} not set: no PostgreSQL server configured")
    schema = "t_" + secrets.token_hex(6)
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on the embedded SQLite store and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'medledger.db'}"
    return request.getfixturevalue("pg_url")
