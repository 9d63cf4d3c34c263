"""The bundle vault: submitted Bundle bytes and their salts, sealed so that erasing any patient
a Bundle names makes that Bundle unreadable, and no other.

Key hierarchy (docs/privacy.md):

- the **master key** (32 bytes) comes from `MEDLEDGER_VAULT_KEY` (base64) or the file
  `vault.key` beside the log's signing key; its id is the first 8 bytes of a SHA-256 over it,
  recorded with every key it wraps;
- a **patient key** (DEK, 32 random bytes) per patient, a patient being one Patient.identifier
  (system|value, in its one spelling: exchange.identifiers) of one sender org (the scope of the
  ledger entry's `subject`); a Bundle that names no patient gets a key of its own. Each is
  stored wrapped with AES Key Wrap (RFC 3394) under the master key, in `exchange_vault_keys`,
  the only table erasure deletes key material from;
- a **Bundle key** (32 random bytes) per stored Bundle version, kept only wrapped (RFC 3394)
  under a key-encryption key derived (HKDF-SHA-256, RFC 5869) from the patient keys of *every*
  patient the Bundle names: without any one of them it cannot be unwrapped;
- each patient's **pseudonym** (the entry `subject`) is 32 random bytes kept in the patient
  key's row, found by a *lookup tag*: HMAC-SHA-256 under the log's lookup key of sender and
  identifier. Deleting the row unlinks the pseudonym from the identifier for good: the tag can
  still be recomputed, but it no longer leads anywhere.

A stored Bundle (`exchange_bundles.data`) and its salt (`.salt`) are each sealed with
AES-256-GCM (NIST SP 800-38D) under the Bundle key:
`MLV2 ‖ n ‖ n × (len(key id) ‖ key id) ‖ wrapped Bundle key (40) ‖ nonce(12) ‖ ciphertext ‖
tag(16)`, the key ids being those of the named patients' keys in the order the Bundle names
them. The associated data binds the ciphertext to what it is: part (`data` or `salt`), Bundle
id, version and ledger index, so a row's ciphertext moved to another row, or the salt swapped
with the data, does not decrypt. Values of the first format (`MLV1`, sealed under the first
named patient's key alone) are rewritten by exchange.store_upgrade when the store opens; only
those whose key was already erased stay, and read as erased.

What is derived from Bundles and kept (quality facts, the digest of an export file) is sealed
under a :func:`joint_key` of their Bundle keys, `MLD1 ‖ nonce(12) ‖ ciphertext ‖ tag(16)`
(:func:`seal_derived`): erasing any patient one of those Bundles names makes it unreadable too.
A Bundle version's key is found by its ledger index (:meth:`Vault.bundle_keys`).
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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
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

from exchange.bundles.store import bundles_table, metadata
from exchange.errors import Gone
from exchange.intake.identifiers import normalise
from ledger import store
from ledger.errors import LogStateError
from ledger.keys import create_private_file

MAGIC = b"MLV2"
LEGACY_MAGIC = b"MLV1"  # the first format: one key id, the data key itself seals
NONCE_SIZE = 12
KEY_SIZE = 32
WRAPPED_SIZE = KEY_SIZE + 8  # RFC 3394 adds one 64-bit block
TAG_SIZE = 16
MAX_KEYS = 255  # patients one Bundle may name: the count is one byte
ENV_MASTER_KEY = "MEDLEDGER_VAULT_KEY"
LOG_DIGEST_KEY_ID = "log-digest"  # the DEK keying digests of Bundles that name no patient
_CACHE_SIZE = 4096
_IN_CHUNK = 500  # values per IN list: far below every backend's limit on parameters

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

# Further key rows of one patient: before identifiers had one spelling, two spellings of one
# identifier could each get a key (exchange.store_upgrade). Such a key seals nothing any more,
# but its pseudonym is the subject of the older spelling's entries: the patient's accounting
# finds them through it, and the patient's erasure destroys it too.
aliases_table = Table(
    "exchange_vault_aliases",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("sender", String(64), nullable=False),
    Column("lookup", LargeBinary, nullable=False),  # the patient's lookup tag
    Index("ix_exchange_vault_aliases_lookup", "sender", "lookup"),
)


# Run inside the ledger's write lock, once per submission: built once.
_INSERT_KEY = insert(keys_table)
_LIVE_KEYS = select(keys_table.c.key_id).where(
    keys_table.c.key_id.in_(bindparam("key_ids", expanding=True))
)
_LIVE_KEYS_LOCKED = _LIVE_KEYS.with_for_update(read=True)


class VaultError(Exception):
    """The vault cannot do what was asked: a missing or wrong master key, a damaged record."""


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


@dataclass(frozen=True)
class KeySet:
    """The keys of the patients one Bundle names, in the order it names them, and what they
    derive: the key-encryption key of its Bundle key, and the key of its retry digest."""

    key_ids: tuple[str, ...]
    kek: bytes
    digest_key: bytes
    header: bytes  # MAGIC, the count and the key ids: how a sealed value begins


def key_set(keys: Sequence[tuple[str, bytes]]) -> KeySet:
    """The key set of these (key id, DEK) pairs.

    HKDF-SHA-256 (RFC 5869) over the DEKs, all 32 bytes long and concatenated in order, with
    the key ids in `info`: the output is unpredictable while any one DEK is unknown, and a
    value cannot be made to claim another list of keys than the one it was sealed under.
    """
    ids = tuple(k for k, _ in keys)
    if not ids or len(ids) > MAX_KEYS or len(set(ids)) != len(ids):
        raise VaultError(f"a Bundle is sealed under 1 to {MAX_KEYS} distinct keys, not {ids!r}")
    encoded = [k.encode() for k in ids]
    info = b"medledger-vault/v2 bundle keys\x00" + b"\x00".join(encoded)
    okm = HKDF(hashes.SHA256(), 2 * KEY_SIZE, salt=None, info=info).derive(
        b"".join(dek for _, dek in keys)
    )
    header = MAGIC + bytes([len(ids)]) + b"".join(bytes([len(k)]) + k for k in encoded)
    return KeySet(ids, okm[:KEY_SIZE], okm[KEY_SIZE:], header)


def seal_parts(keys: KeySet, parts: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    """Seals the parts (plaintext, associated data) of one Bundle version under one fresh
    Bundle key, wrapped under the key set's KEK; each random 96-bit nonce (SP 800-38D 8.2.2)."""
    key = os.urandom(KEY_SIZE)
    head = keys.header + aes_key_wrap(keys.kek, key)
    aead = AESGCM(key)
    out = []
    for plaintext, aad in parts:
        nonce = os.urandom(NONCE_SIZE)
        out.append(head + nonce + aead.encrypt(nonce, plaintext, aad))
    return out


def seal(keys: KeySet, plaintext: bytes, aad: bytes) -> bytes:
    """One value sealed under a Bundle key of its own."""
    return seal_parts(keys, [(plaintext, aad)])[0]


def _parse(blob: bytes) -> tuple[tuple[str, ...], int]:
    """The key ids a sealed value needs, and where what follows them starts."""
    magic = blob[:4]
    if magic not in (MAGIC, LEGACY_MAGIC) or len(blob) < 5:
        raise VaultError("a stored value is not a vault ciphertext (MLV2)")
    try:
        if magic == LEGACY_MAGIC:
            count, pos = 1, 4
        else:
            count, pos = blob[4], 5
        ids = []
        for _ in range(count):
            size = blob[pos]
            ids.append(blob[pos + 1 : pos + 1 + size].decode("ascii"))
            pos += 1 + size
    except (IndexError, UnicodeDecodeError):
        raise VaultError("a stored value is not a vault ciphertext (MLV2)") from None
    rest = (WRAPPED_SIZE if magic == MAGIC else 0) + NONCE_SIZE + TAG_SIZE
    if not ids or len(blob) < pos + rest:
        raise VaultError("a stored value is not a vault ciphertext (MLV2)")
    return tuple(ids), pos


def sealed_key_ids(blob: bytes) -> tuple[str, ...]:
    """The ids of the keys a sealed value needs: every one of them."""
    return _parse(blob)[0]


def is_legacy(blob: bytes) -> bool:
    """Whether a value is of the first format (MLV1), which exchange.store_upgrade rewrites."""
    return blob[:4] == LEGACY_MAGIC


def bundle_key(keys: KeySet, blob: bytes) -> bytes:
    """The Bundle key a sealed value is sealed under, unwrapped with the key set it names."""
    ids, pos = _parse(blob)
    if is_legacy(blob):
        raise VaultError(
            "a stored value is of the first vault format (MLV1): open the store with "
            "exchange.store_upgrade.open_vault, which rewrites it"
        )
    if ids != keys.key_ids:
        raise VaultError(f"a stored value needs keys {ids}, not {keys.key_ids}")
    try:
        return aes_key_unwrap(keys.kek, blob[pos : pos + WRAPPED_SIZE])
    except InvalidUnwrap:
        raise VaultError(
            "a stored value does not decrypt: wrong key, or moved from another row"
        ) from None


def unseal(keys: KeySet, blob: bytes, aad: bytes) -> bytes:
    return _decrypt(bundle_key(keys, blob), blob, aad)


def unseal_first_format(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """A value of the first format, for exchange.store_upgrade only:
    `MLV1 ‖ len(key id) ‖ key id ‖ nonce(12) ‖ ciphertext ‖ tag(16)`, AES-256-GCM under the
    named key itself."""
    if not is_legacy(blob):
        raise VaultError("a stored value is not of the first vault format (MLV1)")
    start = _parse(blob)[1]
    try:
        return AESGCM(key).decrypt(
            blob[start : start + NONCE_SIZE], blob[start + NONCE_SIZE :], aad
        )
    except InvalidTag:
        raise VaultError(
            "a first-format value does not decrypt: wrong key, or moved from another row"
        ) from None


def _decrypt(key: bytes, blob: bytes, aad: bytes) -> bytes:
    start = _parse(blob)[1] + WRAPPED_SIZE
    try:
        return AESGCM(key).decrypt(
            blob[start : start + NONCE_SIZE], blob[start + NONCE_SIZE :], aad
        )
    except InvalidTag:
        raise VaultError(
            "a stored value does not decrypt: wrong key, or moved from another row"
        ) from None


# --- what is derived from Bundles ---------------------------------------------------------

DERIVED_MAGIC = b"MLD1"


def joint_key(keys: Iterable[bytes], label: bytes) -> bytes:
    """A key that can be made only while every one of these Bundle keys can be opened:
    HMAC-SHA-256 of `label` under each, in the order given, hashed together. What is sealed
    under it (the digest of an export spanning many Bundles, a Bundle's derived facts)
    becomes unreadable, and so confirms no guess, once any patient one of those Bundles names
    is erased: its Bundle key needs every named patient's key (key_set)."""
    h = hashlib.sha256(b"medledger-vault/v1 joint\x00" + label)
    for key in keys:
        h.update(hmac.new(key, label, hashlib.sha256).digest())
    return h.digest()


def seal_derived(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """A value derived from Bundles, sealed under a :func:`joint_key` of theirs:
    `MLD1 ‖ nonce(12) ‖ AES-256-GCM ciphertext ‖ tag(16)`."""
    nonce = os.urandom(NONCE_SIZE)
    return DERIVED_MAGIC + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal_derived(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if blob[:4] != DERIVED_MAGIC or len(blob) < 4 + NONCE_SIZE + TAG_SIZE:
        raise VaultError("a stored value is not a sealed derived value (MLD1)")
    try:
        return AESGCM(key).decrypt(blob[4 : 4 + NONCE_SIZE], blob[4 + NONCE_SIZE :], aad)
    except InvalidTag:
        raise VaultError(
            "a derived value does not decrypt: wrong key, or moved from another row"
        ) from None


def keyed_digest(dek: bytes, body: bytes) -> bytes:
    """The digest retries are matched by: keyed, so that without the key (after erasure) it
    confirms no guess of the bytes, as a plain SHA-256 would."""
    key = hmac.new(dek, b"medledger-vault/v1 digest", hashlib.sha256).digest()
    return hmac.new(key, body, hashlib.sha256).digest()


def spelling_tag(lookup_key: bytes, sender: str, patient: tuple[str, str]) -> bytes:
    """The HMAC of this exact spelling of an identifier: a lookup tag once normalised
    (lookup_tag); a spelling as submitted only for exchange.store_upgrade, which finds the
    keys made before identifiers were normalised by it."""
    system, value = patient
    return hmac.new(lookup_key, f"{sender}\x00{system}|{value}".encode(), hashlib.sha256).digest()


def lookup_tag(lookup_key: bytes, sender: str, patient: tuple[str, str]) -> bytes:
    """The vault row of a patient is found by this HMAC of the identifier's one spelling
    (exchange.identifiers.normalise); the patient index keys on the same."""
    return spelling_tag(lookup_key, sender, normalise(patient))


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
                    conn.execute(_INSERT_KEY, self.key_row(LOG_DIGEST_KEY_ID, dek, "", None, None))
            except IntegrityError:
                pass
            with self.engine.connect() as conn:
                found = self._deks_of(conn, [LOG_DIGEST_KEY_ID])
        self._log_digest = DataKey(LOG_DIGEST_KEY_ID, found[LOG_DIGEST_KEY_ID])
        return self._log_digest

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
