"""What the HTTP layer stands on: the open log, intake, clients, and the submission of a Bundle.

One process holds the log and sequences every append (group commit, one writer thread).
Intake (strict JSON + R4B validation) is CPU-bound pure Python, so a server can run it in a
pool of worker processes; they hand back only the few facts the ledger needs, never the
parsed document.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import multiprocessing
import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection, Engine, insert

from exchange.bundles import store as db
from exchange.config import Settings
from exchange.errors import (
    Conflict,
    Forbidden,
    PreconditionFailed,
    Throttled,
    Unavailable,
    Unprocessable,
)
from exchange.identity.clients import Client, ClientCache
from exchange.intake import IntakeError, IntakeLimits
from exchange.intake.worker import Checked, Refusal, check, check_in_worker, warm
from exchange.registry import institutions
from exchange.vault import vault
from ledger.entry import SALT_SIZE, Entry, commitment
from ledger.errors import DuplicateConflict, LedgerError, LedgerUnavailable, LogStateError
from ledger.log import Appended, Log, Submission

log = logging.getLogger("medledger.exchange")

# Without intake workers, bodies up to this size are validated on the event loop: under the GIL
# a thread would not run them faster. Larger ones go to a thread so the loop keeps answering.
INLINE_INTAKE_BYTES = 64 * 1024


# --- intake -------------------------------------------------------------------------------


class IntakeRunner:
    """Runs intake inline, or in `workers` processes once started.

    `ready` says whether a submission's intake would start at once: the models are loaded
    (inline), or every worker has started and warmed. Starting a pool returns at once: its
    workers are started by a thread, because starting one waits until the fork server has
    loaded the models, and a submission that comes sooner waits for them off the event loop.
    """

    def __init__(self, limits: IntakeLimits, workers: int = 0) -> None:
        self.limits = limits
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._inline_warm = False
        # Resolves to one future per worker, each done once that worker is up and warm.
        self._warming: Future[list[Future[int]]] = Future()

    def start(self) -> None:
        if self.workers == 0:
            if not self._inline_warm:
                warm()
                self._inline_warm = True
        elif self._pool is None:
            self._pool = self._new_pool()

    @property
    def ready(self) -> bool:
        if self.workers == 0:
            return self._inline_warm
        if self._pool is None or not self._warming.done() or self._warming.exception():
            return False
        return all(f.done() and not f.cancelled() and f.exception() is None
                   for f in self._warming.result())  # fmt: skip

    def _new_pool(self) -> ProcessPoolExecutor:
        # A fork server: the workers never inherit the server's threads or open database.
        if "forkserver" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("forkserver")
            # Not the default ["__main__"]: a script without a main guard would run again.
            ctx.set_forkserver_preload(["exchange.intake.warmed"])
        else:
            ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=warm)
        warming: Future[list[Future[int]]] = Future()
        self._warming = warming
        threading.Thread(
            target=self._start_workers, args=(pool, warming), name="intake-start", daemon=True
        ).start()
        return pool

    def _start_workers(self, pool: ProcessPoolExecutor, warming: Future[list[Future[int]]]) -> None:
        # The pool starts a worker per submission while none is idle: one probe each.
        try:
            warming.set_result([pool.submit(os.getpid) for _ in range(self.workers)])
        except (RuntimeError, BrokenProcessPool) as e:  # shut down or broken meanwhile
            warming.set_exception(e)

    async def _until_started(self) -> None:
        try:
            probes = await asyncio.wrap_future(self._warming)
            await asyncio.gather(*(asyncio.wrap_future(f) for f in probes))
        except Exception:  # noqa: BLE001  (the submission itself meets the broken pool)
            pass

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    async def check(self, body: bytes, content_type: str | None) -> Checked:
        pool = self._pool
        if pool is None:
            if len(body) <= INLINE_INTAKE_BYTES:
                return check(body, content_type, self.limits)
            return await run_in_threadpool(check, body, content_type, self.limits)
        if not self.ready:
            # Submitting now could block the event loop until the workers are up.
            await self._until_started()
        try:
            result = await asyncio.wrap_future(
                pool.submit(check_in_worker, body, content_type, self.limits)
            )
        except BrokenProcessPool as e:
            log.error("an intake worker died; restarting the pool")
            if self._pool is pool:
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
            raise Unavailable("intake was interrupted: retry the request") from e
        if isinstance(result, Refusal):
            raise IntakeError(result.status, result.issues)
        return result


# --- admission ----------------------------------------------------------------------------


class Admission:
    """A cap on submissions in flight, shared fairly, so a burst is told to retry (429) instead
    of queueing unbounded request bodies in memory, and no one client can take every slot.

    A client may hold at most `limit // (holders + 1)` slots, `holders` being the clients that
    hold one, itself included: alone it gets half, and a newcomer always finds a slot until
    the cap itself is reached. Used from the event loop only.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0
        self._held: dict[str, int] = {}

    def share(self, client: str) -> int:
        """The slots `client` may hold while the current holders hold theirs."""
        holders = len(self._held) + (client not in self._held)
        return max(1, self.limit // (holders + 1))

    @contextmanager
    def enter(self, client: str) -> Iterator[None]:
        mine = self._held.get(client, 0)
        if self.busy >= self.limit:
            raise Throttled(
                f"{self.limit} submissions are in flight: retry after a second",
                retry_after=1,
            )
        if mine >= self.share(client):
            raise Throttled(
                f"this client already has {mine} submissions in flight, its fair share of the "
                f"{self.limit} slots: retry after a second",
                retry_after=1,
            )
        self.busy += 1
        self._held[client] = mine + 1
        try:
            yield
        finally:
            self.busy -= 1
            left = self._held[client] - 1
            if left:
                self._held[client] = left
            else:
                del self._held[client]


# --- the services -------------------------------------------------------------------------


@dataclass
class Services:
    settings: Settings
    log: Log
    limits: IntakeLimits
    intake: IntakeRunner
    clients: ClientCache
    pseudonym_key: bytes  # keys lookup tags (pseudonym()), never an entry's subject
    admission: Admission
    vault: vault.Vault
    senders: institutions.SenderCache
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def engine(self) -> Engine:
        return self.log.engine

    def close(self) -> None:
        self.intake.close()
        self.clients.epoch.close()
        self.log.close()
        self.engine.dispose()


def open_services(
    settings: Settings,
    *,
    limits: IntakeLimits | None = None,
    intake_workers: int = 0,
    intake: IntakeRunner | None = None,
    max_in_flight: int = 128,
) -> Services:
    """The services of one log instance. `intake`, when given, is a runner started before
    (its workers warm while the store opens); else one of `intake_workers` is made."""
    ledger_log = settings.open_log()
    db.create_schema(ledger_log.engine)
    institutions.create_tables(ledger_log.engine)
    if intake is None:
        intake = IntakeRunner(limits or IntakeLimits(), intake_workers)
    limits = intake.limits
    lookup_key = db.secret(ledger_log.engine, db.PSEUDONYM_KEY)
    master = settings.vault_master_key(vault_is_empty=vault.is_empty(ledger_log.engine))
    # It reads the indexes and uses dedupe_keys, which import this module.
    from exchange.privacy.upgrade import open_vault

    opened = open_vault(ledger_log.engine, master, lookup_key)
    return Services(
        settings=settings,
        log=ledger_log,
        limits=limits,
        intake=intake,
        clients=ClientCache(ledger_log.engine),
        pseudonym_key=lookup_key,
        admission=Admission(max_in_flight),
        vault=opened,
        senders=institutions.SenderCache(ledger_log.engine),
    )


async def get_services(request: Request) -> Services:
    """FastAPI dependency: the app's services (async: a plain def would cost a thread hop)."""
    return request.app.state.services


# --- submitting ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmitRequest:
    client: Client
    body: bytes
    checked: Checked
    idempotency_key: str | None = None
    base_version: int | None = None  # from If-Match: the version this one replaces


@dataclass(frozen=True)
class Stored:
    """One stored Bundle version, as its sender is answered."""

    id: str
    version: int
    index: int
    kind: str
    salt: bytes
    receipt: str
    created: bool  # False: a retry matched an earlier submission; nothing was appended


class VersionNotFound(LedgerError):
    def __init__(self, version: int) -> None:
        super().__init__(f"there is no version {version} of a Bundle with this identifier")
        self.version = version


class _Pending:
    """The row a submission will write, filled in inside the ledger's transaction."""

    __slots__ = ("id", "salt")

    def __init__(self, bundle_id: str, salt: bytes) -> None:
        self.id = bundle_id
        self.salt = salt


def ident_hash(identifier: tuple[str, str]) -> bytes:
    system, value = identifier
    return hashlib.sha256(f"{system}\x00{value}".encode()).digest()


def _key(prefix: str, *parts: bytes) -> str:
    digest = hashlib.sha256(b"\x00".join(parts)).digest()
    return prefix + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def dedupe_keys(
    sender: str, idempotency_key: str | None, ident: bytes | None, version: int
) -> tuple[str, ...]:
    """What a retry of a Bundle version is matched by (ledger.log.Submission.dedupe_keys):
    its Idempotency-Key, and the ident_hash of its Bundle.identifier with its version."""
    keys = []
    if idempotency_key is not None:
        keys.append(_key("idem:", sender.encode(), idempotency_key.encode()))
    if ident is not None:
        keys.append(_key("ident:", sender.encode(), ident, str(version).encode()))
    return tuple(keys)


def pseudonym(key: bytes, sender: str, patient: tuple[str, str]) -> bytes:
    """The patient's lookup tag: the same patient of the same org always gets the same, in
    whatever spelling its identifier comes (exchange.identifiers).

    It finds the patient's row in the vault and in the derived patient index; the `subject`
    on the log is the random pseudonym the vault keeps (Services.vault.subjects_of), which an
    erasure unlinks from the identifier for good (docs/privacy.md).
    """
    return vault.lookup_tag(key, sender, patient)


# Built once: it runs inside the ledger's write lock, once per entry.
_INSERT_BUNDLE = insert(db.bundles_table)


def prepare(services: Services, req: SubmitRequest) -> tuple[Submission, _Pending]:
    """The ledger submission of a request, and the row it writes."""
    sender = req.client.org
    if req.client.role != "hospital" or sender is None:
        raise Forbidden("only hospital clients with an org submit Bundles")
    checked = req.checked
    version = 1 if req.base_version is None else req.base_version + 1
    if req.base_version is not None and checked.identifier is None:
        raise Unprocessable(
            "If-Match names the version this Bundle replaces, which is found by "
            "Bundle.identifier: give the Bundle its identifier (system and value)",
            "Bundle.identifier",
            code="required",
        )
    salt = os.urandom(SALT_SIZE)
    # The keys of every patient the Bundle names (the first gives the entry's subject): its
    # Bundle key is wrapped under all of them. A Bundle naming no patient gets a key of its
    # own, made in the entry's transaction.
    patient_keys = services.vault.patient_keys(sender, checked.patients)
    keys = services.vault.key_set(patient_keys) if patient_keys else None
    digest_key = keys.digest_key if keys else services.vault.log_digest_key().dek
    digest = vault.keyed_digest(digest_key, req.body)
    pending = _Pending(str(uuid.uuid4()), salt)
    ih = None if checked.identifier is None else ident_hash(checked.identifier)
    subject = patient_keys[0].pseudonym if patient_keys else None

    def write(conn: Connection, entry: Entry) -> None:
        if version > 1:
            assert ih is not None
            found = db.bundle_id_of_version(conn, sender, ih, version - 1)
            if found is None:
                raise VersionNotFound(version - 1)
            pending.id = found
        if keys is not None:
            services.vault.check_live(conn, keys.key_ids)
            sealing = keys
        else:
            sealing = services.vault.key_set([services.vault.new_bundle_key(conn, sender)])
        where = (pending.id, version, entry.index)
        sealed_salt, sealed_data = vault.seal_parts(
            sealing,
            [
                (salt, vault.bundle_aad("salt", *where)),
                (req.body, vault.bundle_aad("data", *where)),
            ],
        )
        conn.execute(
            _INSERT_BUNDLE,
            {
                "id": pending.id,
                "version": version,
                "idx": entry.index,
                "sender": sender,
                "client_id": req.client.client_id,
                "kind": checked.kind,
                "media": checked.media,
                "salt": sealed_salt,
                "digest": digest,
                "data": sealed_data,
                "subject": subject,
                "ident_hash": ih,
                # Bundle.identifier is kept only as ident_hash: its text may name the patient.
                "ident_system": None,
                "ident_value": None,
                "idempotency_key": req.idempotency_key,
                "received": entry.time,
            },
        )

    sub = Submission(
        kind=checked.kind,
        sender=sender,
        commit=commitment(salt, req.body),
        media=checked.media,
        subject=subject,
        dedupe_keys=dedupe_keys(sender, req.idempotency_key, ih, version),
        digest=digest,
        write=write,
    )
    return sub, pending


def conclude(services: Services, appended: Appended, pending: _Pending, version: int) -> Stored:
    """The answer to a submission the log accepted (reads the original row for a retry)."""
    if not appended.duplicate:
        return Stored(
            pending.id,
            version,
            appended.entry.index,
            appended.entry.kind,
            pending.salt,
            appended.receipt,
            True,
        )
    with services.engine.connect() as conn:
        row = db.bundle_by_index(conn, appended.entry.index)
    if row is None:
        raise LedgerError(f"entry {appended.entry.index} has no stored Bundle")
    return Stored(row.id, row.version, row.index, row.kind, row.salt, appended.receipt, False)


def refusal(err: BaseException, req: SubmitRequest) -> BaseException:
    """The HTTP answer to a submission the log refused."""
    if isinstance(err, DuplicateConflict):
        if err.key.startswith("idem:"):
            return Unprocessable(
                f"Idempotency-Key {req.idempotency_key!r} was already used for entry "
                f"{err.index} with other content: use a new key for a new submission",
                code="duplicate",
            )
        if req.base_version is not None:
            return PreconditionFailed(
                f"version {req.base_version} is not the latest: version "
                f"{req.base_version + 1} was already submitted (entry {err.index}) with other "
                "content. Read the latest version and send If-Match with its ETag",
                "Bundle.identifier",
            )
        return Conflict(
            f"this Bundle.identifier was already submitted (entry {err.index}) with other "
            'content. To submit a new version, send If-Match: W/"<latest version>" (the ETag '
            "of the latest version)",
            "Bundle.identifier",
        )
    if isinstance(err, VersionNotFound):
        return PreconditionFailed(
            f"If-Match names version {err.version}, but {err}",
            "Bundle.identifier",
            code="not-found",
        )
    if isinstance(err, LogStateError):
        return Unavailable(str(err))
    if isinstance(err, LedgerUnavailable):
        return Unavailable(str(err), retry_after=1)
    if isinstance(err, LedgerError):
        return Conflict(str(err))
    return err


def _version(req: SubmitRequest) -> int:
    return 1 if req.base_version is None else req.base_version + 1


async def submit(services: Services, req: SubmitRequest) -> Stored:
    """Appends a checked Bundle to the log with its row; answers retries with the original."""
    org, patients = req.client.org, req.checked.patients
    if req.client.role != "hospital":
        org = None  # prepare refuses it: make no key for it
    for attempt in (1, 2):
        if org and patients and services.vault.cached_patient_keys(org, patients) is None:
            # The patients' keys are read (or made) off the event loop; prepare finds them cached.
            await run_in_threadpool(services.vault.patient_keys, org, patients)
        sub, pending = prepare(services, req)
        try:
            appended = await asyncio.wrap_future(services.log.submit(sub))
            break
        except vault.KeyGone as e:
            # Erased by another process since it was cached (and now forgotten): once more.
            if attempt == 2:
                raise refusal(e, req) from e
        except LedgerError as e:
            raise refusal(e, req) from e
    if not appended.duplicate:
        return conclude(services, appended, pending, _version(req))
    return await run_in_threadpool(conclude, services, appended, pending, _version(req))


def submit_blocking(services: Services, req: SubmitRequest) -> Stored:
    """The same as :func:`submit`, for callers outside the event loop (seeding the demo)."""
    for attempt in (1, 2):
        sub, pending = prepare(services, req)
        try:
            appended = services.log.append(sub)
            break
        except vault.KeyGone as e:
            if attempt == 2:
                raise refusal(e, req) from e
        except LedgerError as e:
            raise refusal(e, req) from e
    return conclude(services, appended, pending, _version(req))
