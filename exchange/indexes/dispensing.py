"""The dispensing events a caller may query over EPCIS (`GET /epcis/events`), in ledger order.

The events are those :func:`adapters.epcis.dispensing_events` reads from the stored Bundles
that carry RWD content (the recall index names them, whatever their kind), each keyed by
(ledger entry index, position in the entry) -- an append-only order, so a page boundary stays
put while entries are added -- and each given its ledger link (RFC 6920 URI of the entry's
leaf hash) and its ``recordTime``, the time the ledger recorded the entry.

Only the latest version of a Bundle speaks: a replaced version's events were corrected, and a
partner reading both would count one dispensing twice. An erased Bundle has none left. A
Bundle that cannot say where it was dispensed (no single GLN, and no site location given) or
whose pack cannot become an event gives no events rather than a wrong one.

The events name packs, times and places, never a patient: a query is not a disclosure of
patient data and appends no access entry.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from adapters.base import AdaptError
from adapters.epcis import dispensing_events, event_location, ledger_link, time_text
from adapters.epcis_query import EventKey
from exchange.store.tables import bundles_table, trace_table
from exchange.vault import Vault
from ledger.entry import parse_entry
from ledger.log import Log
from ledger.merkle import leaf_hash


def events(
    vault_: Vault, log: Log, sender: str | None, sites: Mapping[str, str] | None = None
) -> Iterator[tuple[EventKey, dict[str, Any]]]:
    """`sender`'s events (everyone's when None) in key order; the recall index must be fresh.

    ``sites`` maps a sender to its location for Bundles that name no GLN of their own (SGLN
    URN, GLN Digital Link or bare GLN): the GLN the institution registry records for it, as
    ``medledger adapt epcis --location`` gives it offline.
    """
    sites = sites or {}
    t, b = trace_table, bundles_table
    used = select(t.c.idx).distinct()
    if sender is not None:
        used = used.where(t.c.sender == sender)
    newest = select(b.c.id, func.max(b.c.version).label("version")).group_by(b.c.id).subquery()
    q = (
        select(b.c.idx, b.c.id, b.c.version, b.c.data, b.c.sender)
        .join(newest, (newest.c.id == b.c.id) & (newest.c.version == b.c.version))
        .where(b.c.idx.in_(used))
        .order_by(b.c.idx)
    )
    with vault_.engine.connect() as conn:
        found = conn.execute(q).all()
        # The bytes are sealed (exchange.vault); an erased Bundle has none left.
        opened = vault_.open_bundles(
            conn, [(bytes(r.data), r.id, int(r.version), int(r.idx)) for r in found]
        )
    for row, got in zip(found, opened, strict=True):
        if got is None:
            continue
        index = int(row.idx)
        entry = log.entries(index, index + 1)[0]
        doc = json.loads(got[0])
        try:
            made = dispensing_events(
                doc,
                location=event_location(doc, sites.get(row.sender)),
                link=ledger_link(base64.b64encode(leaf_hash(entry)).decode("ascii")),
            )
        except AdaptError:
            continue
        recorded = time_text(datetime.fromisoformat(parse_entry(entry).time))
        for position, event in enumerate(made):
            yield (index, position), {**event.as_json(), "recordTime": recorded}
