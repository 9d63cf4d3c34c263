"""The recall index: which ledger entries used a pack or lot, kept in SQL beside the Bundles.

A derived index (:mod:`exchange.indexes.derived`) over the stored Bundles of every kind: the
packs of each one that carries RWD content, read by
:func:`adapters.rwd_identity.recall_identities`, the same content the intake checked
(``checks_for``), so an RWD report filed with an Invoice as `settlement` is found too.

Matching is :func:`adapters.trace_index.matches` expressed as SQL: each product key the query
names (GTIN-14, approval number, Chinese code) equal; lot and serial equal when the query
names them (case-sensitive, GS1 character set 82).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Select, func, select

from adapters.rwd_identity import PackIdentity, recall_identities
from adapters.trace_index import RecallQuery
from exchange.indexes.derived import DerivedIndex, StoredBundle
from exchange.store.tables import trace_table


@dataclass(frozen=True)
class TraceHit:
    """One ledger entry that used the queried pack or lot."""

    index: int
    bundle_id: str
    sender: str


def index_rows(
    index: int, sender: str, bundle_id: str, identities: list[PackIdentity]
) -> list[dict[str, object]]:
    """The index rows of one entry: a pack with none of the three product keys cannot answer
    a recall query, so it has no row."""
    return [
        {
            "idx": index,
            "sender": sender,
            "bundle_id": bundle_id,
            "gtin": identity.gtin,
            "lot": identity.lot,
            "serial": identity.serial,
            "expiry": identity.expiry,
            "cn_code": identity.cn_code,
            "import_approval": identity.import_approval,
        }
        for identity in identities
        if identity.gtin is not None
        or identity.import_approval is not None
        or identity.cn_code is not None
    ]


def _rows_of(bundle: StoredBundle) -> list[dict[str, object]]:
    # Stored Bundles passed intake, so they are JSON; the reading is lenient by design.
    identities = recall_identities(json.loads(bundle.data))
    return index_rows(bundle.index, bundle.sender, bundle.id, identities)


TRACE = DerivedIndex("trace", ("record", "rwd", "settlement", "consent"), trace_table, _rows_of)


def _matching(q: Select[Any], query: RecallQuery) -> Select[Any]:
    t = trace_table
    if query.gtin is not None:
        q = q.where(t.c.gtin == query.gtin)
    if query.approval is not None:
        q = q.where(t.c.import_approval == query.approval)
    if query.cn_code is not None:
        q = q.where(t.c.cn_code == query.cn_code)
    if query.lot is not None:
        q = q.where(t.c.lot == query.lot)
    if query.serial is not None:
        q = q.where(t.c.serial == query.serial)
    return q


def recall(engine: Engine, query: RecallQuery, sender: str | None = None) -> list[TraceHit]:
    """Entries whose packs match the query, in ledger order; only `sender`'s when given."""
    t = trace_table
    q = _matching(select(t.c.idx, t.c.bundle_id, t.c.sender).distinct(), query)
    if sender is not None:
        q = q.where(t.c.sender == sender)
    with engine.connect() as conn:
        found = conn.execute(q.order_by(t.c.idx)).all()
    return [TraceHit(int(idx), bundle_id, owner) for idx, bundle_id, owner in found]


def recall_counts(engine: Engine, query: RecallQuery) -> list[tuple[str, int]]:
    """(sender, how many of its entries match the query), by sender, senders with none left
    out: the entries :func:`recall` would list for each sender, counted."""
    t = trace_table
    entries = func.count(t.c.idx.distinct())
    q = _matching(select(t.c.sender, entries), query).group_by(t.c.sender)
    with engine.connect() as conn:
        found = conn.execute(q.order_by(t.c.sender)).all()
    return [(sender, int(n)) for sender, n in found]
