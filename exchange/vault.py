"""The bundle vault: submitted Bundle bytes and their salts, encrypted under per-patient keys.

Key hierarchy (docs/privacy.md):

- the **master key** (32 bytes) comes from `MEDLEDGER_VAULT_KEY` (base64) or the file
  `vault.key` beside the log's signing key; its id is the first 8 bytes of a SHA-256 over it,
  recorded with every key it wraps;
- a **data key** (DEK, 32 random bytes) per patient, a patient being one Patient.identifier
  (system|value) of one sender org (the scope of the ledger entry's `subject`); a Bundle without
  a Patient gets a DEK of its own. Each DEK is stored wrapped with AES Key Wrap (RFC 3394) under
  the master key, in `exchange_vault_keys`, the only table erasure deletes key material from;
- each patient's **pseudonym** (the entry `subject`) is 32 random bytes kept in the DEK's row,
  found by a *lookup tag*: HMAC-SHA-256 under the log's lookup key of sender and identifier.
  Deleting the row unlinks the pseudonym from the identifier for good: the tag can still be
  recomputed, but it no longer leads anywhere.

A stored Bundle (`exchange_bundles.data`) and its salt (`.salt`) are each sealed with
AES-256-GCM (NIST SP 800-38D) under the DEK: `MLV1 ‖ len(key id) ‖ key id ‖ nonce(12) ‖
ciphertext ‖ tag(16)`. The associated data binds the ciphertext to what it is: part (`data` or
`salt`), Bundle id, version and ledger index, so a row's ciphertext moved to another row, or
the salt swapped with the data, does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Index,
    LargeBinary,
    String,
    Table,
    bindparam,
    delete,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from exchange.db import metadata
from exchange.outcome import ApiError
from ledger import store
from ledger.errors import LogStateError
from ledger.keys import create_private_file

MAGIC = b"MLV1"
NONCE_SIZE = 12
KEY_SIZE = 32
ENV_MASTER_KEY = "MEDLEDGER_VAULT_KEY"
LOG_DIGEST_KEY_ID = "log-digest"  # the DEK keying digests of Bundles that name no patient
_CACHE_SIZE = 4096

keys_table = Table(
    "exchange_vault_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("sender", String(64), nullable=False),
    Column("lookup", LargeBinary),  # HMAC of sender and identifier; NULL for a Bundle's own key
    Column("pseudonym", LargeBinary),  # the patient's entry `subject`
    Column("master_id", String(32), nullable=False),
    Column("wrapped", LargeBinary, nullable=False),  # RFC 3394 AES-KW of the DEK
    Column("created", String(32), nullable=False),
    Index("ix_exchange_vault_keys_lookup", "sender", "lookup", unique=True),
)

# What is left of a destroyed key: which erasure destroyed it, so a read can say so (410).
erased_table = Table(
    "exchange_vault_erased",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("request_id", String(64), nullable=False),
    Column("idx", BigInteger, nullable=False),  # the erasure's ledger entry
)


# Run inside the ledger's write lock, once per submission: built once.
_INSERT_KEY = insert(keys_table)
_KEY_EXISTS = select(keys_table.c.key_id).where(keys_table.c.key_id == bindparam("key_id"))
_KEY_EXISTS_LOCKED = _KEY_EXISTS.with_for_update(read=True)


class VaultError(Exception):
    """The vault cannot do what was asked: a missing or wrong master key, a damaged record."""


class Erased(ApiError):
    """The data sealed under a destroyed key: answered 410 Gone wherever it is read."""

    def __init__(self, key_id: str, erasure_index: int | None) -> None:
        where = (
            f"ledger entry {erasure_index} records the erasure"
            if erasure_index is not None
            else "the erasure is being recorded"
        )
        super().__init__(
            410,
            "deleted",
            f"this record was erased at the patient's request ({where}); its bytes and salt "
            "no longer exist, while its ledger entry and every proof stay verifiable",
        )
        self.key_id = key_id
        self.erasure_index = erasure_index
        self.sender: str | None = None  # whose Bundle it was, set by the reader that knows


class KeyGone(LogStateError):
    """A submission was prepared with a key that was erased meanwhile: retry it (503)."""


# --- the master key -----------------------------------------------------------------------


@dataclass(frozen=True)
class MasterKey:
    key: bytes

    @property
    def id(self) -> str:
        """The key's id, recorded with each DEK it wraps (never the key itself)."""
        return hashlib.sha256(b"medledger-vault-master\x00" + self.key).hexdigest()[:16]


def master_key_from(value: str) -> MasterKey:
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except ValueError as e:
        raise VaultError(f"{ENV_MASTER_KEY} is not base64: {e}") from None
    if len(key) != KEY_SIZE:
        raise VaultError(f"the vault master key must be {KEY_SIZE} bytes, not {len(key)}")
    return MasterKey(key)


def load_master_key(path: Path, *, create: bool) -> MasterKey:
    """`MEDLEDGER_VAULT_KEY` when set, else the key file (base64), created (0600) if allowed."""
    env = os.environ.get(ENV_MASTER_KEY)
    if env:
        return master_key_from(env)
    if not path.exists():
        if not create:
            raise VaultError(
                f"no vault master key: set {ENV_MASTER_KEY} or put the key (base64) in {path}"
            )
        try:
            create_private_file(path, base64.b64encode(os.urandom(KEY_SIZE)) + b"\n")
        except FileExistsError:
            pass  # another process made it first, and wrote it whole
    return master_key_from(path.read_text())


# --- sealing ------------------------------------------------------------------------------


def bundle_aad(part: str, bundle_id: str, version: int, index: int) -> bytes:
    """What a sealed part is: the GCM associated data that pins it to its row."""
    return f"medledger-vault/v1\x00{part}\x00{bundle_id}\x00{version}\x00{index}".encode()


def seal(dek: bytes, key_id: str, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM with a random 96-bit nonce (SP 800-38D 8.2.2), the key id in the clear."""
    kid = key_id.encode()
    nonce = os.urandom(NONCE_SIZE)
    header = MAGIC + bytes([len(kid)]) + kid + nonce
    return header + AESGCM(dek).encrypt(nonce, plaintext, aad)


def sealed_key_id(blob: bytes) -> str:
    """The id of the DEK a sealed value needs."""
    if blob[:4] != MAGIC or len(blob) < 5 + blob[4] + NONCE_SIZE + 16:
        raise VaultError("a stored value is not a vault ciphertext (MLV1)")
    return blob[5 : 5 + blob[4]].decode()


def head_key_id(head: bytes) -> str:
    """The id of the DEK a sealed value needs, from the value's first bytes alone (5 and the
    key id's length suffice), so a reader need not fetch a whole Bundle to learn its key."""
    if head[:4] != MAGIC or len(head) < 5 + head[4]:
        raise VaultError("a stored value is not a vault ciphertext (MLV1)")
    return head[5 : 5 + head[4]].decode()


def joint_key(deks: dict[str, bytes], label: bytes) -> bytes:
    """A key that can be made only while every one of these DEKs (by key id) exists: HMAC-SHA-256
    of `label` under each, in key id order, hashed together. What is sealed under it (a digest
    of an export that spans many patients, a Bundle's derived facts) becomes unreadable, and
    so confirms no guess, once any one of those keys is destroyed by an erasure."""
    h = hashlib.sha256(b"medledger-vault/v1 joint\x00" + label)
    for key_id in sorted(deks):
        h.update(hmac.new(deks[key_id], label, hashlib.sha256).digest())
    return h.digest()


def unseal(dek: bytes, blob: bytes, aad: bytes) -> bytes:
    start = 5 + len(sealed_key_id(blob))
    nonce = blob[start : start + NONCE_SIZE]
    try:
        return AESGCM(dek).decrypt(nonce, blob[start + NONCE_SIZE :], aad)
    except InvalidTag:
        raise VaultError(
            "a stored value does not decrypt: wrong key, or moved from another row"
        ) from None


def keyed_digest(dek: bytes, body: bytes) -> bytes:
    """The digest retries are matched by: keyed, so that without the key (after erasure) it
    confirms no guess of the bytes, as a plain SHA-256 would."""
    key = hmac.new(dek, b"medledger-vault/v1 digest", hashlib.sha256).digest()
    return hmac.new(key, body, hashlib.sha256).digest()


def lookup_tag(lookup_key: bytes, sender: str, patient: tuple[str, str]) -> bytes:
    """The vault row of a patient is found by this HMAC (same input as the lookup index)."""
    system, value = patient
    return hmac.new(lookup_key, f"{sender}\x00{system}|{value}".encode(), hashlib.sha256).digest()


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

    Unwrapped DEKs are cached (LRU) by key id *and* wrapped value; every use still reads the
    key's row (a primary-key lookup), so a key erased by another process is never used again.
    """

    def __init__(self, engine: Engine, master: MasterKey, lookup_key: bytes) -> None:
        self.engine = engine
        self.master = master
        self.lookup_key = lookup_key
        self._deks: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()
        self._patients: OrderedDict[tuple[str, bytes], DataKey] = OrderedDict()
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

    def _key_row(self, key_id: str, dek: bytes, sender: str, lookup: bytes | None,
                 pseudonym: bytes | None) -> dict[str, object]:  # fmt: skip
        return {
            "key_id": key_id,
            "sender": sender,
            "lookup": lookup,
            "pseudonym": pseudonym,
            "master_id": self.master.id,
            "wrapped": self._wrap(dek),
            "created": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }

    def patient_key(self, sender: str, patient: tuple[str, str]) -> DataKey:
        """The patient's DEK and pseudonym, created on first use (its own short transaction)."""
        tag = lookup_tag(self.lookup_key, sender, patient)
        cached = self._cached_patient(sender, tag)
        if cached is not None:
            return cached
        found = self._read_patient(sender, tag)
        if found is None:
            dek = os.urandom(KEY_SIZE)
            row = self._key_row(new_key_id(), dek, sender, tag, os.urandom(32))
            try:
                with store.write_transaction(self.engine) as conn:
                    conn.execute(insert(keys_table), row)
            except IntegrityError:
                pass  # another request made this patient's key first: use that one
            found = self._read_patient(sender, tag)
            if found is None:
                raise VaultError("a patient key was made but cannot be read back")
        with self._lock:
            self._patients[(sender, tag)] = found
            if len(self._patients) > _CACHE_SIZE:
                self._patients.popitem(last=False)
        return found

    def cached_patient_key(self, sender: str, patient: tuple[str, str]) -> DataKey | None:
        return self._cached_patient(sender, lookup_tag(self.lookup_key, sender, patient))

    def _cached_patient(self, sender: str, tag: bytes) -> DataKey | None:
        with self._lock:
            found = self._patients.get((sender, tag))
            if found is not None:
                self._patients.move_to_end((sender, tag))
            return found

    def _read_patient(self, sender: str, tag: bytes) -> DataKey | None:
        t = keys_table
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.c.key_id, t.c.master_id, t.c.wrapped, t.c.pseudonym).where(
                    t.c.sender == sender, t.c.lookup == tag
                )
            ).first()
        if row is None:
            return None
        dek = self._unwrap(row.key_id, row.master_id, bytes(row.wrapped))
        return DataKey(row.key_id, dek, bytes(row.pseudonym))

    def subject_of(self, sender: str, patient: tuple[str, str]) -> bytes | None:
        """The pseudonym the sender's entries about this patient carry; None when the vault
        holds no key of the patient (never submitted, or erased)."""
        found = self._read_patient(sender, lookup_tag(self.lookup_key, sender, patient))
        return None if found is None else found.pseudonym

    def new_bundle_key(self, conn: Connection, sender: str) -> DataKey:
        """A DEK of one Bundle that names no patient, stored in the caller's transaction."""
        dek = os.urandom(KEY_SIZE)
        key = DataKey(new_key_id(), dek)
        conn.execute(_INSERT_KEY, self._key_row(key.key_id, dek, sender, None, None))
        return key

    def log_digest_key(self) -> DataKey:
        """The DEK keying the retry digests of Bundles that name no patient (one per log)."""
        if self._log_digest is not None:
            return self._log_digest  # never erased: no Bundle is sealed under it
        with self.engine.connect() as conn:
            found = self._deks_of(conn, [LOG_DIGEST_KEY_ID], missing_ok=True)
        if LOG_DIGEST_KEY_ID not in found:
            dek = os.urandom(KEY_SIZE)
            try:
                with store.write_transaction(self.engine) as conn:
                    conn.execute(
                        insert(keys_table), self._key_row(LOG_DIGEST_KEY_ID, dek, "", None, None)
                    )
            except IntegrityError:
                pass
            with self.engine.connect() as conn:
                found = self._deks_of(conn, [LOG_DIGEST_KEY_ID])
        self._log_digest = DataKey(LOG_DIGEST_KEY_ID, found[LOG_DIGEST_KEY_ID])
        return self._log_digest

    def check_live(self, conn: Connection, key_id: str) -> None:
        """Inside a write: the key still exists, and (PostgreSQL) cannot be erased before this
        transaction commits, so nothing is ever sealed under a destroyed key."""
        q = _KEY_EXISTS if conn.dialect.name == "sqlite" else _KEY_EXISTS_LOCKED
        if conn.execute(q, {"key_id": key_id}).first() is None:
            self.forget([key_id])
            raise KeyGone(
                "the patient's data key was erased while this submission was prepared: "
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

    def joint_key_of(self, conn: Connection, key_ids: Iterable[str], label: bytes) -> bytes:
        """:func:`joint_key` over these keys; Erased when one of them was destroyed."""
        return joint_key(self._deks_of(conn, key_ids), label)

    def _gone(self, conn: Connection, key_id: str) -> Exception:
        row = conn.execute(
            select(erased_table.c.idx).where(erased_table.c.key_id == key_id)
        ).first()
        if row is None:
            return VaultError(f"data key {key_id} is missing and no erasure destroyed it")
        return Erased(key_id, int(row.idx))

    def open_part(
        self, conn: Connection, blob: bytes, part: str, bundle_id: str, version: int, index: int
    ) -> bytes:
        """One sealed part of a stored Bundle, decrypted; Erased when its key was destroyed."""
        key_id = sealed_key_id(blob)
        dek = self._deks_of(conn, [key_id])[key_id]
        return unseal(dek, blob, bundle_aad(part, bundle_id, version, index))

    def open_many(
        self, conn: Connection, rows: list[tuple[bytes, str, int, int]]
    ) -> list[bytes | None]:
        """The `data` of many stored Bundles (blob, id, version, index); None for erased ones.
        Reads each key row once per call."""
        ids = [sealed_key_id(blob) for blob, *_ in rows]
        deks = self._deks_of(conn, ids, missing_ok=True)
        out: list[bytes | None] = []
        for kid, (blob, bundle_id, version, index) in zip(ids, rows, strict=True):
            dek = deks.get(kid)
            if dek is None:
                err = self._gone(conn, kid)
                if not isinstance(err, Erased):
                    raise err
                out.append(None)
                continue
            out.append(unseal(dek, blob, bundle_aad("data", bundle_id, version, index)))
        return out

    # --- erasure

    def destroy(self, conn: Connection, key_ids: Iterable[str], request_id: str, index: int) -> int:
        """Deletes these keys in the caller's transaction, leaving tombstones; returns how
        many key rows were deleted."""
        ids = sorted(set(key_ids))
        if not ids:
            return 0
        deleted = conn.execute(delete(keys_table).where(keys_table.c.key_id.in_(ids))).rowcount
        conn.execute(
            insert(erased_table),
            [{"key_id": k, "request_id": request_id, "idx": index} for k in ids],
        )
        return int(deleted or 0)

    def forget(self, key_ids: Iterable[str]) -> None:
        """Drops cached DEKs and pseudonyms of these keys (after an erasure)."""
        gone = set(key_ids)
        with self._lock:
            for k in [k for k in self._deks if k[0] in gone]:
                del self._deks[k]
            for k in [k for k, v in self._patients.items() if v.key_id in gone]:
                del self._patients[k]


def is_empty(engine: Engine) -> bool:
    """Whether the vault holds no key yet (a new store: a master key may be made for it)."""
    with engine.connect() as conn:
        return conn.execute(select(keys_table.c.key_id).limit(1)).first() is None


# --- one vault per open database ----------------------------------------------------------

_VAULTS: weakref.WeakKeyDictionary[Engine, Vault] = weakref.WeakKeyDictionary()


def attach(vault: Vault) -> Vault:
    """Makes `vault` the one exchange.db's readers of this engine decrypt with."""
    _VAULTS[vault.engine] = vault
    return vault


def of(engine: Engine) -> Vault:
    found = _VAULTS.get(engine)
    if found is None:
        raise VaultError("no vault is open on this database: open the services first")
    return found
