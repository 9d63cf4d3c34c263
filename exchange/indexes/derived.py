"""Derived indexes: tables computed from the stored Bundles, caught up in ledger order.

An index here is derived data, never on the submission path: a submission's latency does not
pay for it, and dropping an index's tables rebuilds the same rows from the Bundles. Each index
keeps a high-water mark (the last ledger index it read) that moves in the same transaction as
the rows it covers, and only from where the reading started, so two catch-ups never index an
entry twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import (
    Connection,
    Engine,
    MetaData,
    Table,
    delete,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from exchange.store.tables import bundles_table, shl_links_table, state_table, tables_table
from exchange.vault import Vault
from ledger import store

CATCH_UP_BATCH = 500


@dataclass(frozen=True)
class StoredBundle:
    index: int
    sender: str
    id: str
    data: bytes
    # The Bundle key this version is sealed under (exchange.vault), for an index that seals
    # what it derives from the Bundle under it (exchange.quality_facts): an erasure of any
    # patient the Bundle names reaches that too.
    bundle_key: bytes = field(repr=False)


@dataclass(frozen=True)
class DerivedIndex:
    """An index over the Bundles of some kinds: `rows_of` gives one Bundle's rows of `table`,
    which has an `idx` column (the ledger index of the Bundle each row comes from)."""

    name: str
    kinds: tuple[str, ...]
    table: Table
    rows_of: Callable[[StoredBundle], list[dict[str, object]]]


def register(engine: Engine, index: DerivedIndex) -> None:
    """The index's mark and its table's name in the registry, once (its table is made by the
    schema: exchange.store.migrate)."""
    name = index.table.name
    with engine.connect() as conn:
        marked = conn.execute(select(state_table.c.name).where(state_table.c.name == index.name))
        known = conn.execute(select(tables_table.c.name).where(tables_table.c.name == name))
        if marked.first() is not None and known.first() is not None:
            return
    try:
        with store.write_transaction(engine) as conn:
            found = conn.execute(select(state_table.c.name).where(state_table.c.name == index.name))
            if found.first() is None:
                conn.execute(insert(state_table).values(name=index.name, last_index=-1))
            known = conn.execute(select(tables_table.c.name).where(tables_table.c.name == name))
            if known.first() is None:
                conn.execute(insert(tables_table).values(name=name))
    except IntegrityError:
        pass  # another process registered it first


def catch_up(
    vault_: Vault, index: DerivedIndex, batch: int = CATCH_UP_BATCH, seen: Seen | None = None
) -> int:
    """Index the Bundles stored since the last catch-up; returns how many were read.

    Bundles are read and parsed outside the write transaction (on SQLite it holds the log's
    write lock); the transaction only moves the mark and inserts the rows. ``seen``, when
    given, skips the Bundles an earlier catch-up already looked at and found none of the
    index's kinds among, and is moved past those this one finds so.
    """
    read = 0
    t = bundles_table
    engine = vault_.engine
    # The summary a SMART Health Link shares (exchange.sharing) is a submission built from
    # records already indexed, not a record of its own: indexed, its content would count twice
    # (recalls, quality facts) and a patient's next summary would be built from it too. Its
    # link's row is written in its entry's transaction, so no catch-up sees it without it.
    shared = select(shl_links_table.c.ips_bundle)
    while True:
        with engine.connect() as conn:
            last = _mark(conn, index.name)
            # Read before the scan: every entry up to it is committed (indexes are assigned
            # and committed in order), so the scan below sees all of them.
            top = conn.execute(select(func.max(t.c.idx))).scalar()
            start = last if seen is None else seen.start(last)
            found = conn.execute(
                select(t.c.idx, t.c.sender, t.c.id, t.c.version, t.c.data)
                .where(t.c.kind.in_(index.kinds), t.c.idx > start, t.c.id.not_in(shared))
                .order_by(t.c.idx)
                .limit(batch)
            ).all()
            # The bytes are sealed (exchange.vault); an erased Bundle has none left to index.
            opened = vault_.open_bundles(
                conn, [(bytes(r.data), r.id, int(r.version), int(r.idx)) for r in found]
            )
        if not found:
            if seen is not None and top is not None:
                seen.move(last, int(top))
            return read
        rows: list[dict[str, object]] = []
        for (idx, sender, bundle_id, _, _), got in zip(found, opened, strict=True):
            if got is not None:
                data, key = got
                rows.extend(index.rows_of(StoredBundle(int(idx), sender, bundle_id, data, key)))
        with store.write_transaction(engine) as conn:
            if _mark(conn, index.name, lock=True) != last:
                continue  # another catch-up indexed these first: read again from its mark
            conn.execute(
                update(state_table)
                .where(state_table.c.name == index.name)
                .values(last_index=found[-1][0])
            )
            if rows:
                conn.execute(insert(index.table), rows)
        read += len(found)


def reset(conn: Connection) -> int:
    """In the caller's write transaction: forgets every index's rows and mark, so each is
    rebuilt from the Bundles on its next use (after the keys its rows hold changed, as when
    exchange.store_upgrade gave identifiers one spelling). Returns how many rows went."""
    inspector = inspect(conn)
    if not inspector.has_table(tables_table.name):
        return 0
    deleted = 0
    for name in conn.execute(select(tables_table.c.name)).scalars().all():
        if inspector.has_table(name):
            deleted += conn.execute(delete(Table(name, MetaData()))).rowcount or 0
    conn.execute(update(state_table).values(last_index=-1))
    return int(deleted)


def _mark(conn: Connection, name: str, *, lock: bool = False) -> int:
    q = select(state_table.c.last_index).where(state_table.c.name == name)
    if lock and conn.dialect.name != "sqlite":
        q = q.with_for_update()  # SQLite's write transaction already excludes other writers
    return int(conn.execute(q).scalar_one())


class Seen:
    """How far one index's catch-ups have looked past its mark, in this process: the entries
    from the mark to ``top`` hold none of the index's kinds, so the next catch-up starts its
    scan at ``top``. Records of other kinds (most submissions) stay between the mark and the
    newest entry, and scanning them on every catch-up costs more the longer the log grows.
    Valid only while the mark is where it was: a reset (derived.reset) or an advance drops it.
    """

    def __init__(self) -> None:
        self._at: tuple[int, int] | None = None  # (mark, top)
        self._lock = threading.Lock()

    def start(self, mark: int) -> int:
        with self._lock:
            if self._at is None or self._at[0] != mark:
                return mark
            return max(mark, self._at[1])

    def move(self, mark: int, top: int) -> None:
        with self._lock:
            if self._at is None or self._at[0] != mark or self._at[1] < top:
                self._at = (mark, top)


class Indexes:
    """The derived indexes of one open log: each registered on first use, caught up before use."""

    def __init__(self, vault_: Vault) -> None:
        self.vault = vault_
        self.engine = vault_.engine
        self._registered: set[str] = set()
        self._seen: dict[str, Seen] = {}
        self._lock = threading.Lock()
        self._catching = threading.Lock()

    def fresh(self, *indexes: DerivedIndex) -> None:
        """Make the indexes cover every Bundle stored so far (blocking: run it in a thread).

        Most calls find nothing new: one read of the marks and of the newest entry says so,
        and only an index with entries of its kinds past what was seen is caught up."""
        with self._lock:
            for index in indexes:
                if index.name not in self._registered:
                    register(self.engine, index)
                    self._registered.add(index.name)
                    self._seen[index.name] = Seen()
        names = [index.name for index in indexes]
        with self.engine.connect() as conn:
            marks = dict(
                conn.execute(
                    select(state_table.c.name, state_table.c.last_index).where(
                        state_table.c.name.in_(names)
                    )
                ).all()
            )
            top = conn.execute(select(func.max(bundles_table.c.idx))).scalar()
            if top is None:
                return
            behind = [
                (index, int(marks[index.name]))
                for index in indexes
                if self._seen[index.name].start(int(marks[index.name])) < top
            ]
            if not behind:
                return
            t = bundles_table
            low = min(self._seen[index.name].start(mark) for index, mark in behind)
            kinds = {kind for index, _ in behind for kind in index.kinds}
            first = conn.execute(
                select(func.min(t.c.idx)).where(t.c.kind.in_(kinds), t.c.idx > low, t.c.idx <= top)
            ).scalar()
        if first is None:  # only other kinds since: nothing to index
            for index, mark in behind:
                self._seen[index.name].move(mark, int(top))
            return
        # One catch-up at a time in this process: a burst of callers finding the index behind
        # (the first submissions after a start) would otherwise each read and parse the same
        # Bundles, all but one to find the mark moved. The others wait, then find little left.
        with self._catching:
            for index, _ in behind:
                catch_up(self.vault, index, seen=self._seen[index.name])
