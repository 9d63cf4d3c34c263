"""The auditor's memory between runs: the last checkpoint it verified and the tree's frontier.

A state file lets the next audit resume in O(new entries) and prove that the log only grew:
it holds the signed checkpoint (size, root and the note verbatim), the hashes of the maximal
complete subtrees of that tree (its frontier, which fold to the root, RFC 6962 section 2.1)
and the last leaf hash (the next entry's `prev`). The file is JSON with a SHA-256 checksum of
its other fields (their RFC 8785 form), and is replaced atomically: temporary file in the
same directory, fsync, rename, fsync of the directory.

A state file that cannot be read, fails its checksum or contradicts itself is a local
problem (StateError), never evidence against a log.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .. import merkle
from ..checkpoint import CheckpointError, parse_checkpoint
from ..encoding import b64
from ..jcs import canonicalize
from ..note import NoteError, Verifier, open_note
from ..untrusted import InputRejected, read_base64, read_file, read_json, read_uint

STATE_FORMAT = "medledger-audit-state/v1"
MAX_STATE_BYTES = 1 << 20
"""Larger state files are refused unread: one holds a checkpoint and at most 64 hashes."""


class StateError(Exception):
    """The state file is unreadable, corrupted, or not for the given keys. Exit 3."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class AuditState:
    """The last checkpoint an audit verified, with the frontier of its tree."""

    origin: str
    size: int
    root: bytes
    checkpoint: str  # the signed note, verbatim
    frontier: tuple[bytes, ...]
    last_leaf: bytes  # leaf hash of entry size-1; b"" when size is 0
    source: str = ""  # where it was read from (informational)
    saved: str = ""  # RFC 3339 time of saving (informational)

    def to_json(self) -> bytes:
        body = self._body()
        body["sha256"] = hashlib.sha256(canonicalize(body)).hexdigest()
        return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()

    def _body(self) -> dict[str, object]:
        return {
            "format": STATE_FORMAT,
            "origin": self.origin,
            "size": self.size,
            "root": b64(self.root),
            "checkpoint": self.checkpoint,
            "frontier": [b64(h) for h in self.frontier],
            "last_leaf": b64(self.last_leaf),
            "source": self.source,
            "saved": self.saved,
        }


def _bad(path: Path, what: str) -> StateError:
    return StateError(
        f"audit state {path} is corrupted: {what}",
        f"restore {path} from a backup, or move it aside to start a full audit afresh "
        "(the next audit then re-checks the whole log but cannot compare with the old state)",
    )


def parse_state(data: bytes, path: Path, verifiers: Iterable[Verifier]) -> AuditState:
    """Parses and checks a state file's bytes; raises StateError naming what is wrong."""
    try:
        obj = read_json(data, MAX_STATE_BYTES)
    except InputRejected as e:
        raise _bad(path, f"not a state file's JSON ({e})") from e
    if not isinstance(obj, dict) or obj.get("format") != STATE_FORMAT:
        raise _bad(path, f"not a {STATE_FORMAT} file")
    want = obj.pop("sha256", None)
    try:
        have = hashlib.sha256(canonicalize(obj)).hexdigest()
    except ValueError as e:
        raise _bad(path, f"holds a value with no canonical form ({e})") from e
    if want != have:
        raise _bad(path, "checksum mismatch (the file was altered or partly written)")
    try:
        state = AuditState(
            origin=_str(obj, "origin"),
            size=read_uint(obj["size"], "size"),
            root=_hash(obj["root"], "root"),
            checkpoint=_str(obj, "checkpoint"),
            frontier=tuple(_hash(h, "a frontier hash") for h in _list(obj, "frontier")),
            last_leaf=_hash(obj["last_leaf"], "last_leaf", empty=True),
            source=_str(obj, "source"),
            saved=_str(obj, "saved"),
        )
    except KeyError as e:
        raise _bad(path, f"field {e} is missing") from e
    except InputRejected as e:
        raise _bad(path, str(e)) from e
    _check_consistent(state, path, list(verifiers))
    return state


def _check_consistent(s: AuditState, path: Path, verifiers: list[Verifier]) -> None:
    if len(s.frontier) != bin(s.size).count("1"):
        raise _bad(path, f"{len(s.frontier)} frontier hashes cannot describe a tree of {s.size}")
    if merkle.fold_frontier(s.frontier) != s.root:
        raise _bad(path, "its frontier hashes do not fold to its root")
    if (s.size == 0) != (s.last_leaf == b""):
        raise _bad(path, "last_leaf must be empty exactly when size is 0")
    if s.size & 1 and s.frontier[-1] != s.last_leaf:
        raise _bad(path, "last_leaf is not the last frontier hash of an odd-sized tree")
    try:
        opened = open_note(s.checkpoint, verifiers)
        cp = parse_checkpoint(opened.text)
    except NoteError as e:
        names = ", ".join(sorted({f"{v.name}+{v.key_id.hex()}" for v in verifiers}))
        raise StateError(
            f"audit state {path} holds a checkpoint the given keys do not verify ({e})",
            f"pass the key that log signs with (--key; several are allowed during a key "
            f"rotation; given: {names}), or use a separate --state file for each log",
        ) from e
    except CheckpointError as e:
        raise _bad(path, f"its checkpoint is malformed ({e})") from e
    if (cp.origin, cp.size, cp.root) != (s.origin, s.size, s.root):
        raise _bad(path, "its checkpoint does not match its origin, size and root")
    if not any(sig.name == cp.origin for sig in opened.verified):
        raise _bad(path, f"its checkpoint for {cp.origin!r} is not signed by that log's key")


def _str(obj: dict[str, object], key: str) -> str:
    v = obj[key]
    if not isinstance(v, str):
        raise InputRejected(f"{key} must be a string")
    return v


def _list(obj: dict[str, object], key: str) -> list[object]:
    v = obj[key]
    if not isinstance(v, list):
        raise InputRejected(f"{key} must be a list")
    return v


def _hash(v: object, what: str, empty: bool = False) -> bytes:
    return read_base64(v, what, size=merkle.HASH_SIZE, empty=empty)


def load_state(path: Path, verifiers: Iterable[Verifier]) -> AuditState | None:
    """The state saved at `path`, or None when there is none yet (a first audit)."""
    try:
        data = read_file(path, MAX_STATE_BYTES)
    except FileNotFoundError:
        return None
    except InputRejected as e:
        raise _bad(path, str(e)) from e
    except OSError as e:
        raise StateError(
            f"cannot read audit state {path}: {e.strerror}",
            f"check the permissions of {path} and its directory",
        ) from e
    return parse_state(data, path, verifiers)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replaces `path` with `data` so a crash leaves the old or the new file, never a mix.

    Temporary file in the same directory, write, fsync, os.replace, fsync of the directory.
    """
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def save_state(path: Path, state: AuditState) -> None:
    """Writes the state atomically; raises StateError when the directory is not writable."""
    try:
        atomic_write(path, state.to_json())
    except OSError as e:
        raise StateError(
            f"cannot write audit state {path}: {e.strerror}",
            f"make {path.parent} writable, or pass another --state path",
        ) from e
