"""A store sealed in the first vault format (MLV1: each Bundle under its first patient's key) is
upgraded in place when it opens, reads back byte for byte, and then keeps the erasure promise
of the second format (issue 19, items 2 and 14).

The rows of the first format are written here the way the exchange wrote them (docs/privacy.md,
"The first format"), independently of the code that upgrades them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from sqlalchemy import delete, insert, select, text, update

from exchange import vault
from exchange.bundles import read as db
from exchange.bundles.submit import dedupe_keys, ident_hash
from exchange.indexes import derived
from exchange.indexes.patients import patient_index
from exchange.intake import IntakeLimits
from exchange.intake.kind import spelled_patient_identifiers
from exchange.intake.worker import check
from exchange.privacy import erasure
from exchange.store import tables
from exchange.store.tables import keys_table, patient_ids_table
from ledger import store
from ledger.entry import SALT_SIZE, commitment
from ledger.log import Submission
from tests.api_helpers import FHIR_JSON, Api, open_api, wrap
from tests.vault.test_vault_families import Admins, family_bundle, status

ORG = "hospital-a"
MRN = "urn:example:mrn"
COMPOSED = "Nguyễn-7"
DECOMPOSED = unicodedata.normalize("NFD", COMPOSED)
LE = unicodedata.normalize("NFD", "Lê-8")


@dataclass(frozen=True)
class Legacy:
    id: str
    index: int
    body: bytes
    salt: bytes
    key_id: str


def _first_patient(body: bytes) -> tuple[str, str] | None:
    """The first Patient.identifier as spelled (the first format keyed only this one)."""
    for entry in json.loads(body).get("entry", []):
        resource = entry.get("resource", {})
        if resource.get("resourceType") == "Patient":
            for ident in resource.get("identifier", []):
                if ident.get("system") and ident.get("value"):
                    return ident["system"], ident["value"]
    return None


def _old_digest(dek: bytes, body: bytes) -> bytes:
    key = hmac.new(dek, b"medledger-vault/v1 digest", hashlib.sha256).digest()
    return hmac.new(key, body, hashlib.sha256).digest()


def _seal_v1(dek: bytes, key_id: str, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(12)
    kid = key_id.encode()
    return b"MLV1" + bytes([len(kid)]) + kid + nonce + AESGCM(dek).encrypt(nonce, plaintext, aad)


def _aad(part: str, bundle_id: str, version: int, index: int) -> bytes:
    return f"medledger-vault/v1\x00{part}\x00{bundle_id}\x00{version}\x00{index}".encode()


class LegacyWriter:
    """Submits Bundles the way the first format stored them."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.services = api.services
        self.master = api.services.vault.master
        self.client_id = "cl-legacy"

    def _key_row(
        self, key_id: str, dek: bytes, lookup: bytes | None, pseudonym: bytes | None
    ) -> dict[str, object]:
        return {
            "key_id": key_id,
            "sender": ORG,
            "lookup": lookup,
            "pseudonym": pseudonym,
            "master_id": self.master.id,
            "wrapped": aes_key_wrap(self.master.key, dek),
            "created": "2026-01-01T00:00:00.000+00:00",
        }

    def patient_key(self, patient: tuple[str, str]) -> tuple[str, bytes, bytes]:
        tag = hmac.new(
            self.services.pseudonym_key,
            f"{ORG}\x00{patient[0]}|{patient[1]}".encode(),
            hashlib.sha256,
        ).digest()
        t = keys_table
        with self.services.engine.connect() as conn:
            row = conn.execute(
                select(t.c.key_id, t.c.wrapped, t.c.pseudonym).where(t.c.lookup == tag)
            ).first()
        if row is not None:
            from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

            return (
                row.key_id,
                aes_key_unwrap(self.master.key, bytes(row.wrapped)),
                bytes(row.pseudonym),
            )
        key_id, dek, pseudonym = uuid.uuid4().hex, os.urandom(32), os.urandom(32)
        with store.write_transaction(self.services.engine) as conn:
            conn.execute(insert(t), self._key_row(key_id, dek, tag, pseudonym))
        return key_id, dek, pseudonym

    def submit(self, body: bytes) -> Legacy:
        checked = check(body, FHIR_JSON, IntakeLimits())
        patient = _first_patient(body)
        own = patient is None
        if own:
            key_id, dek, subject = uuid.uuid4().hex, os.urandom(32), None
            digest = _old_digest(self.services.vault.log_digest_key().dek, body)
        else:
            key_id, dek, subject = self.patient_key(patient)
            digest = _old_digest(dek, body)
        salt, bundle_id = os.urandom(SALT_SIZE), str(uuid.uuid4())
        ih = None if checked.identifier is None else ident_hash(checked.identifier)

        def write(conn, entry) -> None:  # type: ignore[no-untyped-def]
            if own:
                conn.execute(insert(keys_table), self._key_row(key_id, dek, None, None))
            where = (bundle_id, 1, entry.index)
            conn.execute(
                insert(tables.bundles_table),
                {
                    "id": bundle_id,
                    "version": 1,
                    "idx": entry.index,
                    "sender": ORG,
                    "client_id": self.client_id,
                    "kind": checked.kind,
                    "media": checked.media,
                    "salt": _seal_v1(dek, key_id, salt, _aad("salt", *where)),
                    "digest": digest,
                    "data": _seal_v1(dek, key_id, body, _aad("data", *where)),
                    "subject": subject,
                    "ident_hash": ih,
                    "ident_system": None,
                    "ident_value": None,
                    "idempotency_key": None,
                    "received": entry.time,
                },
            )

        appended = self.services.log.append(
            Submission(
                kind=checked.kind,
                sender=ORG,
                commit=commitment(salt, body),
                media=checked.media,
                subject=subject,
                dedupe_keys=dedupe_keys(ORG, None, ih, 1),
                digest=digest,
                write=write,
            )
        )
        return Legacy(bundle_id, appended.entry.index, body, salt, key_id)


def _stored(api: Api) -> dict[int, tuple[bytes, bytes, bytes]]:
    t = tables.bundles_table
    with api.services.engine.connect() as conn:
        rows = conn.execute(select(t.c.idx, t.c.data, t.c.salt, t.c.digest)).all()
    return {int(r.idx): (bytes(r.data), bytes(r.salt), bytes(r.digest)) for r in rows}


def _patient(value: str, note: str) -> bytes:
    doc = {
        "resourceType": "Patient",
        "identifier": [{"system": MRN, "value": value}],
        "name": [{"family": note}],
    }
    raw = json.dumps(doc, ensure_ascii=False).encode()
    return wrap([raw], identifier=f"urn:uuid:{uuid.uuid4()}")


def test_a_store_of_the_first_format_is_upgraded_and_still_reads(
    tmp_path: Path, db_url: str
) -> None:
    data = tmp_path / "data"
    with open_api(data, db_url) as api:
        legacy = LegacyWriter(api)
        written = {
            "mother": legacy.submit(_patient("MRN-MOTHER", "A")),
            "both": legacy.submit(family_bundle("MRN-MOTHER", "MRN-BABY")),
            "baby": legacy.submit(family_bundle("MRN-BABY", note="C")),
            "nobody": legacy.submit(family_bundle(note="D")),
            "decomposed": legacy.submit(_patient(DECOMPOSED, "E")),
            "composed": legacy.submit(_patient(COMPOSED, "F")),
            "retagged": legacy.submit(_patient(LE, "G")),
            "erased": legacy.submit(family_bundle("MRN-GONE", note="H")),
        }
        # The "both" Bundle is sealed under the mother's key alone: the first format's flaw.
        assert written["both"].key_id == written["mother"].key_id
        assert written["decomposed"].key_id != written["composed"].key_id
        engine, key = api.services.engine, api.services.pseudonym_key
        derived.register(engine, patient_index(key))
        requester = Admins(api).first
        with store.write_transaction(engine) as conn:
            api.services.vault.destroy(conn, [written["erased"].key_id], "er-old", 0)
            # A store of the first format has no mark of the current one; its patient index and
            # a pending erasure request name patients by their identifiers as spelled.
            secrets = tables.secrets_table
            conn.execute(delete(secrets).where(secrets.c.name == "vault-format"))
            # ... and is at the schema revision before the vault's second format.
            conn.execute(text("UPDATE alembic_version SET version_num = '0003'"))
            conn.execute(
                insert(patient_ids_table),
                [
                    {"idx": w.index, "sender": ORG, "bundle_id": w.id,
                     "ident": vault.spelling_tag(key, ORG, pair)}
                    for w in written.values()
                    for pair in spelled_patient_identifiers(json.loads(w.body))
                ],
            )  # fmt: skip
            conn.execute(
                update(tables.state_table)
                .where(tables.state_table.c.name == "patients")
                .values(last_index=max(w.index for w in written.values()))
            )
            conn.execute(
                insert(erasure.requests_table).values(
                    request_id="er-pending", sender=ORG,
                    lookup=vault.spelling_tag(key, ORG, (MRN, LE)),
                    requested_by=requester.client_id, requested="2026-01-01T00:00:00.000+00:00",
                )
            )  # fmt: skip
        old_subjects = {k: api.entry(w.index).subject for k, w in written.items()}

    with open_api(data, db_url) as api:  # opening the store upgrades it
        hospital = api.credential()
        stored = _stored(api)
        for name, w in written.items():
            blob, salt_blob, _ = stored[w.index]
            if name == "erased":
                assert blob.startswith(b"MLV1")  # no key left to open it: left as it was
                assert status(api, w.id, hospital) == 410
                continue
            assert blob.startswith(b"MLV2") and salt_blob.startswith(b"MLV2"), name
            row = db.bundle_by_id(api.services.vault, w.id)
            assert row is not None and row.data == w.body and row.salt == w.salt, name
            read = api.client.get(f"/fhir/Binary/{w.id}/_history/1", headers=hospital)
            assert read.status_code == 200 and read.content == w.body
            assert api.entry(w.index).commit == commitment(w.salt, w.body)
        assert vault.sealed_key_ids(stored[written["both"].index][0]) == (
            written["mother"].key_id,
            api.services.vault.patient_keys(ORG, [(MRN, "MRN-BABY")])[0].key_id,
        )
        # A retry of a first-format submission still answers the original (digest re-keyed).
        again = api.post(written["mother"].body, hospital)
        assert again.status_code == 200 and again.json()["index"] == written["mother"].index
        # Both spellings' keys are now one patient's: its subjects are both entries' subjects.
        subjects = api.services.vault.subjects_of(ORG, (MRN, COMPOSED))
        assert subjects[0] == old_subjects["composed"]
        assert set(subjects) == {old_subjects["composed"], old_subjects["decomposed"]}
        assert api.services.vault.subjects_of(ORG, (MRN, "Lê-8")) == [old_subjects["retagged"]]
        upgraded = _stored(api)

    with open_api(data, db_url) as api:  # upgrading again changes nothing
        hospital = api.credential()
        assert _stored(api) == upgraded
        admins = Admins(api)
        assert admins.erase("MRN-BABY").bundles == 2
        after = {k: status(api, written[k].id, hospital) for k in ("mother", "both", "baby")}
        assert after == {"mother": 200, "both": 410, "baby": 410}
        assert admins.erase(COMPOSED).bundles == 2
        assert status(api, written["decomposed"].id, hospital) == 410
        assert status(api, written["composed"].id, hospital) == 410
        # The request made before the upgrade, under the spelling of the time, still erases.
        done = erasure.confirm_erasure(api.services.log, api.services.vault, "er-pending",
                                       admins.second)  # fmt: skip
        assert done.bundles == 1
        assert status(api, written["retagged"].id, hospital) == 410
        assert status(api, written["nobody"].id, hospital) == 200
        assert api.services.vault.subjects_of(ORG, (MRN, DECOMPOSED)) == []
