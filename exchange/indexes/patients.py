"""Which Bundles are about a patient: every Patient.identifier a Bundle carries, pseudonymised.

A hospital names its patient by any identifier it submitted (a passport number, an MRN); the
ledger entry's subject is the pseudonym of only the first one. This derived index
(:mod:`exchange.derived`) keeps, for each stored Bundle, the keyed pseudonym of every
(system, value) of its Patients, so a lookup by any of them finds the Bundle. Identifiers
themselves are never stored here: the pseudonym key (exchange_secrets) turns them into
HMAC-SHA-256 values, the same function the ledger entries' subject uses.
"""

from __future__ import annotations

import json

from sqlalchemy import (
    Engine,
    select,
)

from exchange.indexes.derived import DerivedIndex, StoredBundle
from exchange.intake.kind import patient_identifiers
from exchange.store.tables import patient_ids_table
from exchange.vault import lookup_tag


def patient_index(key: bytes) -> DerivedIndex:
    """The index under this log's pseudonym key, over Bundles of every kind."""

    def rows_of(bundle: StoredBundle) -> list[dict[str, object]]:
        doc = json.loads(bundle.data)
        return [
            {
                "idx": bundle.index,
                "sender": bundle.sender,
                "bundle_id": bundle.id,
                "ident": lookup_tag(key, bundle.sender, pair),
            }
            for pair in patient_identifiers(doc)
        ]

    kinds = ("record", "consent", "rwd", "settlement")
    return DerivedIndex("patients", kinds, patient_ids_table, rows_of)


def bundles_about(engine: Engine, key: bytes, sender: str, patient: tuple[str, str]) -> list[str]:
    """Ids of the sender's Bundles whose Patients carry this identifier, in ledger order."""
    t = patient_ids_table
    q = (
        select(t.c.bundle_id, t.c.idx)
        .where(t.c.sender == sender, t.c.ident == lookup_tag(key, sender, patient))
        .order_by(t.c.idx)
    )
    with engine.connect() as conn:
        found = conn.execute(q).all()
    ids: list[str] = []
    for bundle_id, _ in found:
        if bundle_id not in ids:
            ids.append(bundle_id)
    return ids
