"""Submitting a Bundle: one ledger entry and its sealed row, written in one transaction.

A retry of the same submission (the same sender with the same Idempotency-Key, or with the
same Bundle.identifier and version and the same bytes) is answered with the original and
appends nothing (ledger.log.Submission.dedupe_keys). The log's refusals become the domain's
errors here (:func:`refusal`); exchange.http.errors says how each is answered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection, insert

from exchange import vault
from exchange.bundles.read import bundle_by_index, bundle_id_of_version
from exchange.errors import (
    Conflict,
    Forbidden,
    PreconditionFailed,
    Unavailable,
    Unprocessable,
)
from exchange.identity.clients import Client
from exchange.intake.worker import Checked
from exchange.store.tables import bundles_table
from ledger.entry import SALT_SIZE, Entry, commitment
from ledger.errors import DuplicateConflict, LedgerError, LedgerUnavailable, LogStateError
from ledger.log import Appended, Log, Submission

# Rows of others written in a submission's transaction, given its entry and the Bundle's id
# and version (the outbox's deliveries, exchange.outbox.queue). It may raise Replan.
RowWriter = Callable[[Connection, Entry, str, int], None]


class Replan(LedgerError):
    """Raised by a submission's row writer inside the transaction: what its rows were planned
    on has changed since they were planned. ``again`` plans them anew from the store as it is
    now (blocking), and the submission is made again, once, with that writer, which must not
    raise it again (a second one is answered 503)."""

    def __init__(self, reason: str, again: Callable[[], RowWriter | None]) -> None:
        super().__init__(reason)
        self.again = again


@dataclass(frozen=True)
class SubmitRequest:
    client: Client
    body: bytes
    checked: Checked
    idempotency_key: str | None = None
    base_version: int | None = None  # from If-Match: the version this one replaces
    also_write: RowWriter | None = None


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
    received: str  # when the log took it (the entry's time): its meta.lastUpdated


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


# Built once: it runs inside the ledger's write lock, once per entry.
_INSERT_BUNDLE = insert(bundles_table)


def prepare(vault_: vault.Vault, req: SubmitRequest) -> tuple[Submission, _Pending]:
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
    patient_keys = vault_.patient_keys(sender, checked.patients)
    keys = vault_.key_set(patient_keys) if patient_keys else None
    digest_key = keys.digest_key if keys else vault_.log_digest_key().dek
    digest = vault.keyed_digest(digest_key, req.body)
    pending = _Pending(str(uuid.uuid4()), salt)
    ih = None if checked.identifier is None else ident_hash(checked.identifier)
    subject = patient_keys[0].pseudonym if patient_keys else None

    def write(conn: Connection, entry: Entry) -> None:
        if version > 1:
            assert ih is not None
            found = bundle_id_of_version(conn, sender, ih, version - 1)
            if found is None:
                raise VersionNotFound(version - 1)
            pending.id = found
        if keys is not None:
            vault_.check_live(conn, keys.key_ids)
            sealing = keys
        else:
            sealing = vault_.key_set([vault_.new_bundle_key(conn, sender)])
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
        if req.also_write is not None:
            req.also_write(conn, entry, pending.id, version)

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


def conclude(vault_: vault.Vault, appended: Appended, pending: _Pending, version: int) -> Stored:
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
            appended.entry.time,
        )
    with vault_.engine.connect() as conn:
        row = bundle_by_index(vault_, conn, appended.entry.index)
    if row is None:
        raise LedgerError(f"entry {appended.entry.index} has no stored Bundle")
    return Stored(
        row.id, row.version, row.index, row.kind, row.salt, appended.receipt, False, row.received
    )


def refusal(err: BaseException, req: SubmitRequest) -> BaseException:
    """The domain error a submission the log refused is answered with."""
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
    if isinstance(err, Replan):
        return Unavailable(f"{err}, and again when planned anew: try again", retry_after=1)
    if isinstance(err, LogStateError):
        return Unavailable(str(err))
    if isinstance(err, LedgerUnavailable):
        return Unavailable(str(err), retry_after=1)
    if isinstance(err, LedgerError):
        return Conflict(str(err))
    return err


def _version(req: SubmitRequest) -> int:
    return 1 if req.base_version is None else req.base_version + 1


class _Retries:
    """When a refused append is made again, the same for :func:`submit` and
    :func:`submit_blocking`: once after a key erased by another process since it was cached
    (and now forgotten), and once with the rows of others planned anew (:class:`Replan`). Any
    other refusal is the domain's error (:func:`refusal`)."""

    def __init__(self) -> None:
        self.key_gone = self.replans = 0

    def after(self, err: LedgerError, req: SubmitRequest) -> Callable[[], RowWriter | None] | None:
        """Raises the refusal of ``err``, or gives what to run before trying again: nothing
        (None), or the planning anew of the rows of others."""
        if isinstance(err, vault.KeyGone):
            self.key_gone += 1
            if self.key_gone == 1:
                return None
        elif isinstance(err, Replan):
            self.replans += 1
            if self.replans == 1:
                return err.again
        raise refusal(err, req) from err


async def submit(log: Log, vault_: vault.Vault, req: SubmitRequest) -> Stored:
    """Appends a checked Bundle to the log with its row; answers retries with the original."""
    org, patients = req.client.org, req.checked.patients
    if req.client.role != "hospital":
        org = None  # prepare refuses it: make no key for it
    retries = _Retries()
    while True:
        if org and patients and vault_.cached_patient_keys(org, patients) is None:
            # The patients' keys are read (or made) off the event loop; prepare finds them cached.
            await run_in_threadpool(vault_.patient_keys, org, patients)
        sub, pending = prepare(vault_, req)
        try:
            appended = await asyncio.wrap_future(log.submit(sub))
            break
        except LedgerError as e:
            again = retries.after(e, req)
            if again is not None:
                req = replace(req, also_write=await run_in_threadpool(again))
    if not appended.duplicate:
        return conclude(vault_, appended, pending, _version(req))
    return await run_in_threadpool(conclude, vault_, appended, pending, _version(req))


def submit_blocking(log: Log, vault_: vault.Vault, req: SubmitRequest) -> Stored:
    """The same as :func:`submit`, for callers outside the event loop (seeding the demo)."""
    retries = _Retries()
    while True:
        sub, pending = prepare(vault_, req)
        try:
            appended = log.append(sub)
            break
        except LedgerError as e:
            again = retries.after(e, req)
            if again is not None:
                req = replace(req, also_write=again())
    return conclude(vault_, appended, pending, _version(req))
