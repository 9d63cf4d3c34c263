"""The exchange's schema through its Alembic revisions (exchange.store.migrate).

An empty database is built by the revisions, and what they build is exactly the schema
exchange/store/tables.py describes (Alembic's own comparison, on SQLite and PostgreSQL). A
store the first released version wrote has no `alembic_version`: it is taken as the baseline
and upgraded in place, on SQLite (the committed legacy store) and on PostgreSQL (the same
store's rows in the baseline's tables, as that version made them there).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, create_engine, insert, inspect, select, text

from exchange.quality import facts as qf
from exchange.settlement.bulk_export import SHA256_EXTENSION
from exchange.store import migrate, tables
from ledger import store
from tests.api_helpers import open_api
from tests.quality.test_quality_facts import indicator_counts
from tests.settlement.test_bulk_export import path_of
from tests.store.test_store_upgrade import keep_jobs, legacy_copy


def schema_drift(engine: Engine) -> list[Any]:
    """What differs between the database's exchange tables and exchange.store.tables."""

    def ours(name: str | None, kind: str, _: Any) -> bool:
        # The ledger's own tables are ledger.store's; the rest are described here.
        return (
            kind != "table" or name in tables.metadata.tables or not str(name).startswith("ledger_")
        )

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": ours})
        return list(compare_metadata(context, tables.metadata))


def test_an_empty_database_is_built_to_the_described_schema(db_url: str) -> None:
    engine = store.make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert migrate.current(conn) is None
        assert migrate.upgrade(engine) == []
        with engine.connect() as conn:
            assert migrate.current(conn) == migrate.head()
        assert schema_drift(engine) == []
        assert migrate.upgrade(engine) == []  # again: nothing to do
    finally:
        engine.dispose()


def test_the_revisions_are_one_line_from_the_baseline() -> None:
    scripts = ScriptDirectory(str(migrate.MIGRATIONS))
    chain = [s.revision for s in scripts.walk_revisions("base", "heads")]
    assert chain[-1] == "0001" and chain[0] == migrate.head()
    assert len(scripts.get_heads()) == 1


def test_the_legacy_sqlite_store_is_stamped_and_upgraded(tmp_path: Path) -> None:
    data, _ = legacy_copy(tmp_path)
    legacy = create_engine(f"sqlite:///{data / 'medledger.db'}")
    with legacy.connect() as conn:
        assert not inspect(conn).has_table("alembic_version")
        assert inspect(conn).has_table("exchange_bundles")
    legacy.dispose()
    with open_api(data) as api:
        with api.services.engine.connect() as conn:
            assert migrate.current(conn) == migrate.head()
        assert schema_drift(api.services.engine) == []


def old_schema_on_postgresql(pg_url: str, legacy_db: Path) -> None:
    """The legacy store's rows in PostgreSQL tables as the first release made them: the
    ledger's tables, the baseline revision's, no alembic_version."""
    engine = store.make_engine(pg_url)
    source = create_engine(f"sqlite:///{legacy_db}")
    try:
        migrate.upgrade(engine, target="0001")
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE alembic_version"))
        old = MetaData()
        old.reflect(engine)
        with source.connect() as src, engine.begin() as dst:
            for name in inspect(src).get_table_names():
                if name not in old.tables:
                    continue
                table = old.tables[name]
                rows = [dict(r._mapping) for r in src.execute(text(f'SELECT * FROM "{name}"'))]
                if rows:
                    dst.execute(
                        insert(table), [{c.name: r.get(c.name) for c in table.c} for r in rows]
                    )
            # Rows were copied with their keys: move each serial column's sequence past them.
            serials = dst.execute(
                text(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND column_default LIKE 'nextval%'"
                )
            ).all()
            for table_name, column in serials:
                dst.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table_name}', '{column}'), "
                        f'COALESCE((SELECT max("{column}") FROM "{table_name}"), 0) + 1, false)'
                    )
                )
    finally:
        source.dispose()
        engine.dispose()


def test_a_store_of_the_first_release_upgrades_in_place_on_postgresql(
    tmp_path: Path, pg_url: str
) -> None:
    data, meta = legacy_copy(tmp_path)
    old_schema_on_postgresql(pg_url, data / "medledger.db")
    engine = store.make_engine(pg_url)
    with engine.connect() as conn:
        assert migrate.current(conn) is None
        columns = {c["name"] for c in inspect(conn).get_columns("exchange_export_files")}
        assert "sha256" in columns  # the first release's plain digests
    engine.dispose()

    with open_api(data, pg_url) as api:
        keep_jobs(api)
        with api.services.engine.connect() as conn:
            assert migrate.current(conn) == migrate.head()
            digests = conn.execute(select(tables.metadata.tables["exchange_export_files"])).all()
        assert digests and schema_drift(api.services.engine) == []
        # The other org's export is served as the first release served it, same digests.
        other = {"Authorization": f"Bearer {meta['hospital_b']['token']}"}
        manifest = api.client.get(
            f"/fhir/$export-status/{meta['hospital_b']['job']}", headers=other
        ).json()
        assert [o["extension"] for o in manifest["output"]] == [
            o["extension"] for o in meta["hospital_b"]["manifest"]["output"]
        ]
        for item in manifest["output"]:
            got = api.client.get(path_of(item["url"]), headers=other)
            assert got.status_code == 200, got.text
            assert hashlib.sha256(got.content).hexdigest() == item["extension"][SHA256_EXTENSION]
        # Quality facts are rebuilt and say what they said.
        api.services.indexes.fresh(qf.QUALITY)
        as_of = datetime.fromisoformat(meta["quality"]["as_of"])
        facts = qf.episode_facts(api.services.vault, "hospital-a", as_of)
        counts = {k: list(v) for k, v in indicator_counts(facts).items()}
        assert counts == meta["quality"]["counts"]
        assert migrate.upgrade(api.services.engine) == []
