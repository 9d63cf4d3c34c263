"""A hospital's SMART Health Links: the summary each shares, and the link's stored row.

    summary_sources(vault, indexes, key, sender, patient) -> [BundleRow]  # what a summary is of
    create(log, vault, client, request, ips, checked, now=, direct=) -> Link
    load(vault, link_id) -> Link | None       # None: unknown, or its patient was erased
    files_of(vault, log, link) / direct_file_of(vault, log, link)   # what leaves, proven now
    count_attempt(engine, link_id, attempts) -> bool   # compare-and-set (exchange.shl.manifest)
    revoke(engine, link_id, now) -> bool

The summary is appended to the log as any submission of the hospital (exchange.bundles.submit)
and the link's row is written in the same transaction, so there is never a link without its
summary nor a summary logged for a link that was not made. The row keeps the files' key, the
patient key and the label sealed under the summary's Bundle key (exchange.vault): erasing the
patient, which shreds the summary, leaves a row nothing can open, and :func:`load` answers
None, so the link answers 404 as an unknown one does.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, insert, select, update

from adapters.ips import contributes
from exchange import vault
from exchange.bundles.read import BundleRow, bundle_by_id
from exchange.bundles.submit import SubmitRequest, prepare, refusal
from exchange.errors import Conflict, NotFound
from exchange.identity.clients import Client
from exchange.indexes.derived import Indexes
from exchange.indexes.patients import bundles_about, patient_index
from exchange.intake.worker import Checked
from exchange.shl.files import LinkFile, direct_file, link_files
from exchange.shl.link import LinkRequest, LinkState, new_link
from exchange.shl.manifest import Attempts
from exchange.shl.payload import b64url, b64url_decode
from exchange.store.tables import shl_links_table
from ledger import store
from ledger.entry import Entry
from ledger.errors import LedgerError
from ledger.log import Log, RowWriter

__all__ = [
    "Link",
    "count_attempt",
    "create",
    "direct_file_of",
    "files_of",
    "load",
    "revoke",
    "summary_sources",
]

_LABEL = b"medledger-shl/v1 link"
_ID = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class Link:
    """One stored link: its state (exchange.shl.link) and its summary's ledger index."""

    state: LinkState
    ips_index: int


def _aad(link_id: str) -> bytes:
    return b"medledger-shl/v1\x00" + link_id.encode("ascii")


def summary_sources(
    vault_: vault.Vault, indexes: Indexes, key: bytes, sender: str, patient: tuple[str, str]
) -> list[BundleRow]:
    """The latest version of each of the sender's Bundles about the patient that has something
    for a summary (:func:`adapters.ips.contributes`), in ledger order: what Patient/$summary
    and a link's summary are both built from. Blocking.

    Content decides, not kind: a discharge Bundle that also carries a Consent or an Invoice is
    filed as `consent` or `settlement` and still holds the clinical entries; a Bundle of bills
    or consents alone contributes nothing and is not disclosed. Bundles an erasure made
    unreadable are left out, and so are the summaries earlier links shared, which no derived
    index reads (exchange.indexes.derived)."""
    indexes.fresh(patient_index(key))
    rows = []
    for bundle_id in bundles_about(vault_.engine, key, sender, patient):
        try:
            row = bundle_by_id(vault_, bundle_id)
        except vault.Erased:
            continue
        if row is not None and contributes(json.loads(row.data)):
            rows.append(row)
    return rows


def _seal(bundle_key: bytes, state: LinkState) -> bytes:
    secret = {"key": b64url(state.key), "patient": state.patient, "label": state.label}
    plain = json.dumps(secret, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return vault.seal_derived(vault.joint_key([bundle_key], _LABEL), plain, _aad(state.id))


def _insert(vault_: vault.Vault, conn: Connection, state: LinkState, index: int) -> None:
    bundle_key = vault_.bundle_keys(conn, [index]).get(index)
    if bundle_key is None:
        raise LedgerError(f"the summary at entry {index} cannot be opened to seal its link")
    conn.execute(
        insert(shl_links_table),
        {
            "id": state.id,
            "created_by": state.created_by,
            "ips_bundle": state.ips_bundle,
            "ips_version": state.ips_version,
            "ips_index": index,
            "flag": state.flag,
            "exp": state.exp,
            "sealed": _seal(bundle_key, state),
            "passcode_hash": state.passcode_hash,
            "remaining_attempts": state.remaining_attempts,
            "revoked_at": None,
            "created_at": state.created_at,
        },
    )


def _writer(
    vault_: vault.Vault, submitted: RowWriter | None, state: LinkState, linked: list[Link]
) -> RowWriter:
    """The submission's own rows, then the link's, in the entry's transaction."""

    def write(conn: Connection, entry: Entry) -> None:
        if submitted is not None:
            submitted(conn, entry)
        _insert(vault_, conn, state, entry.index)
        linked[:] = [Link(state, entry.index)]

    return write


def create(
    log: Log,
    vault_: vault.Vault,
    client: Client,
    request: LinkRequest,
    ips: bytes,
    checked: Checked,
    *,
    now: datetime,
    direct: bool = False,
) -> Link:
    """Appends the summary `ips` (checked by intake) as the hospital's submission and makes
    its link in the same transaction. Blocking. Raises ShlError (a direct link with a
    passcode) and the submission's refusals (exchange.bundles.submit.refusal)."""
    # Hashing a passcode takes a while: done once, before the log's write lock.
    made = new_link(request, now=now, created_by=client.org or "", ips_bundle="",
                    ips_version=1, direct=direct)  # fmt: skip
    req = SubmitRequest(client, ips, checked)
    linked: list[Link] = []
    for attempt in (1, 2):
        sub, pending = prepare(vault_, req)  # refuses any client but a hospital's
        state = dataclasses.replace(made, ips_bundle=pending.id)
        writer = _writer(vault_, sub.write, state, linked)
        try:
            appended = log.append(dataclasses.replace(sub, write=writer))
            break
        except vault.KeyGone as e:
            # Erased by another process since it was cached (and now forgotten): once more.
            if attempt == 2:
                raise refusal(e, req) from e
        except LedgerError as e:
            raise refusal(e, req) from e
    if appended.duplicate or not linked:
        raise Conflict("this summary was already recorded: ask for a new link")
    return linked[0]


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)  # SQLite keeps no offset: the stored time is UTC


def load(vault_: vault.Vault, link_id: str) -> Link | None:
    """The link, or None when there is none by that id or its patient was erased (nothing of
    it can be opened: the link is as gone as an unknown one). Blocking."""
    if not _ID.fullmatch(link_id):
        return None
    t = shl_links_table
    with vault_.engine.connect() as conn:
        row = conn.execute(select(t).where(t.c.id == link_id)).first()
        if row is None:
            return None
        index = int(row.ips_index)
        bundle_key = vault_.bundle_keys(conn, [index]).get(index)
    if bundle_key is None:
        return None
    key = vault.joint_key([bundle_key], _LABEL)
    secret = json.loads(vault.unseal_derived(key, bytes(row.sealed), _aad(link_id)))
    created = _utc(row.created_at)
    assert created is not None
    state = LinkState(
        id=row.id,
        patient=secret["patient"],
        key=b64url_decode(secret["key"], "key"),
        flag=row.flag,
        exp=int(row.exp),
        label=secret["label"],
        passcode_hash=row.passcode_hash,
        remaining_attempts=row.remaining_attempts,
        revoked_at=_utc(row.revoked_at),
        ips_bundle=row.ips_bundle,
        ips_version=int(row.ips_version),
        created_by=row.created_by,
        created_at=created,
    )
    return Link(state, index)


def _summary(vault_: vault.Vault, log: Log, link: Link) -> tuple[bytes, bytes, str]:
    """The summary's exact bytes, its salt, and a receipt against the newest checkpoint (the
    viewer trusts the keys active now). Raises vault.Erased when erased meanwhile."""
    row = bundle_by_id(vault_, link.state.ips_bundle, link.state.ips_version)
    if row is None:
        raise NotFound(f"the summary of link entry {link.ips_index} is not stored")
    return row.data, row.salt, log.receipt(row.index)


def files_of(vault_: vault.Vault, log: Log, link: Link) -> Sequence[LinkFile]:
    ips, salt, receipt = _summary(vault_, log, link)
    return link_files(ips, salt=salt, receipt=receipt)


def direct_file_of(vault_: vault.Vault, log: Log, link: Link) -> LinkFile:
    ips, salt, receipt = _summary(vault_, log, link)
    return direct_file(ips, salt=salt, receipt=receipt)


def count_attempt(engine: Engine, link_id: str, attempts: Attempts) -> bool:
    """Stores a wrong passcode's count if the link still holds the count it was computed
    from; False when another request counted first (answer again from fresh state)."""
    t = shl_links_table
    with store.write_transaction(engine) as conn:
        done = conn.execute(
            update(t)
            .where(t.c.id == link_id, t.c.remaining_attempts == attempts.expected)
            .values(remaining_attempts=attempts.remaining)
        )
    return done.rowcount == 1


def revoke(engine: Engine, link_id: str, now: datetime) -> bool:
    """Marks the link revoked; False when it already was."""
    t = shl_links_table
    with store.write_transaction(engine) as conn:
        done = conn.execute(
            update(t).where(t.c.id == link_id, t.c.revoked_at.is_(None)).values(revoked_at=now)
        )
    return done.rowcount == 1
