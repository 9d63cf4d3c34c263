"""A witness's state: one SQLite file holding its name, the latest checkpoint it cosigned for
each log, and the refused checkpoints that might be evidence.

SQLite in WAL mode with synchronous=FULL: a checkpoint is on disk before the witness answers
with its cosignature (c2sp.org/tlog-witness: "The witness MUST persist the new checkpoint
before responding"). The latest checkpoint of a log only moves forward: advance() compares
the size the caller checked against with the size held, and writes, in one BEGIN IMMEDIATE
transaction, so of two concurrent requests built on the same old size one wins and the other
is told the new size (409), never rolling the log back. Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..merkle import Hash

MAX_REFUSALS_PER_LOG = 1000
"""Refused checkpoints kept per log, newest first; only a log's own key can add one."""

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS witness_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS witness_logs ("
    " origin TEXT PRIMARY KEY,"
    " origin_hash TEXT NOT NULL UNIQUE,"  # hex SHA-256 of the origin: the monitoring path
    " size INTEGER NOT NULL CHECK (size >= 0),"
    " root BLOB NOT NULL,"
    " note TEXT NOT NULL,"  # the checkpoint, its verified log signatures and our cosignature
    " cosigned_at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS witness_refusals ("
    " id INTEGER PRIMARY KEY,"
    " origin TEXT NOT NULL,"
    " at INTEGER NOT NULL,"
    " status INTEGER NOT NULL,"
    " reason TEXT NOT NULL,"
    " old_size INTEGER NOT NULL,"
    " proof TEXT NOT NULL,"  # the consistency proof lines as submitted
    " note TEXT NOT NULL,"  # the refused checkpoint, verbatim
    " held TEXT)",  # the witness's latest checkpoint of that log at the time
    "CREATE INDEX IF NOT EXISTS witness_refusals_origin ON witness_refusals (origin, id)",
)


class WitnessStoreError(Exception):
    """The witness's database cannot be opened, read or written."""


@dataclass(frozen=True)
class Held:
    """The latest checkpoint a witness cosigned for one log."""

    origin: str
    size: int
    root: Hash
    note: str
    cosigned_at: int


@dataclass(frozen=True)
class Refusal:
    """A validly signed checkpoint the witness refused, and what it held then."""

    id: int
    origin: str
    at: int
    status: int
    reason: str
    old_size: int
    proof: str
    note: str
    held: str | None


def origin_hash(origin: str) -> str:
    """The lower-case hex SHA-256 of an origin: the path of its monitoring checkpoint."""
    return hashlib.sha256(origin.encode()).hexdigest()


class WitnessStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:  # created 0600 before SQLite opens it: its -wal and -shm files take its mode
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError as e:
            raise WitnessStoreError(f"cannot create the witness database {path}: {e}") from e
        with self._connect() as conn:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise WitnessStoreError(f"{path}: SQLite refused WAL mode ({mode})")
            for statement in _SCHEMA:
                conn.execute(statement)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One connection per operation: requests run on many threads, and opening SQLite is
        # cheap beside an Ed25519 verification.
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as e:
            raise WitnessStoreError(f"cannot open the witness database {self.path}: {e}") from e
        try:
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=30000")
            yield conn
        except sqlite3.Error as e:
            raise WitnessStoreError(f"witness database {self.path}: {e}") from e
        finally:
            conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from its start (BEGIN IMMEDIATE):
        what it reads cannot change before it commits."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def get_meta(self, key: str) -> str | None:
        with self._connect() as conn:
            row = conn.execute("SELECT value FROM witness_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO witness_meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def held(self, origin: str) -> Held | None:
        """The latest checkpoint cosigned for `origin`, or None when there is none."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT origin, size, root, note, cosigned_at FROM witness_logs WHERE origin = ?",
                (origin,),
            ).fetchone()
        return None if row is None else Held(row[0], row[1], bytes(row[2]), row[3], row[4])

    def held_by_hash(self, hex_hash: str) -> Held | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT origin, size, root, note, cosigned_at FROM witness_logs "
                "WHERE origin_hash = ?",
                (hex_hash,),
            ).fetchone()
        return None if row is None else Held(row[0], row[1], bytes(row[2]), row[3], row[4])

    def advance(
        self, origin: str, old_size: int, size: int, root: Hash, note: str, cosigned_at: int
    ) -> int | None:
        """Records (size, root, note) as the latest checkpoint of `origin` if the size held is
        still `old_size` (0 when none is held), atomically. Returns None when written, else
        the size held now, which the caller's checks were not made against."""
        if size < old_size:
            raise ValueError("a witness never records a smaller tree")
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT size FROM witness_logs WHERE origin = ?", (origin,)
            ).fetchone()
            held = 0 if row is None else int(row[0])
            if held != old_size:
                return held  # nothing written: the transaction commits empty
            values = (size, root, note, cosigned_at, origin)
            if row is None:
                conn.execute(
                    "INSERT INTO witness_logs (size, root, note, cosigned_at, origin, "
                    "origin_hash) VALUES (?, ?, ?, ?, ?, ?)",
                    (*values, origin_hash(origin)),
                )
            else:
                conn.execute(
                    "UPDATE witness_logs SET size = ?, root = ?, note = ?, cosigned_at = ? "
                    "WHERE origin = ?",
                    values,
                )
        return None

    def add_refusal(self, r: Refusal) -> None:
        """Keeps a refused, validly signed checkpoint (the newest MAX_REFUSALS_PER_LOG)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO witness_refusals (origin, at, status, reason, old_size, proof, "
                "note, held) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (r.origin, r.at, r.status, r.reason, r.old_size, r.proof, r.note, r.held),
            )
            conn.execute(
                "DELETE FROM witness_refusals WHERE origin = ? AND id NOT IN (SELECT id "
                "FROM witness_refusals WHERE origin = ? ORDER BY id DESC LIMIT ?)",
                (r.origin, r.origin, MAX_REFUSALS_PER_LOG),
            )

    def refusals(self, origin: str | None = None) -> list[Refusal]:
        """Refused checkpoints, oldest first (of one log, or all)."""
        q = (
            "SELECT id, origin, at, status, reason, old_size, proof, note, held "
            "FROM witness_refusals"
        )
        args: tuple[str, ...] = ()
        if origin is not None:
            q += " WHERE origin = ?"
            args = (origin,)
        with self._connect() as conn:
            rows = conn.execute(q + " ORDER BY id", args).fetchall()
        return [Refusal(*row) for row in rows]
