"""A store written before export digests and quality facts were sealed opens upgraded.

tests/fixtures/legacy_store/store is a data directory written by the code before the upgrade
(tests/fixtures/legacy_store/make.py): a finished insurer export of two patients, one of whom
was then erased, a hospital's export of one patient of another org, and quality facts. Its
meta.json holds what that code answered: each file's SHA-256 from the manifests, and the
indicator counts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    text,
)

from exchange import vault
from exchange.bundles import read as db
from exchange.intake.kind import patient_identifiers
from exchange.quality import facts as qf
from exchange.settlement import bulk_export
from exchange.settlement.bulk_export import SHA256_EXTENSION
from exchange.store import migrate, tables
from ledger.entry import commitment
from tests.api_helpers import Api, open_api, stored_values_by_table, wrap
from tests.paths import FIXTURES as TEST_FIXTURES
from tests.privacy.test_export_privacy import erase
from tests.quality.test_quality_facts import EPISODES, episode_bundles, indicator_counts
from tests.settlement.test_bulk_export import exported, path_of
from tests.settlement.test_settlement_index import PASSPORT, consent_bundle, settlement_bundle
from tests.settlement.test_settlement_search import insurer, submit

LEGACY = TEST_FIXTURES / "legacy_store" / "store"
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
        api.services.indexes.fresh(qf.QUALITY)
        as_of = datetime.fromisoformat(meta["quality"]["as_of"])
        facts = qf.episode_facts(api.services.vault, "hospital-a", as_of)
        counts = {k: list(v) for k, v in indicator_counts(facts).items()}
        assert counts == meta["quality"]["counts"]
        # The facts of the first indicators; the stent indicators' are new beside them.
        rows = qf.sender_rows(api.services.vault, "hospital-a")
        assert sum(r["fact"] not in qf.STENT_FACTS for r in rows) == meta["quality"]["rows"]
        stored = stored_values_by_table(api)[qf.quality_table.name]
        assert stored and not any(b"38214-3" in v for v in stored)

        # Upgrading again changes nothing.
        assert migrate.upgrade(api.services.engine) == []
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


def write_legacy_layout(api: Api, digests: dict[tuple[str, int], str]) -> None:
    """Rewrites the export files and quality facts as the code before the upgrade stored
    them: plain SHA-256 hex, and facts in the clear; and, as that code made no
    alembic_version, drops it."""
    engine = api.services.engine
    facts = qf.sender_rows(api.services.vault, "hospital-a")
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
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
        api.services.indexes.fresh(qf.QUALITY)
        facts = indicator_counts(qf.episode_facts(api.services.vault, "hospital-a", now))
        write_legacy_layout(api, digests)
        values = [v for vs in stored_values_by_table(api).values() for v in vs]
        assert any(d.encode() in v for d in digests.values() for v in values)
    with open_api(tmp_path / "data", db_url) as api:
        values = [v for vs in stored_values_by_table(api).values() for v in vs]
        for digest in digests.values():
            assert not any(digest.encode() in v or bytes.fromhex(digest) in v for v in values)
        again, _ = exported_again(api, ins, manifest)
        assert again == manifest["output"]
        api.services.indexes.fresh(qf.QUALITY)
        assert indicator_counts(qf.episode_facts(api.services.vault, "hospital-a", now)) == facts
        assert migrate.upgrade(api.services.engine) == []


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


BABY = (PASSPORT, "M30000009")


def test_the_upgraded_legacy_store_keeps_the_erasure_promise(tmp_path: Path) -> None:
    """After the upgrade the legacy store is in the current formats throughout: every Bundle
    still readable is sealed under a Bundle key (MLV2) and reads back the bytes its entry
    commits to, its retry digest keyed from its patients' keys; export digests and quality
    facts are sealed under the Bundle keys (MLD1). And it keeps the promise of those formats:
    a Bundle naming one of its patients beside a new one goes with either's erasure, and
    nothing else does."""
    data, meta = legacy_copy(tmp_path)
    kim = (meta["patients"]["kim"][0], meta["patients"]["kim"][1])
    with open_api(data) as api:
        keep_jobs(api)
        engine, opened = api.services.engine, api.services.vault
        t = tables.bundles_table
        with engine.connect() as conn:
            stored = conn.execute(select(t.c.idx, t.c.id, t.c.version, t.c.sender, t.c.data,
                                         t.c.salt, t.c.digest)).all()  # fmt: skip
        # Lee's two Bundles were erased before the upgrade: left as they were, unreadable.
        assert sum(bytes(r.data).startswith(b"MLV1") for r in stored) == 2
        by_index: dict[int, bytes] = {}
        for r in stored:
            if bytes(r.data).startswith(b"MLV1"):
                continue
            assert bytes(r.data)[:4] == bytes(r.salt)[:4] == b"MLV2"
            row = db.bundle_by_id(api.services.vault, r.id, int(r.version))
            assert row is not None and api.entry(int(r.idx)).commit == commitment(
                row.salt, row.data
            )
            patients = patient_identifiers(json.loads(row.data))
            digest_key = (
                opened.key_set(opened.patient_keys(r.sender, patients)).digest_key
                if patients
                else opened.log_digest_key().dek
            )
            assert bytes(r.digest) == vault.keyed_digest(digest_key, row.data)
            by_index[int(r.idx)] = row.data
        api.services.indexes.fresh(qf.QUALITY)
        with engine.connect() as conn:
            digests = conn.execute(select(bulk_export.files_table.c.digest)).scalars().all()
            t = qf.quality_table
            facts = conn.execute(select(t.c.sender, t.c.fact, t.c.data)).all()
        assert digests and all(d is None or bytes(d).startswith(b"MLD1") for d in digests)
        assert (
            sum(f.sender == "hospital-a" and f.fact not in qf.STENT_FACTS for f in facts)
            == meta["quality"]["rows"]
        )
        assert all(bytes(f.data).startswith(b"MLD1") for f in facts)

        # Kim, a patient of the old code, named beside a new patient in a new Bundle.
        hospital = api.credential()
        kims = [i for i, body in by_index.items() if kim[1].encode() in body]
        assert len(kims) == 2  # her claim and her consent
        both = submit(api, family_of(kim, BABY), hospital)
        other = {"Authorization": f"Bearer {meta['hospital_b']['token']}"}
        manifest_b = f"/fhir/$export-status/{meta['hospital_b']['job']}"
        output_b = api.client.get(manifest_b, headers=other).json()["output"]

        def readable(index: int) -> bool:
            with engine.connect() as conn:
                return index in opened.bundle_keys(conn, [index])

        def quality() -> dict[str, list[Any]]:
            facts = qf.episode_facts(api.services.vault, "hospital-a", datetime.fromisoformat(
                meta["quality"]["as_of"]))  # fmt: skip
            return {k: list(v) for k, v in indicator_counts(facts).items()}

        erase(api, "hospital-a", BABY)
        assert not readable(both["index"])
        assert all(readable(i) for i in by_index)
        erase(api, "hospital-a", kim)
        assert not any(readable(i) for i in kims)
        assert all(readable(i) for i in by_index if i not in kims)
        # Nothing else went: the other org's export, the quality indicators.
        assert api.client.get(manifest_b, headers=other).json()["output"] == output_b
        for item in output_b:
            got = api.client.get(path_of(item["url"]), headers=other)
            assert hashlib.sha256(got.content).hexdigest() == item["extension"][SHA256_EXTENSION]
        api.services.indexes.fresh(qf.QUALITY)
        assert quality() == meta["quality"]["counts"]


def family_of(*patients: tuple[str, str]) -> bytes:
    """A record Bundle naming these patients, one Patient each, in this order."""
    raws = [
        json.dumps({"resourceType": "Patient", "identifier": [{"system": s, "value": v}]}).encode()
        for s, v in patients
    ]
    return wrap(raws)


# The tables as the code that sealed them under the first vault format's data keys kept them
# (its own definitions, verbatim): a digest sealed under a joint key of the files' data keys,
# and facts sealed under their Bundle's data key.
_sealed = MetaData()
FIRST_FORMAT_FILES = Table(
    "exchange_export_files",
    _sealed,
    Column("job_id", String(36), primary_key=True),
    Column("n", Integer, primary_key=True, autoincrement=False),
    Column("resource_type", String(32), nullable=False),
    Column("count", Integer, nullable=False),
    Column("digest", LargeBinary),
    Column("keys", Text, nullable=False),
    Column("refs", Text, nullable=False),
)
FIRST_FORMAT_FACTS = Table(
    "exchange_quality_facts",
    _sealed,
    Column("idx", BigInteger, nullable=False),
    Column("sender", String(64), nullable=False),
    Column("bundle_id", String(64), nullable=False),
    Column("fact", String(16), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Index("ix_exchange_quality_facts_sender", "sender", "fact"),
)


def _first_format_joint_key(deks: dict[str, bytes], label: bytes) -> bytes:
    h = hashlib.sha256(b"medledger-vault/v1 joint\x00" + label)
    for key_id in sorted(deks):
        h.update(hmac.new(deks[key_id], label, hashlib.sha256).digest())
    return h.digest()


def _first_format_seal(key: bytes, key_id: str, plaintext: bytes, aad: bytes) -> bytes:
    nonce, kid = os.urandom(12), key_id.encode()
    return b"MLV1" + bytes([len(kid)]) + kid + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def write_first_format_layout(api: Api, digests: dict[tuple[str, int], str]) -> None:
    """Rewrites the export files and quality facts as they were kept while Bundles were sealed
    under their first patient's data key: each file's digest under a joint key of those data
    keys, the facts under their Bundle's."""
    engine, opened = api.services.engine, api.services.vault
    t = tables.bundles_table
    with engine.connect() as conn:
        first_key = {
            (r.id, int(r.version)): vault.sealed_key_ids(bytes(r.salt))[0]
            for r in conn.execute(select(t.c.id, t.c.version, t.c.salt))
        }
        files = conn.execute(select(bulk_export.files_table)).all()
        deks = opened.data_keys(conn, set(first_key.values()))
        facts = conn.execute(select(qf.quality_table)).all()
    rows = []
    for f in files:
        keys = sorted({first_key[(b, v)] for b, v, _, _ in json.loads(f.refs)})
        joint = _first_format_joint_key({k: deks[k] for k in keys}, bulk_export.DIGEST_LABEL)
        aad = f"medledger-export/v1\x00{f.job_id}\x00{f.n}".encode()
        digest = bytes.fromhex(digests[(f.job_id, f.n)])
        sealed = _first_format_seal(joint, "export-digest", digest, aad)
        rows.append({"job_id": f.job_id, "n": f.n, "resource_type": f.resource_type,
                     "count": f.count, "digest": sealed, "keys": json.dumps(keys),
                     "refs": f.refs})  # fmt: skip
    with engine.begin() as conn:
        conn.execute(text('DROP TABLE "exchange_export_files"'))
        conn.execute(text('DROP TABLE "exchange_quality_facts"'))
        # Stores of that format predate the Alembic revisions (exchange.store.migrate).
        conn.execute(text("DROP TABLE alembic_version"))
        _sealed.create_all(conn)
        conn.execute(insert(FIRST_FORMAT_FILES), rows)
        conn.execute(
            insert(FIRST_FORMAT_FACTS),
            [{"idx": r.idx, "sender": r.sender, "bundle_id": r.bundle_id, "fact": r.fact,
              "key_id": "0" * 32, "data": bytes(r.data)} for r in facts],
        )  # fmt: skip


def test_digests_sealed_under_first_format_data_keys_are_sealed_again(
    tmp_path: Path, db_url: str
) -> None:
    """A store whose export digests were sealed under the data keys Bundles had in the first
    vault format opens with them sealed under the Bundle keys: a file whose data keys all
    live keeps its digest and is served; a file with a patient erased meanwhile answers 410."""
    lee = (PASSPORT, "M60000002")
    with open_api(tmp_path / "data", db_url) as api:
        engine = api.services.engine
        hospital = api.credential()
        submit(api, settlement_bundle(KIM, "insurer-a", types=("Claim", "Invoice")), hospital)
        submit(api, settlement_bundle(lee, "insurer-a", tag="L1", types=("Claim",)), hospital)
        for patient, tag in ((KIM, "K"), (lee, "L")):
            submit(api, consent_bundle(patient, "insurer-a", consent_id=f"c-{tag}"), hospital)
        ins = insurer(api)
        manifest, _ = exported(api, ins, _type="Claim,Invoice")
        job = path_of(manifest["output"][0]["url"]).split("/")[-2]
        digests = {
            (job, n): item["extension"][SHA256_EXTENSION]
            for n, item in enumerate(manifest["output"])
        }
        api.services.indexes.fresh(qf.QUALITY)
        facts = len(qf.sender_rows(api.services.vault, "hospital-a"))
        write_first_format_layout(api, digests)
        erase(api, "hospital-a", lee)
    with open_api(tmp_path / "data", db_url) as api:
        engine = api.services.engine
        status = path_of(manifest["output"][0]["url"]).rsplit("/", 1)[0]
        output = {o["type"]: o for o in api.client.get(status, headers=ins).json()["output"]}
        before = {o["type"]: o for o in manifest["output"]}
        assert "extension" not in output["Claim"]  # Lee's claim is in it
        assert api.client.get(path_of(output["Claim"]["url"]), headers=ins).status_code == 410
        assert output["Invoice"] == before["Invoice"]
        got = api.client.get(path_of(output["Invoice"]["url"]), headers=ins)
        assert got.status_code == 200, got.text
        digest = hashlib.sha256(got.content).hexdigest()
        assert digest == before["Invoice"]["extension"][SHA256_EXTENSION]
        with engine.connect() as conn:  # dropped and made again empty, to be rebuilt sealed
            facts_left = conn.execute(select(func.count()).select_from(qf.quality_table))
            assert facts_left.scalar_one() == 0
        api.services.indexes.fresh(qf.QUALITY)
        assert 0 < len(qf.sender_rows(api.services.vault, "hospital-a")) < facts  # without Lee's
        assert migrate.upgrade(api.services.engine) == []
