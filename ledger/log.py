"""The log: sequencing, group commit, signed checkpoints, receipts and proofs over a store.

Appends from many threads are queued and committed in batches by one writer thread: one
transaction, one fsync and one signed checkpoint per batch. A caller gets its receipt only
after its batch has committed. All tree state is read inside the write transaction, so
several processes may append to one database safely (the store's lock serialises them).
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, insert
from sqlalchemy.exc import DBAPIError, IntegrityError

from . import merkle, store
from .checkpoint import format_checkpoint, parse_checkpoint
from .entry import Entry, format_time, parse_entry
from .errors import DuplicateConflict, LedgerError, LedgerUnavailable, LogStateError
from .faults import fault_point
from .hash_cache import HashCache, RightEdgeCache
from .last_checkpoint import read_last_checkpoint, write_last_checkpoint
from .note import NoteError, Signer, Verifier, open_note, sign
from .note import split as split_note
from .receipt import Receipt, format_receipt

logger = logging.getLogger("ledger.log")

Clock = Callable[[], datetime]
RowWriter = Callable[[Connection, Entry], None]
SignersAt = Callable[[Connection, int], Sequence[Signer]]


@dataclass(frozen=True)
class Submission:
    """What a caller asks the log to append.

    `dedupe_keys` make a retry safe: when any key was seen before with the same `digest`,
    the original entry is answered and nothing is appended; with another digest the append
    fails with DuplicateConflict naming the key. `write` stores the caller's own rows in the
    same transaction as the entry, so neither exists without the other.
    """

    kind: str
    sender: str
    commit: bytes
    media: str = "application/fhir+json"
    subject: bytes | None = None
    dedupe_keys: tuple[str, ...] = ()
    digest: bytes = b""
    write: RowWriter | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Appended:
    entry: Entry
    entry_bytes: bytes
    receipt: str  # c2sp.org/tlog-proof@v1 against the checkpoint of the entry's batch
    checkpoint: str
    duplicate: bool  # True when a dedupe key matched: nothing was appended


@dataclass(frozen=True)
class _Fresh:
    entry: Entry
    data: bytes


class _Waiter:
    """What a blocking append waits on: a lock the writer releases once the result is set.

    The same three calls as a Future's writer side, at a fraction of a Future's cost, which
    matters when many threads append at once: each wake-up competes for the interpreter.
    """

    __slots__ = ("_done", "_result")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self._result: Appended | BaseException | None = None

    def set_running_or_notify_cancel(self) -> bool:
        return True  # a blocking caller cannot cancel

    def set_result(self, result: Appended) -> None:
        self._result = result
        self._done.release()

    def set_exception(self, exc: BaseException) -> None:
        self._result = exc
        self._done.release()

    def wait(self) -> Appended:
        self._done.acquire()
        if isinstance(self._result, BaseException):
            raise self._result
        assert self._result is not None
        return self._result


_Delivery = Future[Appended] | _Waiter


def _system_clock() -> datetime:
    return datetime.now(UTC)


class Log:
    """A signed, append-only RFC 6962 log over a SQLAlchemy store."""

    def __init__(
        self,
        engine: Engine,
        signer: Signer,
        *,
        origin: str | None = None,
        clock: Clock = _system_clock,
        max_batch: int = 1024,
        checkpoint_file: Path | None = None,
        signers_at: SignersAt | None = None,
        verifiers: Sequence[Verifier] = (),
    ) -> None:
        """Opens the log, creating its tables and first (empty) checkpoint if needed.

        Key rotation (ledger/keyset.py): `signers_at(conn, size)` names every key that signs
        the checkpoint of `size`, read inside the batch's transaction; without it `signer`
        signs alone. `signer` stays the primary key (the first active one), `signers` the
        keys of the latest checkpoint, and `verifiers` (the log's other public keys) are
        trusted when a stored checkpoint is reopened.

        `checkpoint_file` is a file outside the database where every signed checkpoint is
        also kept (ledger/last_checkpoint.py); when the store is behind it or contradicts it,
        the log opens read-only and `read_only_reason` says why.
        """
        self.engine = engine
        self.signer = signer
        self.signers: list[Signer] = [signer]
        self._signers_at = signers_at
        self._trusted = [signer.verifier, *verifiers]
        self.origin = origin or signer.name
        self.clock = clock
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[Submission, _Delivery] | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self.checkpoint_file = checkpoint_file
        self._file_lock = threading.Lock()
        self._file_size = -1
        self.read_only_reason: str | None = None
        self._hash_cache = HashCache()
        self._edges = RightEdgeCache()
        self._known_size = 0  # a size the log has reached; it only grows
        self._committed: list[Callable[[], None]] = []
        store.create_schema(engine)
        self._init_head()
        if checkpoint_file is not None:
            self.read_only_reason = self._check_checkpoint_file(checkpoint_file)

    # --- set-up --------------------------------------------------------------------------

    def _init_head(self) -> None:
        # The first head row is part of creating the log: two processes opening an empty
        # database at once must not both find no head and both insert one.
        with store.schema_transaction(self.engine) as conn:
            head = store.lock_head(conn)
            if head is None:
                note = self._sign_checkpoint(0, merkle.empty_root())
                conn.execute(
                    insert(store.head_table).values(
                        id=1, origin=self.origin, size=0, checkpoint=note
                    )
                )
                conn.execute(insert(store.checkpoints_table).values(size=0, note=note))
                return
        origin, size, note = head
        if origin != self.origin:
            raise LogStateError(
                f"this database holds the log {origin!r}, not {self.origin!r}; "
                "open it with its own origin or use another database"
            )
        cp = parse_checkpoint(open_note(note, self._trusted).text)
        if cp.size != size:
            raise LogStateError(f"head size {size} differs from its checkpoint size {cp.size}")

    def _sign_checkpoint(self, size: int, root: bytes, conn: Connection | None = None) -> str:
        fault_point("during-sign")
        signers = [self.signer]
        if self._signers_at is not None and conn is not None:
            signers = list(self._signers_at(conn, size))
            if not signers:
                raise LogStateError(f"no signing key is active for the checkpoint of size {size}")
        note = sign(format_checkpoint(self.origin, size, root), signers)
        self.signers, self.signer = signers, signers[0]
        return note

    def _advance_checkpoint_file(self, note: str) -> None:
        # Batches may finish out of order across threads: never move the file back.
        size = parse_checkpoint(split_note(note)[0]).size
        with self._file_lock:
            if size > self._file_size and self.checkpoint_file is not None:
                write_last_checkpoint(self.checkpoint_file, note)
                self._file_size = size

    def _check_checkpoint_file(self, path: Path) -> str | None:
        """Why the store cannot be trusted to extend what was already signed, or None."""
        note = read_last_checkpoint(path)
        if note is None:
            current = self.checkpoint()
            write_last_checkpoint(path, current)
            self._file_size = parse_checkpoint(split_note(current)[0]).size
            return None
        try:
            cp = parse_checkpoint(open_note(note, self._trusted).text)
        except (NoteError, ValueError) as e:
            return f"the checkpoint file {path} cannot be read ({e}); restore it or remove it"
        size = self.size()
        if cp.size > size:
            return (
                f"the store holds {size} entries but this log already signed a checkpoint of "
                f"size {cp.size} (kept in {path}): the database was restored from an older copy "
                "or rolled back. Restore the missing entries; appending now would fork the log"
            )
        if cp.size and self.root(cp.size) != cp.root:
            return (
                f"the store's first {cp.size} entries do not have the root of the checkpoint "
                f"this log signed (kept in {path}): the database was altered or replaced. "
                "Restore the original database; appending now would fork the log"
            )
        # What the file holds is the floor: a later batch must not write an older checkpoint.
        self._file_size = cp.size
        return None

    # --- appending -----------------------------------------------------------------------

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Calls `callback` after every batch that appended an entry, in the appending thread
        before the batch's callers are answered: it must return at once (set an event, wake
        a thread). What it raises is logged and ignored; the batch is committed anyway."""
        self._committed.append(callback)

    def append(self, sub: Submission) -> Appended:
        """Appends one submission; blocks until its batch has committed."""
        waiter = _Waiter()
        self._ensure_writer()
        self._queue.put((sub, waiter))
        return waiter.wait()

    def submit(self, sub: Submission) -> Future[Appended]:
        """Queues one submission for the next batch; the future resolves after commit."""
        fut: Future[Appended] = Future()
        self._ensure_writer()
        self._queue.put((sub, fut))
        return fut

    def _ensure_writer(self) -> None:
        # A writer that died (an unexpected error outside a batch) is replaced, so one
        # failure never leaves every later submission waiting forever.
        w = self._writer
        if w is not None and w.is_alive():
            return
        with self._writer_lock:
            if self._writer is None or not self._writer.is_alive():
                t = threading.Thread(target=self._run_writer, name="ledger-writer", daemon=True)
                t.start()
                self._writer = t

    def close(self) -> None:
        """Stops the writer after the queued batches are committed."""
        with self._writer_lock:
            if self._writer is not None:
                self._queue.put(None)
                self._writer.join()
                self._writer = None

    def _run_writer(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            # A caller that cancelled before its batch started is not appended at all;
            # afterwards its future can no longer be cancelled, so setting it cannot fail.
            live = [(s, f) for s, f in batch if f.set_running_or_notify_cancel()]
            if live:
                self._settle(live)
            if stop:
                return

    @staticmethod
    def _deliver(fut: _Delivery, res: Appended | BaseException) -> None:
        try:
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)
        except InvalidStateError:
            pass  # already settled: the writer must live on for the other callers

    def _settle(self, batch: list[tuple[Submission, _Delivery]]) -> None:
        try:
            results: Sequence[Appended | BaseException] = self.append_batch([s for s, _ in batch])
        except BaseException as e:  # noqa: BLE001 - every waiter must hear of it
            results = [e] * len(batch)
        for (_, fut), res in zip(batch, results, strict=True):
            self._deliver(fut, res)

    def append_batch(
        self, subs: Sequence[Submission], *, receipts: bool = True
    ) -> list[Appended | LedgerError]:
        """Appends submissions in one transaction under one signed checkpoint.

        A submission that fails on its own (a dedupe conflict, a failing row writer) gets
        its error in the returned list without affecting the others. Errors of the store
        itself raise LedgerUnavailable and append nothing. With `receipts=False` (bulk
        loads) fresh entries are answered with an empty `receipt`: the entries, hashes and
        checkpoint are stored exactly as otherwise, and `receipt(index)` builds one later.
        """
        if self.read_only_reason is not None:
            raise LogStateError(f"the log is read-only: {self.read_only_reason}")
        try:
            with store.write_transaction(self.engine) as conn:
                results, tip = self._append_locked(conn, subs, receipts)
        except (DBAPIError, LookupError) as e:
            raise LedgerUnavailable(f"the ledger store cannot be written: {e}") from e
        # Committed now: the next batch starts from this tip without reading it back.
        self._hash_cache.keep(tip)
        # Only a fresh entry carries this batch's checkpoint; a duplicate carries the older
        # checkpoint it was first answered with, which must never replace a newer one.
        fresh = next((r for r in results if isinstance(r, Appended) and not r.duplicate), None)
        if self.checkpoint_file is not None and fresh is not None:
            self._advance_checkpoint_file(fresh.checkpoint)
        fault_point("after-commit")
        if fresh is not None:
            for callback in self._committed:
                try:
                    callback()
                except Exception:  # noqa: BLE001 - a listener never fails a committed batch
                    logger.exception("a commit listener failed")
        return results

    def _append_locked(
        self, conn: Connection, subs: Sequence[Submission], receipts: bool = True
    ) -> tuple[list[Appended | LedgerError], dict[int, bytes]]:
        """The batch's results, and the stored hashes of its tree's tip (frontier and last
        leaf) for the cache once the transaction has committed."""
        head = store.lock_head(conn)
        if head is None:
            raise LogStateError("the log has no head row; open it with Log() first")
        fault_point("after-lock")
        _, size0, _ = head
        # The size is read under the lock; the hashes of a committed size never change, so
        # they may come from the cache (another process's appends give another size).
        frontier, prev = self._frontier_and_last_leaf(conn, size0)
        all_keys = [k for s in subs for k in s.dedupe_keys]
        seen = store.read_dedupe(conn, all_keys)
        now = format_time(self.clock())

        size = size0
        new_hashes: dict[int, bytes] = {}
        entry_rows: list[dict[str, object]] = []
        outcome: list[_Fresh | int | LedgerError] = []
        for sub in subs:
            dup = self._match_dedupe(sub, seen)
            if dup is not None:
                outcome.append(dup)  # the earlier index, or the conflict
                continue
            entry = Entry(size, prev, now, sub.kind, sub.sender, sub.commit, sub.media, sub.subject)
            try:
                data = entry.to_bytes()
            except ValueError as e:
                outcome.append(LedgerError(f"invalid entry: {e}"))
                continue
            if sub.write is not None or sub.dedupe_keys:
                err = self._write_side_rows(conn, sub, entry)
                if err is not None:
                    outcome.append(err)
                    continue
            for k in sub.dedupe_keys:
                seen[k] = (size, sub.digest)
            leaf = merkle.leaf_hash(data)
            stored, frontier = merkle.append_leaf(frontier, size, leaf)
            new_hashes.update(stored)
            entry_rows.append({"idx": size, "prev": prev, "data": data})
            outcome.append(_Fresh(entry, data))
            prev = leaf
            size += 1

        if entry_rows:
            conn.execute(store.INSERT_ENTRIES, entry_rows)
            conn.execute(
                store.INSERT_HASHES, [{"idx": i, "hash": h} for i, h in new_hashes.items()]
            )
        fault_point("after-insert")
        if size == size0:
            note = head[2]
        else:
            note = self._sign_checkpoint(size, merkle.fold_frontier(frontier), conn)
            conn.execute(store.INSERT_CHECKPOINT, {"size": size, "note": note})
            conn.execute(store.UPDATE_HEAD, {"new_size": size, "new_checkpoint": note})
        edge = merkle.right_edge(frontier)
        tip = dict(zip(merkle.frontier_indexes(size), frontier, strict=True))
        if size:
            tip[merkle.stored_hash_index(0, size - 1)] = prev
        return self._receipts(conn, outcome, size, note, new_hashes, edge, receipts), tip

    def _frontier_and_last_leaf(self, conn: Connection, size: int) -> tuple[list[bytes], bytes]:
        """The frontier of a tree of `size` committed leaves and its last leaf hash, in at
        most one query."""
        if size == 0:
            return [], b""
        front = merkle.frontier_indexes(size)
        hashes = self._hash_cache.read(
            [*front, merkle.stored_hash_index(0, size - 1)],
            lambda ix: store.read_hashes(conn, ix),
        )
        return hashes[:-1], hashes[-1]

    def _match_dedupe(
        self, sub: Submission, seen: dict[str, tuple[int, bytes]]
    ) -> int | LedgerError | None:
        for k in sub.dedupe_keys:
            hit = seen.get(k)
            if hit is None:
                continue
            idx, digest = hit
            if digest != sub.digest:
                return DuplicateConflict(k, idx)
            return idx
        return None

    def _write_side_rows(
        self, conn: Connection, sub: Submission, entry: Entry
    ) -> LedgerError | None:
        # A savepoint per submission: one failing caller must not abort the others' batch.
        sp = conn.begin_nested()
        try:
            if sub.dedupe_keys:
                conn.execute(
                    store.INSERT_DEDUPE,
                    [{"key": k, "idx": entry.index, "digest": sub.digest} for k in sub.dedupe_keys],
                )
            if sub.write is not None:
                sub.write(conn, entry)
        except IntegrityError as e:
            sp.rollback()
            return LedgerError(f"the submission conflicts with stored data: {e.orig}")
        except LedgerError as e:
            sp.rollback()
            return e
        sp.commit()
        return None

    def _receipts(
        self,
        conn: Connection,
        outcome: Sequence[_Fresh | int | LedgerError],
        size: int,
        note: str,
        fresh: dict[int, bytes],
        edge: Sequence[bytes],
        build: bool = True,
    ) -> list[Appended | LedgerError]:
        # One read for every proof of the batch: most hashes are fresh, the rest are shared,
        # and so is the right edge of the batch's tree.
        plans: dict[int, merkle.ProofPlan] = {}
        if build:
            for item in outcome:
                if isinstance(item, _Fresh):
                    i = item.entry.index
                    plans[i] = merkle.inclusion_plan(i, size)
        wanted = {i for p in plans.values() for i in p.stored}
        # Hashes from before this batch are committed, so they may go through the cache.
        old = sorted(wanted - fresh.keys())
        old_hashes = self._hash_cache.read(old, lambda ix: store.read_hashes(conn, ix))
        known = {**fresh, **dict(zip(old, old_hashes, strict=True))}
        results: list[Appended | LedgerError] = []
        for item in outcome:
            if isinstance(item, LedgerError):
                results.append(item)
            elif isinstance(item, int):
                results.append(self._original(conn, item))
            elif not build:
                results.append(Appended(item.entry, item.data, "", note, False))
            else:
                i = item.entry.index
                plan = plans[i]
                proof = merkle.proof_from(plan, [known[j] for j in plan.stored], edge)
                receipt = format_receipt(Receipt(i, tuple(proof), note, item.data))
                results.append(Appended(item.entry, item.data, receipt, note, False))
        return results

    def _original(self, conn: Connection, index: int) -> Appended:
        """The receipt an earlier append of `index` was answered with, rebuilt exactly."""
        data = store.read_entries(conn, index, index + 1)[0]
        size, note = store.read_checkpoint_covering(conn, index) or (0, "")
        proof = merkle.inclusion_proof(index, size, lambda ix: store.read_hashes(conn, ix))
        receipt = format_receipt(Receipt(index, tuple(proof), note, data))
        return Appended(parse_entry(data), data, receipt, note, True)

    # --- reading -------------------------------------------------------------------------

    def checkpoint(self) -> str:
        """The latest signed checkpoint."""
        with self.engine.connect() as conn:
            head = store.read_head(conn)
        if head is None:
            raise LogStateError("the log is not initialised")
        return head[2]

    def size(self) -> int:
        with self.engine.connect() as conn:
            head = store.read_head(conn)
        return 0 if head is None else head[1]

    def entries(self, start: int, end: int) -> list[bytes]:
        with self.engine.connect() as conn:
            return store.read_entries(conn, start, end)

    def stored_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        """The hashes at the given stored-hash indexes (tlog.StoredHashIndex), in order."""
        with self.engine.connect() as conn:
            return store.read_hashes(conn, indexes)

    def root(self, size: int) -> bytes:
        self._check_size(size)
        return merkle.tree_hash(size, self._read_hashes)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        self._check_size(size)
        return self._prove(merkle.inclusion_plan(index, size), size)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        self._check_size(size2)
        return self._prove(merkle.consistency_plan(size1, size2), size2)

    def _prove(self, plan: merkle.ProofPlan, size: int) -> list[bytes]:
        if plan.at < 0:
            return self._read_hashes(plan.stored)
        edge = self._edges.get(size)
        if edge is None:  # one read for the path and the frontier of `size`
            front = merkle.frontier_indexes(size)
            hashes = self._read_hashes([*plan.stored, *front])
            k = len(plan.stored)
            edge = merkle.right_edge(hashes[k:])
            self._edges.put(size, edge)
            return merkle.proof_from(plan, hashes[:k], edge)
        proof = self._read_hashes(plan.stored)  # a fresh list: ours to change
        proof.insert(plan.at, edge[plan.edge])
        return proof

    def _check_size(self, size: int) -> None:
        """Refuse a tree larger than the log; the head is read only when `size` is beyond
        the largest size seen, because a log never shrinks while it is open."""
        if size <= self._known_size:
            return
        with self.engine.connect() as conn:
            head = store.read_head(conn)
        self._known_size = max(self._known_size, 0 if head is None else head[1])
        if size > self._known_size:
            raise merkle.ProofError(f"the log has fewer than {size} entries")

    def _read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        """Stored hashes of the committed tree, through the cache (a connection only for
        those it lacks): stored hashes never change, so no transaction needs to span the
        size check and the reads."""
        return self._hash_cache.read(indexes, self._read_stored)

    def _read_stored(self, indexes: list[int]) -> list[bytes]:
        with self.engine.connect() as conn:
            return store.read_hashes(conn, indexes)

    def receipt(self, index: int) -> str:
        """A receipt for entry `index` against the latest checkpoint."""
        with self.engine.connect() as conn:
            head = store.read_head(conn)
            if head is None or index >= head[1] or index < 0:
                raise merkle.ProofError(f"no entry {index} in the log")
            size, note = head[1], head[2]
            data = store.read_entries(conn, index, index + 1)[0]
        proof = self._prove(merkle.inclusion_plan(index, size), size)
        return format_receipt(Receipt(index, tuple(proof), note, data))

    def receipt_at(self, index: int, note: str) -> str:
        """A receipt for entry `index` against `note`, a checkpoint of this log given
        verbatim (a witnessed one keeps its cosignature lines): the inclusion proof is for
        the note's size, whose root must be the log's. Raises ProofError when the entry is
        not in that tree, LogStateError when the note is not of this log's tree."""
        try:
            cp = parse_checkpoint(split_note(note)[0])
        except (NoteError, ValueError) as e:
            raise LogStateError(f"not a checkpoint: {e}") from e
        if cp.origin != self.origin:
            raise LogStateError(f"a checkpoint of {cp.origin!r}, not of {self.origin!r}")
        if not 0 <= index < cp.size:
            raise merkle.ProofError(f"no entry {index} in the tree of size {cp.size}")
        if self.root(cp.size) != cp.root:
            raise LogStateError(f"the checkpoint's root is not this log's at size {cp.size}")
        data = self.entries(index, index + 1)[0]
        proof = self._prove(merkle.inclusion_plan(index, cp.size), cp.size)
        return format_receipt(Receipt(index, tuple(proof), note, data))

    def original_receipt(self, index: int) -> Appended:
        """The receipt entry `index` was first answered with."""
        with self.engine.connect() as conn:
            return self._original(conn, index)

    def checkpoints(self, start_size: int = 0) -> list[tuple[int, str]]:
        """Every checkpoint the log signed from `start_size` on, oldest first."""
        with self.engine.connect() as conn:
            return store.read_checkpoints(conn, start_size)


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()
