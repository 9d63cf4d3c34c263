"""The vault of one log: its key rows (patient keys, pseudonyms, Bundle keys), sealing and
opening stored Bundles, and destroying keys for an erasure (the formats: exchange.vault.sealing).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    delete,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from exchange.errors import Gone
from exchange.store.tables import aliases_table, bundles_table, erased_table, keys_table
from exchange.vault.sealing import (
    KEY_SIZE,
    LOG_DIGEST_KEY_ID,
    KeySet,
    MasterKey,
    VaultError,
    _decrypt,
    bundle_aad,
    bundle_key,
    is_legacy,
    joint_key,
    key_set,
    lookup_tag,
    seal_derived,
    sealed_key_ids,
    unseal_derived,
)
from ledger import store
from ledger.errors import LogStateError

_CACHE_SIZE = 4096
_IN_CHUNK = 500  # values per IN list: far below every backend's limit on parameters


# Run inside the ledger's write lock, once per submission: built once.
_INSERT_KEY = insert(keys_table)
_LIVE_KEYS = select(keys_table.c.key_id).where(
    keys_table.c.key_id.in_(bindparam("key_ids", expanding=True))
)
_LIVE_KEYS_LOCKED = _LIVE_KEYS.with_for_update(read=True)


class Erased(Gone):
    """The data sealed under a destroyed key: answered 410 Gone wherever it is read."""

    def __init__(self, key_id: str, erasure_index: int | None) -> None:
        where = (
            f"ledger entry {erasure_index} records the erasure"
            if erasure_index is not None
            else "the erasure is being recorded"
        )
        super().__init__(
            f"this record was erased at the patient's request ({where}); its bytes and salt "
            "no longer exist, while its ledger entry and every proof stay verifiable",
        )
        self.key_id = key_id
        self.erasure_index = erasure_index
        self.sender: str | None = None  # whose Bundle it was, set by the reader that knows


class KeyGone(LogStateError):
    """A submission was prepared with a key that was erased meanwhile: retry it (503)."""


# --- the vault ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DataKey:
    key_id: str
    dek: bytes
    pseudonym: bytes | None = None  # set for a patient's key


def new_key_id() -> str:
    return uuid.uuid4().hex


class Vault:
    """One log's vault: wraps and unwraps DEKs, seals and opens Bundle parts.

    Unwrapped DEKs are cached (LRU) by key id *and* wrapped value, and key sets by key ids;
    every use still reads the keys' rows (a primary-key lookup), so a key erased by another
    process is never used again.
    """

    def __init__(self, engine: Engine, master: MasterKey, lookup_key: bytes) -> None:
        self.engine = engine
        self.master = master
        self.lookup_key = lookup_key
        self._deks: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()
        self._patients: OrderedDict[tuple[str, str, str], DataKey] = OrderedDict()
        self._sets: OrderedDict[tuple[str, ...], KeySet] = OrderedDict()
        self._lock = threading.Lock()
        self._log_digest: DataKey | None = None

    # --- key rows

    def _wrap(self, dek: bytes) -> bytes:
        return aes_key_wrap(self.master.key, dek)

    def _unwrap(self, key_id: str, master_id: str, wrapped: bytes) -> bytes:
        with self._lock:
            found = self._deks.get((key_id, wrapped))
            if found is not None:
                self._deks.move_to_end((key_id, wrapped))
                return found
        if master_id != self.master.id:
            raise VaultError(
                f"data key {key_id} is wrapped by master key {master_id}, but the loaded master "
                f"key is {self.master.id}: configure the vault key this database was made with"
            )
        try:
            dek = aes_key_unwrap(self.master.key, wrapped)
        except InvalidUnwrap:
            raise VaultError(f"data key {key_id} does not unwrap: damaged key row") from None
        with self._lock:
            self._deks[(key_id, wrapped)] = dek
            if len(self._deks) > _CACHE_SIZE:
                self._deks.popitem(last=False)
        return dek

    def key_row(self, key_id: str, dek: bytes, sender: str, lookup: bytes | None,
                pseudonym: bytes | None) -> dict[str, object]:  # fmt: skip
        """A row of exchange_vault_keys: the DEK wrapped under the master key."""
        return {
            "key_id": key_id,
            "sender": sender,
            "lookup": lookup,
            "pseudonym": pseudonym,
            "master_id": self.master.id,
            "wrapped": self._wrap(dek),
            "created": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }

    def patient_keys(self, sender: str, patients: Sequence[tuple[str, str]]) -> list[DataKey]:
        """The patients' keys, in order; those not made yet are made together, in one short
        transaction of their own."""
        found = self._cached_patients(sender, patients)
        missing = [p for p, key in zip(patients, found, strict=True) if key is None]
        if not missing:
            return found  # type: ignore[return-value]
        loaded = self._load_patients(sender, missing)
        return [key or loaded[p] for p, key in zip(patients, found, strict=True)]

    def cached_patient_keys(
        self, sender: str, patients: Sequence[tuple[str, str]]
    ) -> list[DataKey] | None:
        """The patients' keys when all are cached; else None (read them off the event loop)."""
        found = self._cached_patients(sender, patients)
        return None if None in found else found  # type: ignore[return-value]

    def _cached_patients(
        self, sender: str, patients: Sequence[tuple[str, str]]
    ) -> list[DataKey | None]:
        # By identifier as given, not by lookup tag: a hit costs no HMAC, and a Bundle names
        # several patients (a Synthea Patient carries four or five identifiers).
        with self._lock:
            found = []
            for system, value in patients:
                key = self._patients.get((sender, system, value))
                if key is not None:
                    self._patients.move_to_end((sender, system, value))
                found.append(key)
            return found

    def _load_patients(
        self, sender: str, patients: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], DataKey]:
        tags = {p: lookup_tag(self.lookup_key, sender, p) for p in patients}
        wanted = list(dict.fromkeys(tags.values()))
        # Another process may make some of these keys at the same time: its insert wins, ours
        # rolls back, and the next round reads its keys and makes only those still missing.
        for _ in range(len(wanted) + 1):
            with self.engine.connect() as conn:
                found = self._read_patients(conn, sender, wanted)
            missing = [tag for tag in wanted if tag not in found]
            if not missing:
                break
            try:
                with store.write_transaction(self.engine) as conn:
                    for tag in missing:
                        found[tag] = self.patient_key_in(conn, sender, tag)
                break
            except IntegrityError:
                continue
        else:
            raise VaultError("patient keys were made but cannot be read back")
        with self._lock:
            for (system, value), tag in tags.items():
                self._patients[(sender, system, value)] = found[tag]
            while len(self._patients) > _CACHE_SIZE:
                self._patients.popitem(last=False)
        return {p: found[tag] for p, tag in tags.items()}

    def patient_key_in(self, conn: Connection, sender: str, tag: bytes) -> DataKey:
        """The key of the patient with this lookup tag, made if there is none yet, in the
        caller's write transaction."""
        found = self._read_patients(conn, sender, [tag]).get(tag)
        if found is None:
            found = DataKey(new_key_id(), os.urandom(KEY_SIZE), os.urandom(32))
            conn.execute(
                _INSERT_KEY, self.key_row(found.key_id, found.dek, sender, tag, found.pseudonym)
            )
        return found

    def _read_patients(
        self, conn: Connection, sender: str, tags: Iterable[bytes]
    ) -> dict[bytes, DataKey]:
        t = keys_table
        rows = conn.execute(
            select(t.c.lookup, t.c.key_id, t.c.master_id, t.c.wrapped, t.c.pseudonym).where(
                t.c.sender == sender, t.c.lookup.in_(list(tags))
            )
        ).all()
        return {
            bytes(r.lookup): DataKey(
                r.key_id, self._unwrap(r.key_id, r.master_id, bytes(r.wrapped)), bytes(r.pseudonym)
            )
            for r in rows
        }

    def read_key(self, conn: Connection, key_id: str) -> DataKey | None:
        """A key by its id (with its pseudonym when it is a patient's); None once destroyed."""
        t = keys_table
        row = conn.execute(
            select(t.c.master_id, t.c.wrapped, t.c.pseudonym).where(t.c.key_id == key_id)
        ).first()
        if row is None:
            return None
        dek = self._unwrap(key_id, row.master_id, bytes(row.wrapped))
        return DataKey(key_id, dek, None if row.pseudonym is None else bytes(row.pseudonym))

    def subjects_of(self, sender: str, patient: tuple[str, str]) -> list[bytes]:
        """Every pseudonym the sender's entries about this patient carry: the current one
        first, then those of its alias keys; none once the patient was erased."""
        tag = lookup_tag(self.lookup_key, sender, patient)
        with self.engine.connect() as conn:
            own, aliases = self.patient_key_rows(conn, sender, tag)
        return [pseudonym for _, pseudonym in ([own] if own else []) + aliases]

    def patient_key_rows(
        self, conn: Connection, sender: str, tag: bytes
    ) -> tuple[tuple[str, bytes] | None, list[tuple[str, bytes]]]:
        """(key id, pseudonym) of the patient's key, and of each of its aliases."""
        k, a = keys_table.c, aliases_table.c
        own = conn.execute(
            select(k.key_id, k.pseudonym).where(k.sender == sender, k.lookup == tag)
        ).first()
        aliased = conn.execute(
            select(k.key_id, k.pseudonym)
            .join(aliases_table, a.key_id == k.key_id)
            .where(a.sender == sender, a.lookup == tag)
            .order_by(k.created, k.key_id)
        ).all()
        return (
            None if own is None else (own.key_id, bytes(own.pseudonym)),
            [(r.key_id, bytes(r.pseudonym)) for r in aliased],
        )

    def new_bundle_key(self, conn: Connection, sender: str) -> DataKey:
        """A DEK of one Bundle that names no patient, stored in the caller's transaction."""
        dek = os.urandom(KEY_SIZE)
        key = DataKey(new_key_id(), dek)
        conn.execute(_INSERT_KEY, self.key_row(key.key_id, dek, sender, None, None))
        return key

    def log_digest_key(self, conn: Connection | None = None) -> DataKey:
        """The DEK keying the retry digests of Bundles that name no patient (one per log),
        made by whichever process needs it first; in the caller's write transaction `conn`
        when given (a schema upgrade's)."""
        if self._log_digest is not None:
            return self._log_digest  # never erased: no Bundle is sealed under it
        if conn is not None:
            found = self._deks_of(conn, [LOG_DIGEST_KEY_ID], missing_ok=True)
            if LOG_DIGEST_KEY_ID not in found:
                found[LOG_DIGEST_KEY_ID] = dek = os.urandom(KEY_SIZE)
                conn.execute(_INSERT_KEY, self.key_row(LOG_DIGEST_KEY_ID, dek, "", None, None))
            self._log_digest = DataKey(LOG_DIGEST_KEY_ID, found[LOG_DIGEST_KEY_ID])
            return self._log_digest
        with self.engine.connect() as read:
            found = self._deks_of(read, [LOG_DIGEST_KEY_ID], missing_ok=True)
        if LOG_DIGEST_KEY_ID not in found:
            dek = os.urandom(KEY_SIZE)
            try:
                with store.write_transaction(self.engine) as write:
                    write.execute(_INSERT_KEY, self.key_row(LOG_DIGEST_KEY_ID, dek, "", None, None))
            except IntegrityError:
                pass
            with self.engine.connect() as read:
                found = self._deks_of(read, [LOG_DIGEST_KEY_ID])
        self._log_digest = DataKey(LOG_DIGEST_KEY_ID, found[LOG_DIGEST_KEY_ID])
        return self._log_digest

    def seal_secret(self, plaintext: bytes, aad: bytes) -> bytes:
        """A setting's secret (a recipient's credentials), sealed under a key derived from the
        master key: the database alone does not reveal it. ``aad`` binds it to its row."""
        return seal_derived(self._secret_key(), plaintext, aad)

    def open_secret(self, blob: bytes, aad: bytes) -> bytes:
        """What :meth:`seal_secret` sealed (VaultError under another master key or row)."""
        return unseal_derived(self._secret_key(), blob, aad)

    def _secret_key(self) -> bytes:
        return hmac.new(self.master.key, b"medledger-vault/v1 secrets", hashlib.sha256).digest()

    def key_set(self, keys: Sequence[DataKey]) -> KeySet:
        """The key set of these keys (cached: deriving it is the costly part of sealing)."""
        ids = tuple(k.key_id for k in keys)
        with self._lock:
            found = self._sets.get(ids)
            if found is not None:
                self._sets.move_to_end(ids)
                return found
        made = key_set([(k.key_id, k.dek) for k in keys])
        with self._lock:
            self._sets[ids] = made
            if len(self._sets) > _CACHE_SIZE:
                self._sets.popitem(last=False)
        return made

    def check_live(self, conn: Connection, key_ids: Sequence[str]) -> None:
        """Inside a write: every key still exists, and (PostgreSQL) cannot be erased before
        this transaction commits, so nothing is ever sealed under a destroyed key."""
        q = _LIVE_KEYS if conn.dialect.name == "sqlite" else _LIVE_KEYS_LOCKED
        live = set(conn.execute(q, {"key_ids": list(key_ids)}).scalars())
        gone = [k for k in key_ids if k not in live]
        if gone:
            self.forget(gone)
            raise KeyGone(
                "a patient's data key was erased while this submission was prepared: "
                "retry the submission"
            )

    # --- reading

    def _deks_of(
        self, conn: Connection, key_ids: Iterable[str], *, missing_ok: bool = False
    ) -> dict[str, bytes]:
        """The DEKs of these key ids; raises Erased for a destroyed one (unless missing_ok)."""
        wanted = sorted(set(key_ids))
        t = keys_table
        rows = conn.execute(
            select(t.c.key_id, t.c.master_id, t.c.wrapped).where(t.c.key_id.in_(wanted))
        ).all()
        found = {r.key_id: self._unwrap(r.key_id, r.master_id, bytes(r.wrapped)) for r in rows}
        missing = [k for k in wanted if k not in found]
        if missing and not missing_ok:
            raise self._gone(conn, missing[0])
        return found

    def data_keys(self, conn: Connection, key_ids: Iterable[str]) -> dict[str, bytes]:
        """The DEKs of those of these key ids that still exist (an erased one is absent)."""
        return self._deks_of(conn, key_ids, missing_ok=True)

    def bundle_keys(self, conn: Connection, indexes: Iterable[int]) -> dict[int, bytes]:
        """The Bundle key of each stored Bundle version at these ledger indexes that can still
        be opened: absent when a patient it names was erased (or a value of the first format
        is left, erased before the upgrade). Read from the sealed salts, which are small."""
        t = bundles_table
        wanted = sorted(set(indexes))
        salts: dict[int, bytes] = {}
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            for r in conn.execute(select(t.c.idx, t.c.salt).where(t.c.idx.in_(chunk))):
                salts[int(r.idx)] = bytes(r.salt)
        live = {idx: blob for idx, blob in salts.items() if not is_legacy(blob)}
        deks = self._deks_of(
            conn, {k for b in live.values() for k in sealed_key_ids(b)}, missing_ok=True
        )
        out: dict[int, bytes] = {}
        for idx, blob in live.items():
            ids = sealed_key_ids(blob)
            if all(k in deks for k in ids):
                out[idx] = bundle_key(self.key_set([DataKey(k, deks[k]) for k in ids]), blob)
        return out

    def joint_key_of(self, conn: Connection, indexes: Iterable[int], label: bytes) -> bytes:
        """:func:`joint_key` over the Bundle keys of the Bundle versions at these ledger
        indexes, in index order; Erased when one of them can no longer be opened."""
        wanted = sorted(set(indexes))
        keys = self.bundle_keys(conn, wanted)
        missing = [idx for idx in wanted if idx not in keys]
        if missing:
            raise self._unopenable(conn, missing[0])
        return joint_key([keys[idx] for idx in wanted], label)

    def _unopenable(self, conn: Connection, index: int) -> Exception:
        t = bundles_table
        salt = conn.execute(select(t.c.salt).where(t.c.idx == index)).scalar()
        if salt is None:
            return VaultError(f"no Bundle is stored at ledger index {index}")
        ids = sealed_key_ids(bytes(salt))
        live = self._deks_of(conn, ids, missing_ok=True)
        missing = [k for k in ids if k not in live]
        if not missing:
            return VaultError(f"the Bundle at ledger index {index} is of the first vault format")
        return self._gone(conn, missing[0])

    def _gone(self, conn: Connection, key_id: str) -> Exception:
        row = conn.execute(
            select(erased_table.c.idx).where(erased_table.c.key_id == key_id)
        ).first()
        if row is None:
            return VaultError(f"data key {key_id} is missing and no erasure destroyed it")
        return Erased(key_id, int(row.idx))

    def _open(self, deks: dict[str, bytes], blob: bytes, aad: bytes) -> bytes:
        return _decrypt(self._bundle_key(deks, blob), blob, aad)

    def _bundle_key(self, deks: dict[str, bytes], blob: bytes) -> bytes:
        return bundle_key(self.key_set([DataKey(k, deks[k]) for k in sealed_key_ids(blob)]), blob)

    def open_part(
        self, conn: Connection, blob: bytes, part: str, bundle_id: str, version: int, index: int
    ) -> bytes:
        """One sealed part of a stored Bundle, decrypted; Erased when a key it needs was
        destroyed."""
        deks = self._deks_of(conn, sealed_key_ids(blob))
        return self._open(deks, blob, bundle_aad(part, bundle_id, version, index))

    def open_many(
        self, conn: Connection, rows: list[tuple[bytes, str, int, int]]
    ) -> list[bytes | None]:
        """The `data` of many stored Bundles (blob, id, version, index); None for erased ones.
        Reads each key row once per call."""
        return [None if o is None else o[0] for o in self.open_bundles(conn, rows)]

    def open_bundles(
        self, conn: Connection, rows: list[tuple[bytes, str, int, int]]
    ) -> list[tuple[bytes, bytes] | None]:
        """:meth:`open_many`, each with the Bundle key it was sealed under (what an index
        seals its rows of the Bundle under: exchange.quality_facts)."""
        needs = [sealed_key_ids(blob) for blob, *_ in rows]
        deks = self._deks_of(conn, [k for ids in needs for k in ids], missing_ok=True)
        out: list[tuple[bytes, bytes] | None] = []
        for ids, (blob, bundle_id, version, index) in zip(needs, rows, strict=True):
            missing = next((k for k in ids if k not in deks), None)
            if missing is not None:
                err = self._gone(conn, missing)
                if not isinstance(err, Erased):
                    raise err
                out.append(None)
                continue
            key = self._bundle_key(deks, blob)
            out.append((_decrypt(key, blob, bundle_aad("data", bundle_id, version, index)), key))
        return out

    def pseudonyms(self, conn: Connection, key_ids: Iterable[str]) -> dict[str, bytes]:
        """The pseudonym of each of these keys that is a live patient's key (a Bundle's own
        key has none; an erased patient's is gone)."""
        t = keys_table
        rows = conn.execute(
            select(t.c.key_id, t.c.pseudonym).where(
                t.c.key_id.in_(sorted(set(key_ids))), t.c.pseudonym.is_not(None)
            )
        ).all()
        return {r.key_id: bytes(r.pseudonym) for r in rows}

    # --- erasure

    def destroy(self, conn: Connection, key_ids: Iterable[str], request_id: str, index: int) -> int:
        """Deletes these keys (and their alias rows) in the caller's transaction, leaving
        tombstones; returns how many key rows were deleted."""
        ids = sorted(set(key_ids))
        if not ids:
            return 0
        deleted = conn.execute(delete(keys_table).where(keys_table.c.key_id.in_(ids))).rowcount
        conn.execute(delete(aliases_table).where(aliases_table.c.key_id.in_(ids)))
        conn.execute(
            insert(erased_table),
            [{"key_id": k, "request_id": request_id, "idx": index} for k in ids],
        )
        return int(deleted or 0)

    def forget(self, key_ids: Iterable[str] | None = None) -> None:
        """Drops cached DEKs, key sets and pseudonyms of these keys (after an erasure), or of
        every key (after exchange.store_upgrade rewrote key rows)."""
        gone = None if key_ids is None else set(key_ids)
        with self._lock:
            if gone is None:
                self._deks.clear()
                self._patients.clear()
                self._sets.clear()
                return
            for dek in [d for d in self._deks if d[0] in gone]:
                del self._deks[dek]
            for patient in [p for p, v in self._patients.items() if v.key_id in gone]:
                del self._patients[patient]
            for ids in [s for s in self._sets if gone.intersection(s)]:
                del self._sets[ids]


def is_empty(engine: Engine) -> bool:
    """Whether the vault holds no key yet (a new store: a master key may be made for it)."""
    with engine.connect() as conn:
        return conn.execute(select(keys_table.c.key_id).limit(1)).first() is None
