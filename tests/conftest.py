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

from tests.paths import VECTORS

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


# API test modules that also run on PostgreSQL when MEDLEDGER_TEST_PG is set: their `api`
# fixture calls api_helpers.open_api, which takes the database of the `api_backend` parameter.
API_PG_MODULES = frozenset(
    {
        "test_api_bundles",
        "test_api_log",
        "test_api_bad_input",
        "test_api_tiles",
        "test_api_witnessed",
    }
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if module in API_PG_MODULES and _pg_base() is not None:
        metafunc.parametrize("api_backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(autouse=True)
def api_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The database open_api uses when not given one: SQLite in the data dir, or PostgreSQL."""
    from tests import api_helpers

    backend = getattr(request, "param", "sqlite")
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    token = api_helpers.API_DB_URL.set(url)
    yield backend
    api_helpers.API_DB_URL.reset(token)
