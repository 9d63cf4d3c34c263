"""The log's signing keys over time: rotation with overlap, recorded in the log itself.

A log may hold several Ed25519 keys, all named after its origin (C2SP tlog-checkpoint: "the
key name ... is the origin") and told apart by their key ids (C2SP signed-note, "Signatures":
a note may carry several signature lines, and "verifiers ... MUST ignore signatures from
unknown keys"). A key is added and retired by `kind=key` entries of the log, so every verifier
learns its lifetime from the same tree it verifies.

Lifetime, in tree sizes (a checkpoint of size n covers entries 0..n-1): a key added by the
entry at index `a` and retired by the entry at index `r` is *active* for checkpoints of size
n with a < n <= r; the log's first key has no add entry and is active from size 0. The rule a
verifier applies to a checkpoint of size n:

1. every key active at n signed it (during an overlap: both the old and the new key);
2. no key of the set signed it outside its lifetime: a signature by a key whose retire entry
   lies inside the tree (r < n) is rejected ("signed by key K retired at size R"), and so is
   one by a key whose add entry does not (a >= n);
3. signatures by keys outside the set are ignored (signed-note, as for witnesses' cosignatures).

A key entry commits (salt and SHA-256, as every entry) to a *key document*, itself a signed
note:

    medledger-key/v1
    <origin>
    add | retire
    <vkey of the key>
    by <vkey>              one line per authorising key, each active at the entry's index

signed by every authorising key and, for `add`, by the new key too (proof of possession). The
first document's authorising keys are the log's first keys. Standard library, ``cryptography``.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from .checkpoint import Checkpoint, CheckpointError, parse_checkpoint
from .entry import EntryError, commitment, parse_entry
from .note import NoteError, Signature, Signer, Verifier, open_note, sign
from .note import split as split_note

DOCUMENT_HEADER = "medledger-key/v1"
ACTIONS = ("add", "retire")
KIND = "key"


class KeyRuleError(ValueError):
    """A key event or a checkpoint breaks the key lifetime rules."""


# --- the model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyLifetime:
    """One key as the log sees it: `added` / `retired` are the indexes of its key entries
    (`added` None: one of the log's first keys, active from the empty tree)."""

    verifier: Verifier
    added: int | None = None
    retired: int | None = None

    @property
    def ident(self) -> tuple[str, bytes]:
        return (self.verifier.name, self.verifier.key_id)

    def active_at(self, size: int) -> bool:
        """Whether a checkpoint of `size` must carry this key's signature (module docstring)."""
        started = self.added is None or self.added < size
        return started and (self.retired is None or size <= self.retired)

    def status(self) -> str:
        return "active" if self.retired is None else "retired"

    def to_json(self) -> dict[str, object]:
        return {
            "vkey": self.verifier.vkey(),
            "key_id": self.verifier.key_id.hex(),
            "added_at": self.added,
            "retired_at": self.retired,
            "status": self.status(),
        }


@dataclass(frozen=True)
class KeySet:
    """Every key a log ever signed with, in the order they were added."""

    keys: tuple[KeyLifetime, ...]

    @classmethod
    def first(cls, verifiers: Iterable[Verifier]) -> KeySet:
        """The key set of a log that has not rotated: its first keys, active from size 0."""
        ks = cls(tuple(KeyLifetime(v) for v in verifiers))
        if not ks.keys:
            raise KeyRuleError("a log needs at least one key")
        return ks

    def verifiers(self) -> list[Verifier]:
        return [k.verifier for k in self.keys]

    def find(self, ident: tuple[str, bytes]) -> KeyLifetime | None:
        return next((k for k in self.keys if k.ident == ident), None)

    def by_key_id(self, hex_id: str) -> KeyLifetime | None:
        return next((k for k in self.keys if k.verifier.key_id.hex() == hex_id.lower()), None)

    def active_at(self, size: int) -> list[KeyLifetime]:
        return [k for k in self.keys if k.active_at(size)]

    def current(self) -> list[KeyLifetime]:
        """The keys not retired: those that sign the next checkpoint."""
        return [k for k in self.keys if k.retired is None]

    def apply(self, index: int, action: str, key: Verifier) -> KeySet:
        """The set after the key entry at `index` (entries come in increasing index order)."""
        marks = [i for k in self.keys for i in (k.added, k.retired) if i is not None]
        last = max(marks, default=-1)
        if index <= last:
            raise KeyRuleError(f"key entry {index} is not after the key entry at {last}")
        found = self.find((key.name, key.key_id))
        label = f"{key.name}+{key.key_id.hex()}"
        if action == "add":
            if found is not None:
                raise KeyRuleError(f"key {label} is already in the key set; a key is added once")
            return KeySet((*self.keys, KeyLifetime(key, added=index)))
        if action != "retire":
            raise KeyRuleError(f"unknown key action {action!r}")
        if found is None:
            raise KeyRuleError(f"key {label} is not in the key set")
        if found.retired is not None:
            raise KeyRuleError(f"key {label} was already retired at {found.retired}")
        if [k.ident for k in self.current()] == [found.ident]:
            raise KeyRuleError(f"key {label} is the last active key: add another before retiring")
        return KeySet(tuple(replace(k, retired=index) if k is found else k for k in self.keys))

    def check_signatures(self, size: int, verified: Iterable[Signature | Verifier]) -> None:
        """Applies the lifetime rule to a checkpoint of `size` whose signatures by the keys
        in `verified` were checked. Raises KeyRuleError naming the offending key."""
        signed = {(s.name, s.key_id) for s in verified}
        for ident in sorted(signed):
            k = self.find(ident)
            if k is None:
                continue
            label = f"{ident[0]}+{ident[1].hex()}"
            if k.retired is not None and k.retired < size:
                raise KeyRuleError(
                    f"checkpoint of size {size} is signed by key {label} retired at size "
                    f"{k.retired} (its retire entry is in the tree)"
                )
            if k.added is not None and k.added >= size:
                raise KeyRuleError(
                    f"checkpoint of size {size} is signed by key {label}, added only by "
                    f"entry {k.added}"
                )
        for k in self.active_at(size):
            if k.ident not in signed:
                raise KeyRuleError(
                    f"checkpoint of size {size} lacks a signature by key {k.verifier.vkey()}, "
                    "active at that size"
                )

    def open_checkpoint(self, note: str, extra: Iterable[Verifier] = ()) -> Checkpoint:
        """Opens a signed checkpoint with every key of the set and applies the rule."""
        try:
            opened = open_note(note, [*self.verifiers(), *extra])
            cp = parse_checkpoint(opened.text)
        except (NoteError, CheckpointError) as e:
            raise KeyRuleError(str(e)) from e
        self.check_signatures(cp.size, opened.verified)
        return cp

    def to_json(self) -> list[dict[str, object]]:
        return [k.to_json() for k in self.keys]

    @classmethod
    def from_json(cls, items: object) -> KeySet:
        """The set published by GET /v1/log/keys (a list of key objects)."""
        if not isinstance(items, list) or not items:
            raise KeyRuleError("a key set is a non-empty JSON list of keys")
        keys = []
        for n, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("vkey"), str):
                raise KeyRuleError(f"key {n}: an object with a vkey string is required")
            try:
                v = Verifier.from_vkey(item["vkey"])
            except NoteError as e:
                raise KeyRuleError(f"key {n}: {e}") from e
            added, retired = item.get("added_at"), item.get("retired_at")
            for name, value in (("added_at", added), ("retired_at", retired)):
                if value is not None and (type(value) is not int or value < 0):
                    raise KeyRuleError(f"key {n}: {name} must be a non-negative integer or null")
            if added is not None and retired is not None and retired <= added:
                raise KeyRuleError(f"key {n}: retired_at must be after added_at")
            keys.append(KeyLifetime(v, added, retired))
        return cls(tuple(keys))


# --- key documents and key entries -----------------------------------------------------------


@dataclass(frozen=True)
class KeyDocument:
    origin: str
    action: str
    key: Verifier
    by: tuple[Verifier, ...]

    def text(self) -> str:
        lines = [DOCUMENT_HEADER, self.origin, self.action, self.key.vkey()]
        lines += [f"by {v.vkey()}" for v in self.by]
        return "\n".join(lines) + "\n"


def sign_key_document(
    origin: str, action: str, key: Verifier, by: Sequence[Signer], new: Signer | None = None
) -> str:
    """The signed note of a key document: signed by `by` and, for `add`, the new key."""
    if action not in ACTIONS:
        raise KeyRuleError(f"unknown key action {action!r}")
    if action == "add" and (new is None or new.verifier != key):
        raise KeyRuleError("an add document is signed by the new key itself")
    if not by:
        raise KeyRuleError("a key document needs an authorising key")
    doc = KeyDocument(origin, action, key, tuple(s.verifier for s in by))
    return sign(doc.text(), [*by, *([new] if action == "add" and new is not None else [])])


def parse_key_document(note: str) -> KeyDocument:
    """The document of a signed key note, signatures not yet checked."""
    try:
        text, _ = split_note(note)
        lines = text[:-1].split("\n")
        if len(lines) < 5 or lines[0] != DOCUMENT_HEADER:
            raise KeyRuleError(f"a key document starts with {DOCUMENT_HEADER} and has 5+ lines")
        origin, action, vkey, *by = lines[1:]
        if action not in ACTIONS:
            raise KeyRuleError(f"unknown key action {action!r}")
        if any(not b.startswith("by ") for b in by):
            raise KeyRuleError("key document lines after the key must read `by <vkey>`")
        return KeyDocument(
            origin, action, Verifier.from_vkey(vkey), tuple(Verifier.from_vkey(b[3:]) for b in by)
        )
    except NoteError as e:
        raise KeyRuleError(f"malformed key document: {e}") from e


@dataclass(frozen=True)
class KeyEvent:
    """A key entry's published document: the entry index, the signed note and its salt."""

    index: int
    note: str
    salt: bytes


def check_event_entry(event: KeyEvent, entry_bytes: bytes) -> None:
    """The log's entry at the event's index is a key entry committing to exactly the note."""
    try:
        entry = parse_entry(entry_bytes)
        c = commitment(event.salt, event.note.encode("utf-8"))
    except EntryError as e:
        raise KeyRuleError(f"key entry {event.index}: {e}") from e
    if entry.index != event.index or entry.kind != KIND:
        raise KeyRuleError(f"entry {event.index} is a {entry.kind!r} entry, not a key entry")
    if not hmac.compare_digest(c, entry.commit):
        raise KeyRuleError(f"key entry {event.index} does not commit to the published document")


def apply_event(keys: KeySet | None, origin: str, event: KeyEvent) -> KeySet:
    """The key set after one key entry, whose document must be signed by the keys it names,
    each active at the entry's index (the first document: any keys, the log's first ones)."""
    doc = parse_key_document(event.note)
    if doc.origin != origin:
        raise KeyRuleError(f"key entry {event.index} is for log {doc.origin!r}, not {origin!r}")
    if not doc.by:
        raise KeyRuleError(f"key entry {event.index} names no authorising key")
    if keys is None:
        keys = KeySet.first(doc.by)
    for v in doc.by:
        k = keys.find((v.name, v.key_id))
        if k is None or not k.active_at(event.index):
            raise KeyRuleError(
                f"key entry {event.index} is authorised by {v.vkey()}, which is not an active "
                "key of the log at that index"
            )
    signers = [*doc.by, *([doc.key] if doc.action == "add" else [])]
    try:
        opened = open_note(event.note, signers)
    except NoteError as e:
        raise KeyRuleError(f"key entry {event.index}: {e}") from e
    got = {(s.name, s.key_id) for s in opened.verified}
    for v in signers:
        if (v.name, v.key_id) not in got:
            raise KeyRuleError(f"key entry {event.index} is not signed by {v.vkey()}")
    return keys.apply(event.index, doc.action, doc.key)


def derive_keyset(origin: str, events: Iterable[KeyEvent], first: Sequence[Verifier]) -> KeySet:
    """The key set a log's key entries define; `first` when it has none (it never rotated)."""
    keys: KeySet | None = None
    for event in sorted(events, key=lambda e: e.index):
        keys = apply_event(keys, origin, event)
    return keys if keys is not None else KeySet.first(first)


def is_anchored(keys: KeySet, trusted: Iterable[Verifier]) -> bool:
    """Whether a derived key set contains a key the verifier trusts. Each add document is
    signed by the new key and an active one, so trust in any key extends along the chain."""
    return any(keys.find((v.name, v.key_id)) is not None for v in trusted)
