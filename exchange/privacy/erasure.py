"""Erasure of a patient by crypto-shredding, under two-person approval (docs/privacy.md).

GDPR article 17 and PIPL article 47 give a patient erasure; the ledger cannot forget an entry
without breaking every later proof. So the log keeps its entries and the vault forgets the keys:
one admin *requests* the erasure of a patient (a sender org's Patient.identifier), a second,
different admin *confirms* it, and then, in the transaction of one `kind=erasure` ledger
entry, the vault deletes the patient's key (and with it the salt and bytes of every Bundle that
names the patient, whose Bundle keys need it: exchange.vault), the pseudonym's link to the
identifier, and the derived index rows of those Bundles. Bundles that do not name the patient
keep every key they need.

What the erasure entry commits to (canonical JSON, RFC 8785) names no one: the request id, the
two admins' client ids, the org, the pseudonym the patient's entries already carry, and counts.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    MetaData,
    Table,
    delete,
    insert,
    inspect,
    select,
    update,
)

from exchange import vault
from exchange.config import ADMIN_TOKEN_ENV
from exchange.identity.clients import Client, find_client, hash_token
from exchange.indexes import derived
from exchange.indexes.patients import patient_index
from exchange.store.tables import keys_table, patient_ids_table, requests_table, tables_table
from ledger import store
from ledger.entry import SALT_SIZE, Entry, commitment
from ledger.errors import LedgerError
from ledger.jcs import canonicalize
from ledger.log import Log, Submission

KIND = "erasure"
MEDIA = "application/json"


class ErasureError(Exception):
    """An erasure step refused: says what and what to do instead."""


class NotAllowed(ErasureError):
    """The acting client may not do this step (not an admin, or the requesting admin)."""


@dataclass(frozen=True)
class Request:
    request_id: str
    sender: str
    requested_by: str
    confirmed_by: str | None
    index: int | None


@dataclass(frozen=True)
class Erasure:
    """What a confirmed erasure destroyed, and the ledger entry recording it."""

    request_id: str
    index: int
    keys: int
    bundles: int
    index_rows: int
    record: bytes
    salt: bytes


def admin_by_token(engine: Engine, client_id: str, token: str | None) -> Client:
    """The admin client `client_id`, authenticated by its own `mlt_` credential."""
    if not token:
        raise NotAllowed(
            f"admin {client_id} is not authenticated: put the admin's own mlt_ credential in "
            f"{ADMIN_TOKEN_ENV}"
        )
    client = find_client(engine, hash_token(token))
    if client is None or client.client_id != client_id:
        raise NotAllowed(f"the credential in {ADMIN_TOKEN_ENV} is not that of client {client_id}")
    return _check_admin(client)


def _check_admin(client: Client) -> Client:
    if client.role != "admin":
        raise NotAllowed(
            f"client {client.client_id} has role {client.role}: only admins request or confirm "
            "erasures"
        )
    return client


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def request_erasure(vault_: vault.Vault, org: str, patient: tuple[str, str], admin: Client) -> str:
    """Records a pending erasure of the org's patient; returns its request id."""
    _check_admin(admin)
    engine = vault_.engine
    _catch_up_patients(vault_)
    tag = vault.lookup_tag(vault_.lookup_key, org, patient)
    with engine.connect() as conn:
        known = conn.execute(
            select(keys_table.c.key_id).where(
                keys_table.c.sender == org, keys_table.c.lookup == tag
            )
        ).first()
        indexed = (
            _has_table(conn, patient_ids_table)
            and conn.execute(
                select(patient_ids_table.c.idx).where(
                    patient_ids_table.c.sender == org, patient_ids_table.c.ident == tag
                )
            ).first()
        )
        pending = conn.execute(
            select(requests_table.c.request_id).where(
                requests_table.c.sender == org,
                requests_table.c.lookup == tag,
                requests_table.c.idx.is_(None),
            )
        ).first()
    if known is None and not indexed:
        raise ErasureError(
            f"the vault holds nothing about this patient of {org}: check the identifier's "
            "system|value and the org that submitted it"
        )
    if pending is not None:
        raise ErasureError(
            f"erasure request {pending.request_id} for this patient is already pending: a "
            "second admin confirms it with --confirm"
        )
    request_id = "er-" + uuid.uuid4().hex
    with store.write_transaction(engine) as conn:
        conn.execute(
            insert(requests_table).values(
                request_id=request_id,
                sender=org,
                lookup=tag,
                requested_by=admin.client_id,
                requested=_now(),
            )
        )
    return request_id


def pending_request(engine: Engine, request_id: str) -> Request:
    t = requests_table
    with engine.connect() as conn:
        row = conn.execute(select(t).where(t.c.request_id == request_id)).first()
    if row is None:
        raise ErasureError(f"there is no erasure request {request_id}")
    return Request(row.request_id, row.sender, row.requested_by, row.confirmed_by, row.idx)


@dataclass(frozen=True)
class _Plan:
    lookup: bytes
    key_ids: tuple[str, ...]
    pseudonym: bytes | None
    bundle_idxs: tuple[int, ...]


def _plan(engine: Engine, vault_: vault.Vault, sender: str, tag: bytes) -> _Plan:
    """Which keys go: the patient's own (and its aliases: exchange.aliases_table); and
    which Bundles become unreadable with them: those still readable that name the patient,
    which the patient index (caught up here) lists by the patient's lookup tag."""
    _catch_up_patients(vault_)
    p = patient_ids_table.c
    with engine.connect() as conn:
        own, aliases = vault_.patient_key_rows(conn, sender, tag)
        named = conn.execute(select(p.idx).where(p.sender == sender, p.ident == tag)).scalars()
        idxs = sorted({int(i) for i in named})
    return _Plan(
        lookup=tag,
        key_ids=tuple(sorted(k for k, _ in ([own] if own else []) + aliases)),
        pseudonym=None if own is None else own[1],
        bundle_idxs=tuple(idxs),
    )


def erasure_record(req: Request, confirmed_by: str, plan: _Plan) -> bytes:
    """The bytes the erasure entry commits to: ids and counts, nothing about the patient
    beyond the pseudonym the patient's own entries already carry."""
    subject = None if plan.pseudonym is None else base64.b64encode(plan.pseudonym).decode()
    return canonicalize(
        {
            "type": "medledger-erasure",
            "v": 1,
            "request": req.request_id,
            "org": req.sender,
            "requestedBy": req.requested_by,
            "confirmedBy": confirmed_by,
            "subject": subject,
            "keys": len(plan.key_ids),
            "bundles": len(plan.bundle_idxs),
        }
    )


class _AlreadyDone(LedgerError):
    pass


def confirm_erasure(log: Log, vault_: vault.Vault, request_id: str, admin: Client) -> Erasure:
    """Carries out a pending erasure confirmed by a second admin: one ledger entry, and in its
    transaction the keys, pseudonym link and derived index rows are deleted."""
    _check_admin(admin)
    engine = log.engine
    req = pending_request(engine, request_id)
    if req.index is not None:
        raise ErasureError(f"erasure request {request_id} was carried out in entry {req.index}")
    if admin.client_id == req.requested_by:
        raise NotAllowed(
            f"admin {admin.client_id} requested this erasure: a second, different admin must "
            "confirm it"
        )
    with engine.connect() as conn:
        tag = conn.execute(
            select(requests_table.c.lookup).where(requests_table.c.request_id == request_id)
        ).scalar_one()
    plan = _plan(engine, vault_, req.sender, bytes(tag))
    record = erasure_record(req, admin.client_id, plan)
    salt = os.urandom(SALT_SIZE)
    counts: dict[str, int] = {}

    def write(conn: Connection, entry: Entry) -> None:
        done = conn.execute(
            update(requests_table)
            .where(requests_table.c.request_id == request_id, requests_table.c.idx.is_(None))
            .values(
                lookup=None,
                confirmed_by=admin.client_id,
                confirmed=entry.time,
                idx=entry.index,
                salt=salt,
                data=record,
            )
        ).rowcount
        if done != 1:
            raise _AlreadyDone(f"erasure request {request_id} was carried out meanwhile")
        if conn.dialect.name == "sqlite":
            # Zero the deleted key rows' bytes in their pages, not just unlink them.
            conn.exec_driver_sql("PRAGMA secure_delete = ON")
        counts["keys"] = vault_.destroy(conn, plan.key_ids, request_id, entry.index)
        counts["rows"] = _delete_derived(conn, req.sender, plan.lookup, plan.bundle_idxs)

    appended = log.append(
        Submission(
            kind=KIND,
            sender=req.sender,
            commit=commitment(salt, record),
            media=MEDIA,
            subject=plan.pseudonym,
            write=write,
        )
    )
    vault_.forget(plan.key_ids)
    _checkpoint_wal(engine)
    return Erasure(
        request_id,
        appended.entry.index,
        counts.get("keys", 0),
        len(plan.bundle_idxs),
        counts.get("rows", 0),
        record,
        salt,
    )


def _checkpoint_wal(engine: Engine) -> None:
    """SQLite: move the zeroed pages into the database file and empty the write-ahead log,
    whose older frames still hold the key rows as they were written (best effort: a reader
    still inside an old snapshot keeps them until it ends; docs/privacy.md)."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def _catch_up_patients(vault_: vault.Vault) -> None:
    index = patient_index(vault_.lookup_key)
    derived.register(vault_.engine, index)
    derived.catch_up(vault_, index)


def _has_table(conn: Connection, table: Table) -> bool:
    return inspect(conn).has_table(table.name)


def _delete_derived(conn: Connection, sender: str, tag: bytes, idxs: Iterable[int]) -> int:
    """Rows derived from the erased Bundles, in every derived index (exchange.derived keeps
    their table names), and the patient index's rows of the patient's tag."""
    wanted = sorted(idxs)
    deleted = 0
    p = patient_ids_table
    if _has_table(conn, p):
        deleted += conn.execute(
            delete(p).where((p.c.sender == sender) & (p.c.ident == tag))
        ).rowcount
    if not wanted or not _has_table(conn, tables_table):
        return int(deleted)
    names = conn.execute(select(tables_table.c.name)).scalars().all()
    inspector = inspect(conn)
    for name in names:
        if not inspector.has_table(name):
            continue
        if "idx" not in {c["name"] for c in inspector.get_columns(name)}:
            continue
        table = Table(name, MetaData(), Column("idx", BigInteger))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            deleted += conn.execute(delete(table).where(table.c.idx.in_(chunk))).rowcount
    return int(deleted)
