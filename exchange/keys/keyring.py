"""The log's signing keys on disk and their key entries in the database.

Private keys are PKCS#8 PEM files, mode 0600: the log's first key `log.key` and every key
added since as `keys/<hex key id>.key` in the same directory (beside `--key-file` with
`--db`). Each key entry's signed document and salt are kept in `ledger_key_events` (append
only), written in the transaction of the entry itself, so the two never exist apart. The
writer reads that table at every batch (one small indexed query) and signs each checkpoint
with every key active at its size (ledger/keyset.py): a key added or retired by another
process is picked up at the next batch.
"""

from __future__ import annotations

import base64
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import (
    Connection,
    Engine,
    func,
    inspect,
    select,
)

from exchange.store.tables import key_events_table
from ledger.audit import SourceMalformed
from ledger.checkpoint import CheckpointError, parse_checkpoint
from ledger.entry import SALT_SIZE, Entry, commitment
from ledger.errors import LedgerError, LogStateError
from ledger.keys import load_or_create_signer, load_signer, write_key_file
from ledger.keyset import (
    KIND,
    KeyEvent,
    KeyRuleError,
    KeySet,
    apply_event,
    check_event_entry,
    derive_keyset,
    is_anchored,
    parse_key_document,
    sign_key_document,
)
from ledger.log import Log, RowWriter, Submission
from ledger.note import NoteError, Signer, Verifier
from ledger.note import split as split_note

KEY_SENDER = "log"  # key entries are the log's own: no organisation sends them
KEY_MEDIA = "text/plain"  # a signed note (C2SP signed-note) is UTF-8 text


class KeyringError(LedgerError):
    """The key files and the key entries disagree, or a key request breaks the rules."""


# Read once per batch inside the write lock: built once.
_KEY_EVENTS_MARK = select(func.count(), func.coalesce(func.max(key_events_table.c.idx), -1))


def read_events(conn: Connection) -> list[KeyEvent]:
    rows = conn.execute(
        select(key_events_table.c.idx, key_events_table.c.note, key_events_table.c.salt).order_by(
            key_events_table.c.idx
        )
    ).all()
    return [KeyEvent(int(i), n, bytes(s)) for i, n, s in rows]


def key_path(keys_dir: Path, signer: Signer) -> Path:
    return keys_dir / f"{signer.verifier.key_id.hex()}.key"


def write_new_key(keys_dir: Path, name: str) -> tuple[Signer, Path]:
    """A fresh Ed25519 key saved as keys_dir/<key id>.key (PKCS#8 PEM, 0600, never replaced)."""
    key = Ed25519PrivateKey.generate()
    signer = Signer(name, key)
    path = key_path(keys_dir, signer)
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_key_file(path, key)
    return signer, path


@dataclass
class Keyring:
    """The private keys a log instance holds and the key set its key entries define."""

    origin: str
    first_key: Path  # log.key, or --key-file
    keys_dir: Path
    create_first: bool = True
    rotated: bool = False

    def __post_init__(self) -> None:
        self._signers: dict[bytes, Signer] = {}
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int], KeySet] | None = None

    # -- private keys

    def load(self) -> None:
        """Loads log.key (created on first use when allowed) and every keys/*.key file."""
        if self.create_first:
            self._add(load_or_create_signer(self.first_key, self.origin))
        elif self.first_key.exists() or not self.rotated:
            self._add(load_signer(self.first_key, self.origin))  # names what is wrong
        if self.keys_dir.is_dir():
            for path in sorted(self.keys_dir.glob("*.key")):
                self._add(load_signer(path, self.origin))

    def _add(self, signer: Signer) -> None:
        self._signers[signer.verifier.key_id] = signer

    def signer_for(self, key_id: bytes) -> Signer | None:
        with self._lock:
            found = self._signers.get(key_id)
            if found is None:
                path = self.keys_dir / f"{key_id.hex()}.key"
                if path.exists():
                    found = load_signer(path, self.origin)
                    self._add(found)
            return found

    def held(self) -> list[Signer]:
        return list(self._signers.values())

    # -- the key set

    def keyset(self, conn: Connection) -> KeySet:
        """The key set of the log in this database; re-derived only when key entries change."""
        count, last = conn.execute(_KEY_EVENTS_MARK).one()
        mark = (int(count), int(last))
        cached = self._cache
        if cached is not None and cached[0] == mark:
            return cached[1]
        firsts = [s.verifier for s in self.held()][:1]
        if not count and not firsts:
            raise KeyringError(f"the log's first key {self.first_key} is missing")
        ks = derive_keyset(self.origin, read_events(conn), firsts)
        self._cache = (mark, ks)
        return ks

    def signers_at(self, conn: Connection, size: int) -> list[Signer]:
        """Every key active at `size`, in the order they were added (the first is primary)."""
        out = []
        for k in self.keyset(conn).active_at(size):
            signer = self.signer_for(k.verifier.key_id)
            if signer is None:
                raise LogStateError(
                    f"key {k.verifier.vkey()} is active but its private key is not at "
                    f"{self.keys_dir / (k.verifier.key_id.hex() + '.key')}: copy it there "
                    "(mode 0600), or retire the key from a host that holds the others"
                )
            out.append(signer)
        return out


def open_keyring(engine: Engine, origin: str, first_key: Path, *, create: bool) -> Keyring:
    """The keyring of a log: its key files, checked against the key entries in `engine`."""
    with engine.connect() as conn:
        rotated = bool(conn.execute(select(func.count()).select_from(key_events_table)).scalar())
    # Once the log has rotated, a missing log.key was retired and removed: never recreate it.
    ring = Keyring(origin, first_key, first_key.parent / "keys", create and not rotated, rotated)
    ring.load()
    return ring


# --- key entries -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyChange:
    index: int
    action: str
    vkey: str
    key_id: str
    checkpoint: str


def _event_writer(ring: Keyring, note: str, salt: bytes) -> RowWriter:
    def write(conn: Connection, entry: Entry) -> None:
        event = KeyEvent(entry.index, note, salt)
        try:
            # Checked inside the entry's transaction: a concurrent change cannot slip between.
            apply_event(ring.keyset(conn), ring.origin, event)
        except KeyRuleError as e:
            raise KeyringError(str(e)) from e
        conn.execute(key_events_table.insert().values(idx=entry.index, note=note, salt=salt))

    return write


def append_key_event(log: Log, ring: Keyring, note: str) -> KeyChange:
    """Appends one key entry committing to the signed key document `note`."""
    salt = secrets.token_bytes(SALT_SIZE)
    sub = Submission(
        kind=KIND,
        sender=KEY_SENDER,
        commit=commitment(salt, note.encode("utf-8")),
        media=KEY_MEDIA,
        write=_event_writer(ring, note, salt),
    )
    res = log.append(sub)
    doc = parse_key_document(note)
    return KeyChange(
        res.entry.index, doc.action, doc.key.vkey(), doc.key.key_id.hex(), res.checkpoint
    )


def current_keyset(log: Log, ring: Keyring) -> KeySet:
    with log.engine.connect() as conn:
        return ring.keyset(conn)


def add_key(log: Log, ring: Keyring) -> KeyChange:
    """Generates a key, appends its add entry (authorised by the active keys): the overlap
    starts, and the next checkpoint is signed by the old and the new keys."""
    new, path = write_new_key(ring.keys_dir, ring.origin)
    try:
        by = _authorisers(log, ring)
        note = sign_key_document(ring.origin, "add", new.verifier, by, new)
        ring._add(new)  # noqa: SLF001 - held before the batch that needs it
        return append_key_event(log, ring, note)
    except BaseException:
        path.unlink(missing_ok=True)  # no entry, so the key must not linger
        raise


def retire_key(log: Log, ring: Keyring, key_id: str) -> KeyChange:
    """Appends the retire entry of `key_id`: checkpoints after it are not signed by it."""
    ks = current_keyset(log, ring)
    k = ks.by_key_id(key_id)
    if k is None:
        raise KeyringError(f"no key {key_id} in the log's key set (see `medledger keys list`)")
    if k.retired is not None:
        raise KeyringError(f"key {key_id} was already retired at size {k.retired}")
    if len(ks.current()) == 1:
        raise KeyringError(
            f"key {key_id} is the last active key: run `medledger keys add` first, then retire"
        )
    note = sign_key_document(ring.origin, "retire", k.verifier, _authorisers(log, ring))
    return append_key_event(log, ring, note)


def _authorisers(log: Log, ring: Keyring) -> list[Signer]:
    with log.engine.connect() as conn:
        return ring.signers_at(conn, log.size())


# --- what an auditor reads -----------------------------------------------------------------------


def source_key_events(source: Any) -> list[KeyEvent]:
    """The key entries' documents a log source publishes: its `ledger_key_events` table
    (a database source) or GET /v1/log/keys (a server; one without it has never rotated)."""
    if hasattr(source, "bind"):

        def q(conn: Connection) -> list[KeyEvent]:
            if key_events_table.name not in inspect(conn).get_table_names():
                return []
            return read_events(conn)

        return list(source._run(q))  # noqa: SLF001 - the source's own error mapping
    answer = source.log_keys()
    if answer is None:
        return []
    items, url = answer
    malformed = SourceMalformed(
        f"{url} is not a list of keys with documents (index, note, salt)",
        "check that --url is the server's base address; a server that answers this way is "
        "broken or hostile: report it to its operator",
    )
    if not isinstance(items, list):
        raise malformed
    events: dict[int, KeyEvent] = {}
    for key in items:
        documents = key.get("documents", []) if isinstance(key, dict) else None
        if not isinstance(documents, list):
            raise malformed
        for d in documents:
            event = _key_event(d)
            if event is None:
                raise malformed
            events[event.index] = event
    return sorted(events.values(), key=lambda e: e.index)


def _key_event(d: object) -> KeyEvent | None:
    """A key document as GET /v1/log/keys lists it, or None when it is not one."""
    if not isinstance(d, dict):
        return None
    index, note, salt = d.get("index"), d.get("note"), d.get("salt")
    if type(index) is not int or index < 0 or not isinstance(note, str):
        return None
    if not isinstance(salt, str):
        return None
    try:
        return KeyEvent(index, note, base64.b64decode(salt, validate=True))
    except ValueError:  # binascii.Error, or a plain ValueError for non-ASCII text
        return None


def source_keyset(source: Any, trusted: Sequence[Verifier]) -> KeySet | None:
    """The key set a log's own key entries define, each document checked against the entry
    it is published for; None when the log never rotated. Raises KeyRuleError."""
    events = source_key_events(source)
    if not events:
        return None
    try:
        origin = parse_checkpoint(split_note(source.checkpoint())[0]).origin
    except (NoteError, CheckpointError) as e:
        raise KeyRuleError(f"the log's latest checkpoint is malformed: {e}") from e
    for event in events:
        got = source.entries(event.index, event.index + 1)
        if not got:
            raise KeyRuleError(f"the source has no entry {event.index} for its key document")
        check_event_entry(event, got[0])
    keys = derive_keyset(origin, events, trusted)
    if not is_anchored(keys, trusted):
        raise KeyRuleError(
            "none of the --key keys is in the log's key set; pass a key the log published "
            "(GET /v1/log/keys)"
        )
    return keys
