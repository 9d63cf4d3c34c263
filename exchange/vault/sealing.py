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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from exchange.intake.identifiers import normalise
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


class VaultError(Exception):
    """The vault cannot do what was asked: a missing or wrong master key, a damaged record."""


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


def load_master_key(path: Path, *, create: bool, given: str | None = None) -> MasterKey:
    """The key `given` (MEDLEDGER_VAULT_KEY, through exchange.config) when there is one, else
    the key file (base64), created (0600) if allowed."""
    if given:
        return master_key_from(given)
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
