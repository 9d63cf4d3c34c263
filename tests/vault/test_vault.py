"""The bundle vault: AES-256-GCM under a Bundle key wrapped under every named patient's key."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from exchange import vault
from exchange.bootstrap import master_key
from exchange.bundles.read import bundle_by_id
from exchange.config import Environment, Settings
from exchange.store.tables import bundles_table, keys_table
from tests.api_helpers import observation_bundle, open_api, patient_bundle

bundle_ids = st.text("abcdef0123456789-", min_size=1, max_size=64)
versions = st.integers(1, 10**9)
indices = st.integers(0, 2**53)
plaintexts = st.binary(max_size=4096)
key_counts = st.integers(1, 5)


def random_keys(n: int) -> vault.KeySet:
    return vault.key_set([(vault.new_key_id(), os.urandom(32)) for _ in range(n)])


@settings(max_examples=200, deadline=None)
@given(plaintexts, bundle_ids, versions, indices, st.sampled_from(["data", "salt"]), key_counts)
def test_seal_then_open_gives_the_bytes_back(
    body: bytes, bundle_id: str, version: int, index: int, part: str, n: int
) -> None:
    keys = random_keys(n)
    aad = vault.bundle_aad(part, bundle_id, version, index)
    sealed = vault.seal(keys, body, aad)
    assert vault.sealed_key_ids(sealed) == keys.key_ids
    assert vault.unseal(keys, sealed, aad) == body
    # Fresh Bundle key and nonce each time: the same bytes never seal the same way twice.
    assert vault.seal(keys, body, aad) != sealed


@settings(max_examples=100, deadline=None)
@given(plaintexts, st.integers(2, 5), st.data())
def test_every_named_key_is_needed(body: bytes, n: int, data: st.DataObject) -> None:
    """Without any one patient's key, or with the keys in another order, nothing opens."""
    pairs = [(vault.new_key_id(), os.urandom(32)) for _ in range(n)]
    aad = vault.bundle_aad("data", "b", 1, 0)
    sealed = vault.seal(vault.key_set(pairs), body, aad)
    missing = data.draw(st.integers(0, n - 1))
    wrong = list(pairs)
    wrong[missing] = (pairs[missing][0], os.urandom(32))
    with pytest.raises(vault.VaultError, match="does not decrypt"):
        vault.unseal(vault.key_set(wrong), sealed, aad)
    order = data.draw(st.permutations(pairs).filter(lambda p: p != pairs))
    with pytest.raises(vault.VaultError):
        vault.unseal(vault.key_set(order), sealed, aad)


@settings(max_examples=200, deadline=None)
@given(
    plaintexts,
    st.tuples(bundle_ids, versions, indices),
    st.tuples(bundle_ids, versions, indices),
    st.sampled_from(["data", "salt"]),
    st.sampled_from(["data", "salt"]),
)
def test_a_ciphertext_does_not_open_as_another_row_or_part(
    body: bytes,
    here: tuple[str, int, int],
    there: tuple[str, int, int],
    part: str,
    other_part: str,
) -> None:
    keys = random_keys(1)
    sealed = vault.seal(keys, body, vault.bundle_aad(part, *here))
    if (part, here) == (other_part, there):
        assert vault.unseal(keys, sealed, vault.bundle_aad(other_part, *there)) == body
    else:
        with pytest.raises(vault.VaultError, match="does not decrypt"):
            vault.unseal(keys, sealed, vault.bundle_aad(other_part, *there))


@settings(max_examples=100, deadline=None)
@given(plaintexts, st.integers(0, 100_000), st.integers(0, 7), key_counts)
def test_a_wrong_key_or_a_flipped_bit_does_not_open(
    body: bytes, where: int, bit: int, n: int
) -> None:
    keys = random_keys(n)
    aad = vault.bundle_aad("data", "b", 1, 0)
    sealed = vault.seal(keys, body, aad)
    with pytest.raises(vault.VaultError):
        vault.unseal(random_keys(n), sealed, aad)
    i = where % len(sealed)  # header, key ids, wrapped Bundle key, nonce, ciphertext or tag
    flipped = sealed[:i] + bytes([sealed[i] ^ (1 << bit)]) + sealed[i + 1 :]
    with pytest.raises(vault.VaultError):
        vault.unseal(keys, flipped, aad)


def test_not_a_ciphertext_is_refused() -> None:
    for blob in (b"", b"{}", b'{"resourceType":"Bundle"}', vault.MAGIC + b"\x05ab",
                 vault.MAGIC + b"\x00" + bytes(80), vault.LEGACY_MAGIC + b"\x05ab"):  # fmt: skip
        with pytest.raises(vault.VaultError, match="not a vault ciphertext"):
            vault.sealed_key_ids(blob)


def test_the_master_key_file_is_made_once_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(vault.ENV_MASTER_KEY, raising=False)
    path = tmp_path / "d" / "vault.key"
    with pytest.raises(vault.VaultError, match="no vault master key"):
        vault.load_master_key(path, create=False)
    first = vault.load_master_key(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert vault.load_master_key(path, create=True) == first
    assert len(first.key) == 32 and len(first.id) == 16 and first.id not in path.read_text()


def test_the_environment_wins_and_is_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = os.urandom(32)
    monkeypatch.setenv(vault.ENV_MASTER_KEY, base64.b64encode(key).decode())
    given = Environment.read().vault_key  # read once, by exchange.config
    assert vault.load_master_key(tmp_path / "absent", create=False, given=given).key == key
    assert not (tmp_path / "absent").exists()
    for bad, why in (("not base64!", "not base64"), (base64.b64encode(b"short").decode(), "32")):
        monkeypatch.setenv(vault.ENV_MASTER_KEY, bad)
        with pytest.raises(vault.VaultError, match=why):
            given = Environment.read().vault_key
            vault.load_master_key(tmp_path / "absent", create=False, given=given)


def test_stored_bundles_are_sealed_and_read_back_exactly(tmp_path: Path, db_url: str) -> None:
    with open_api(tmp_path / "data", db_url) as api:
        hospital = api.credential()
        bodies = [patient_bundle("MRN-V1"), patient_bundle("MRN-V1", name="Lee"),
                  patient_bundle("MRN-V2"), observation_bundle("101.50")]  # fmt: skip
        answers = [api.post(b, hospital).json() for b in bodies]
        engine = api.services.engine
        with engine.connect() as conn:
            rows = conn.execute(
                select(bundles_table.c.idx, bundles_table.c.salt, bundles_table.c.data)
            ).all()
        stored = {int(r.idx): (bytes(r.salt), bytes(r.data)) for r in rows}
        key_of = {}
        for answer, body in zip(answers, bodies, strict=True):
            salt, data = stored[answer["index"]]
            assert data.startswith(vault.MAGIC) and salt.startswith(vault.MAGIC)
            assert body not in data and base64.b64decode(answer["salt"]) not in salt
            assert vault.sealed_key_ids(salt) == vault.sealed_key_ids(data)
            key_of[answer["index"]] = vault.sealed_key_ids(data)
            row = bundle_by_id(api.services.vault, answer["id"])
            assert row is not None and row.data == body
            assert row.salt == base64.b64decode(answer["salt"])
            api.check_receipt(answer, body)
        i = [a["index"] for a in answers]
        # One key per patient; a Bundle naming no patient has its own.
        assert key_of[i[0]] == key_of[i[1]] != key_of[i[2]]
        assert all(len(k) == 1 for k in key_of.values())
        assert key_of[i[3]] not in (key_of[i[0]], key_of[i[2]])
        # The rows cannot be swapped: row 0's ciphertext does not open as row 1's.
        opened = api.services.vault
        with engine.connect() as conn:
            with pytest.raises(vault.VaultError, match="does not decrypt"):
                opened.open_part(conn, stored[i[0]][1], "data", answers[1]["id"], 1, i[1])
            with pytest.raises(vault.VaultError, match="does not decrypt"):
                opened.open_part(conn, stored[i[0]][0], "data", answers[0]["id"], 1, i[0])


def test_another_master_key_reads_nothing(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    with open_api(data, db_url) as api:
        answer = api.post(patient_bundle("MRN-MK"), api.credential()).json()
        engine = api.services.engine
        own = api.services.vault
        stranger = vault.Vault(engine, vault.MasterKey(os.urandom(32)), own.lookup_key)
        with engine.connect() as conn:
            blob = conn.execute(
                select(bundles_table.c.data).where(bundles_table.c.idx == answer["index"])
            ).scalar_one()
            with pytest.raises(vault.VaultError, match="wrapped by master key"):
                stranger.open_part(conn, bytes(blob), "data", answer["id"], 1, answer["index"])
            # A row relabelled with the stranger's master id still does not unwrap (RFC 3394
            # integrity check).
            wrapped = conn.execute(
                select(keys_table.c.wrapped).where(
                    keys_table.c.key_id == vault.sealed_key_ids(bytes(blob))[0]
                )
            ).scalar_one()
            with pytest.raises(vault.VaultError, match="does not unwrap"):
                stranger._unwrap("k", stranger.master.id, bytes(wrapped))


def test_one_unwrap_per_patient_across_reads(tmp_path: Path, db_url: str) -> None:
    with open_api(tmp_path / "data", db_url) as api:
        hospital = api.credential()
        ids = [api.post(patient_bundle("MRN-C", name=f"N{n}"), hospital).json()["id"]
               for n in range(5)]  # fmt: skip
        opened = api.services.vault
        opened._deks.clear()
        for bundle_id in ids * 3:
            assert api.client.get(f"/fhir/Bundle/{bundle_id}", headers=hospital).status_code == 200
        assert len(opened._deks) == 1


def test_an_explicit_key_file_never_gets_a_new_master_key_for_a_used_vault(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(vault.ENV_MASTER_KEY, raising=False)
    elsewhere = tmp_path / "etc" / "log.key"
    with open_api(tmp_path / "data", db_url) as api:
        assert vault.is_empty(api.services.engine)
        api.post(patient_bundle("MRN-KF"), api.credential())
        assert not vault.is_empty(api.services.engine)
        elsewhere.parent.mkdir()
        elsewhere.write_bytes((tmp_path / "data" / "log.key").read_bytes())
        settings = Settings(data_dir=tmp_path / "unused", db_url=db_url, key_file=elsewhere)
        with pytest.raises(vault.VaultError, match="no vault master key"):
            master_key(settings, vault_is_empty=vault.is_empty(api.services.engine))
        assert not settings.vault_key_path.exists()
        # A new store may have one made beside the key file.
        made = master_key(settings, vault_is_empty=True)
        assert settings.vault_key_path.exists() and made != api.services.vault.master


def test_the_accounting_of_disclosures_finds_entries_under_the_vault_pseudonym(
    tmp_path: Path, db_url: str
) -> None:
    with open_api(tmp_path / "data", db_url) as api:
        hospital = api.credential()
        answer = api.post(patient_bundle("MRN-AD"), hospital).json()
        subject = api.entry(answer["index"]).subject
        patient = ("urn:example:mrn", "MRN-AD")
        assert api.services.vault.subjects_of("hospital-a", patient) == [subject]
        url = f"/fhir/Bundle/{answer['id']}/$hl7v2"
        read = api.client.get(url, params={"message": "ADT_A08"}, headers=hospital)
        assert read.status_code == 200
        url = "/v1/patients/MRN-AD/disclosures"
        doc = api.client.get(url, params={"system": "urn:example:mrn"}, headers=hospital).json()
        assert doc["total"] == 1
        assert subject.hex() in json.dumps(doc["entry"][0]["resource"])
