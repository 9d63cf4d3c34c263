"""A store written before export digests and quality facts were sealed opens upgraded.

tests/fixtures/legacy_store/store is a data directory written by the code before the upgrade
(tests/fixtures/legacy_store/make.py): a finished insurer export of two patients, one of whom
was then erased, a hospital's export of one patient of another org, and quality facts. Its
meta.json holds what that code answered: each file's SHA-256 from the manifests, and the
indicator counts.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    inspect,
    select,
    text,
)

from exchange import bulk_export, store_upgrade
from exchange import quality_facts as qf
from exchange.bulk_export import SHA256_EXTENSION
from exchange.derived import Indexes
from tests.api_helpers import Api, open_api, stored_values_by_table
from tests.test_bulk_export import exported, path_of
from tests.test_quality_facts import EPISODES, episode_bundles, indicator_counts
from tests.test_settlement_index import PASSPORT, consent_bundle, settlement_bundle
from tests.test_settlement_search import insurer, submit

LEGACY = Path(__file__).parent / "fixtures" / "legacy_store" / "store"
KIM = (PASSPORT, "M60000001")


def legacy_copy(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    data = tmp_path / "data"
    shutil.copytree(LEGACY, data)
    for key in ("log.key", "vault.key"):
        (data / key).chmod(0o600)  # a checkout does not keep the mode; the loader insists
    return data, json.loads((data / "meta.json").read_text())


def old_digests(meta: dict[str, Any]) -> list[str]:
    return [
        item["extension"][SHA256_EXTENSION]
        for who in ("insurer", "hospital_b")
        for item in meta[who]["manifest"]["output"]
    ]


def keep_jobs(api: Api) -> None:
    # The fixture's jobs are older than the default day: keep them for this test.
    api.services.settings = replace(api.services.settings, export_ttl=timedelta(days=36500))


def test_a_legacy_store_opens_upgraded(tmp_path: Path) -> None:
    data, meta = legacy_copy(tmp_path)
    digests = old_digests(meta)
    before = (LEGACY / "medledger.db").read_bytes()
    assert all(d.encode() in before for d in digests), "the fixture holds the plain digests"
    with open_api(data) as api:
        keep_jobs(api)
        engine = api.services.engine
        # No plain digest is left anywhere: not in a table, not in the database file.
        values = [v for vs in stored_values_by_table(api).values() for v in vs]
        for digest in digests:
            assert not any(digest.encode() in v or bytes.fromhex(digest) in v for v in values)
        with engine.connect() as conn:
            columns = {
                t: {c["name"] for c in inspect(conn).get_columns(t)}
                for t in ("exchange_export_files", qf.quality_table.name)
                if inspect(conn).has_table(t)
            }
        assert "sha256" not in columns["exchange_export_files"]
        assert "code" not in columns.get(qf.quality_table.name, set())

        # The other org's export (its one patient intact) is served as before, same digests.
        other = {"Authorization": f"Bearer {meta['hospital_b']['token']}"}
        job = meta["hospital_b"]["job"]
        manifest = api.client.get(f"/fhir/$export-status/{job}", headers=other).json()
        assert [o["extension"] for o in manifest["output"]] == [
            o["extension"] for o in meta["hospital_b"]["manifest"]["output"]
        ]
        for item in manifest["output"]:
            got = api.client.get(path_of(item["url"]), headers=other)
            assert got.status_code == 200, got.text
            assert hashlib.sha256(got.content).hexdigest() == item["extension"][SHA256_EXTENSION]
        # The insurer's export held the erased patient: no digest, and 410 as before.
        insurer = {
            "Authorization": f"Bearer {meta['insurer']['token']}",
            "X-Purpose-Of-Use": "HPAYMT",
        }
        job = meta["insurer"]["job"]
        manifest = api.client.get(f"/fhir/$export-status/{job}", headers=insurer).json()
        assert manifest["output"] and all("extension" not in o for o in manifest["output"])
        for item in manifest["output"]:
            assert api.client.get(path_of(item["url"]), headers=insurer).status_code == 410

        # Quality facts are rebuilt, sealed, and say what they said.
        Indexes(engine).fresh(qf.QUALITY)
        as_of = datetime.fromisoformat(meta["quality"]["as_of"])
        facts = qf.episode_facts(engine, "hospital-a", as_of)
        counts = {k: list(v) for k, v in indicator_counts(facts).items()}
        assert counts == meta["quality"]["counts"]
        assert len(qf.sender_rows(engine, "hospital-a")) == meta["quality"]["rows"]
        stored = stored_values_by_table(api)[qf.quality_table.name]
        assert stored and not any(b"38214-3" in v for v in stored)

        # Upgrading again changes nothing.
        assert store_upgrade.upgrade(engine, api.services.vault) == []
    after = (data / "medledger.db").read_bytes()
    assert not any(d.encode() in after for d in digests)
    assert b"38214-3" not in after


# The tables as the code before the upgrade kept them (its own definitions, verbatim).
_legacy = MetaData()
LEGACY_FILES = Table(
    "exchange_export_files",
    _legacy,
    Column("job_id", String(36), primary_key=True),
    Column("n", Integer, primary_key=True, autoincrement=False),
    Column("resource_type", String(32), nullable=False),
    Column("count", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("refs", Text, nullable=False),
)
LEGACY_FACTS = Table(
    "exchange_quality_facts",
    _legacy,
    Column("idx", BigInteger, nullable=False),
    Column("sender", String(64), nullable=False),
    Column("bundle_id", String(64), nullable=False),
    Column("fact", String(16), nullable=False),
    Column("key", Text, nullable=False),
    Column("ref", Text),
    Column("patient", Text),
    Column("episode", Text),
    Column("code", Text),
    Column("at", Text),
    Column("until", Text),
    Column("value", Text),
    Column("unit", Text),
    Index("ix_exchange_quality_facts_sender", "sender", "fact"),
)


def write_legacy_layout(engine: Engine, digests: dict[tuple[str, int], str]) -> None:
    """Rewrites the export files and quality facts as the code before the upgrade stored
    them: plain SHA-256 hex, and facts in the clear."""
    facts = qf.sender_rows(engine, "hospital-a")
    with engine.begin() as conn:
        files = conn.execute(select(bulk_export.files_table)).all()
        conn.execute(text('DROP TABLE "exchange_export_files"'))
        conn.execute(text('DROP TABLE "exchange_quality_facts"'))
        _legacy.create_all(conn)
        conn.execute(
            insert(LEGACY_FILES),
            [
                {"job_id": f.job_id, "n": f.n, "resource_type": f.resource_type,
                 "count": f.count, "sha256": digests[(f.job_id, f.n)], "refs": f.refs}
                for f in files
            ],
        )  # fmt: skip
        conn.execute(insert(LEGACY_FACTS), facts)


def test_an_upgrade_in_place_on_each_database(tmp_path: Path, db_url: str) -> None:
    now = datetime.now(UTC)
    with open_api(tmp_path / "data", db_url) as api:
        engine = api.services.engine
        hospital = api.credential()
        submit(api, settlement_bundle(KIM, "insurer-a", types=("Claim", "Invoice")), hospital)
        submit(api, consent_bundle(KIM, "insurer-a"), hospital)
        ins = insurer(api)
        manifest, _ = exported(api, ins)
        job = path_of(manifest["output"][0]["url"]).split("/")[-2]
        digests = {
            (job, n): item["extension"][SHA256_EXTENSION]
            for n, item in enumerate(manifest["output"])
        }
        for body in (b for e in EPISODES[:3] for b in episode_bundles(e)):
            assert api.post(body, hospital).status_code == 201
        Indexes(engine).fresh(qf.QUALITY)
        facts = indicator_counts(qf.episode_facts(engine, "hospital-a", now))
        write_legacy_layout(engine, digests)
        values = [v for vs in stored_values_by_table(api).values() for v in vs]
        assert any(d.encode() in v for d in digests.values() for v in values)
    with open_api(tmp_path / "data", db_url) as api:
        engine = api.services.engine
        values = [v for vs in stored_values_by_table(api).values() for v in vs]
        for digest in digests.values():
            assert not any(digest.encode() in v or bytes.fromhex(digest) in v for v in values)
        again, _ = exported_again(api, ins, manifest)
        assert again == manifest["output"]
        Indexes(engine).fresh(qf.QUALITY)
        assert indicator_counts(qf.episode_facts(engine, "hospital-a", now)) == facts
        assert store_upgrade.upgrade(engine, api.services.vault) == []


def exported_again(
    api: Api, headers: dict[str, str], manifest: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The finished job's manifest output read again, and its files (digests checked)."""
    status = path_of(manifest["output"][0]["url"]).rsplit("/", 1)[0]
    output = api.client.get(status, headers=headers).json()["output"]
    files = []
    for item in output:
        got = api.client.get(path_of(item["url"]), headers=headers)
        assert got.status_code == 200, got.text
        assert hashlib.sha256(got.content).hexdigest() == item["extension"][SHA256_EXTENSION]
        files.append(got.content)
    return output, files
