"""The vault's first format upgraded in place (revision 0004 of exchange/store/migrations).

The first format (`MLV1`) sealed each Bundle under the key of the first patient it named: a
Bundle naming a mother and her baby was the mother's alone to the vault, and erasing the baby
destroyed the mother's key, so every other Bundle of the mother went with it. It also keyed
patients by their identifier exactly as spelled, so one MRN in two Unicode spellings was two
patients. For each stored Bundle value still in that format whose key is live,
:func:`upgrade_vault`

a. gives every key row of an identifier that was not in its one spelling
   (exchange.intake.identifiers) the lookup tag of that spelling; when that spelling already
   has a key, the row becomes an alias of it (`exchange_vault_aliases`): its pseudonym stays
   the subject of the older entries, the patient's accounting finds them, and the patient's
   erasure destroys it;
b. seals the bytes and salt again in the current format, under a Bundle key that needs the
   key of every patient the Bundle names (made for those that had none), and keys its retry
   digest (here and in ledger_dedupe) the way a new submission of the same bytes would be;
c. when it renamed a key, empties the derived indexes, which keyed on the old spellings: each
   rebuilds from the Bundles on its next use.

A value whose key was erased stays as it was: nothing can open it any more, and it reads as
erased. It runs inside the schema upgrade's transaction (exchange.store.migrate: one
advisory lock on PostgreSQL, the write lock on SQLite), with the append-only guards of the
two tables lifted inside it (ledger.store.append_only_lifted); on SQLite `secure_delete`
zeroes the old values' pages, and the write-ahead log that held them is emptied afterwards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection, func, insert, inspect, select, update

from exchange import vault
from exchange.bundles.submit import dedupe_keys
from exchange.indexes import derived
from exchange.intake.identifiers import normalise
from exchange.intake.kind import patient_identifiers, spelled_patient_identifiers
from exchange.store.tables import aliases_table, bundles_table, keys_table, requests_table
from ledger import store

FORMAT = b"2"
BATCH = 200  # first-format rows read at a time


def upgrade_vault(vault_: vault.Vault, conn: Connection) -> str:
    """Seals every first-format value again (see the module doc), in the caller's schema
    transaction `conn`; says what it did."""
    counts = _upgrade_vault(vault_, conn)
    return (
        f"vault format {FORMAT.decode()}: {counts.bundles} Bundle versions sealed "
        f"again, {counts.left} left erased, {counts.renamed} keys given their "
        f"identifier's one spelling, {counts.aliased} made aliases"
    )


# --- step 1: the vault ------------------------------------------------------------------


@dataclass
class _Counts:
    bundles: int = 0  # Bundle versions sealed again in the current format
    left: int = 0  # first-format values whose key was erased: left unreadable, as they were
    renamed: int = 0  # key rows given the lookup tag of their identifier's one spelling
    aliased: int = 0  # key rows made aliases of the key of their identifier's one spelling


def _upgrade_vault(vault_: vault.Vault, conn: Connection) -> _Counts:
    done = _Counts()
    log_digest = vault_.log_digest_key(conn).dek
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA secure_delete = ON")
    with (
        store.append_only_lifted(conn, bundles_table.name),
        store.append_only_lifted(conn, store.dedupe_table.name),
    ):
        last = -1
        while True:
            rows = conn.execute(_LEGACY.where(bundles_table.c.idx > last)).all()
            if not rows:
                break
            renamed = done.renamed + done.aliased
            for row in rows:
                _rewrite(conn, vault_, row, log_digest, done)
            if done.renamed + done.aliased > renamed:
                derived.reset(conn)
            last = int(rows[-1].idx)
    vault_.forget()  # key rows were renamed: no cached key or key set may outlive that
    return done


_b = bundles_table.c
_LEGACY = (
    select(
        _b.idx, _b.id, _b.version, _b.sender, _b.data, _b.salt, _b.idempotency_key, _b.ident_hash
    )
    .where(func.substr(_b.data, 1, 4) == vault.LEGACY_MAGIC)
    .order_by(_b.idx)
    .limit(BATCH)
)


def _rewrite(
    conn: Connection, vault_: vault.Vault, row: object, log_digest: bytes, done: _Counts
) -> None:
    m = row._mapping  # type: ignore[attr-defined]
    index, sender = int(m["idx"]), m["sender"]
    where = (m["id"], int(m["version"]), index)
    data_blob, salt_blob = bytes(m["data"]), bytes(m["salt"])
    (key_id,) = vault.sealed_key_ids(data_blob)
    old = vault_.read_key(conn, key_id)
    if old is None:
        done.left += 1
        return
    data = vault.unseal_first_format(old.dek, data_blob, vault.bundle_aad("data", *where))
    salt = vault.unseal_first_format(old.dek, salt_blob, vault.bundle_aad("salt", *where))
    doc = json.loads(data)
    for spelled in spelled_patient_identifiers(doc):
        _rename(conn, vault_, sender, spelled, done)
    patients = patient_identifiers(doc)
    if patients:
        keys = [
            vault_.patient_key_in(conn, sender, vault.lookup_tag(vault_.lookup_key, sender, p))
            for p in patients
        ]
        sealing = vault_.key_set(keys)
        digest_key = sealing.digest_key
    else:
        # A Bundle naming no patient: its own key, as before (or a new one, if the key it
        # was sealed under was that of an identifier that has no visible character at all).
        own = old if old.pseudonym is None else vault_.new_bundle_key(conn, sender)
        sealing, digest_key = vault_.key_set([own]), log_digest
    sealed_salt, sealed_data = vault.seal_parts(
        sealing,
        [(salt, vault.bundle_aad("salt", *where)), (data, vault.bundle_aad("data", *where))],
    )
    digest = vault.keyed_digest(digest_key, data)
    conn.execute(
        update(bundles_table)
        .where(bundles_table.c.idx == index)
        .values(data=sealed_data, salt=sealed_salt, digest=digest)
    )
    keys_of_row = dedupe_keys(sender, m["idempotency_key"], m["ident_hash"], int(m["version"]))
    if keys_of_row:
        d = store.dedupe_table.c
        conn.execute(
            update(store.dedupe_table)
            .where(d.key.in_(keys_of_row), d.idx == index)
            .values(digest=digest)
        )
    done.bundles += 1


def _rename(
    conn: Connection,
    vault_: vault.Vault,
    sender: str,
    spelled: tuple[str, str],
    done: _Counts,
) -> None:
    """The key row of an identifier as spelled, given its one spelling's lookup tag."""
    one = normalise(spelled)
    if one == spelled or not all(one):
        return
    old_tag = vault.spelling_tag(vault_.lookup_key, sender, spelled)
    new_tag = vault.lookup_tag(vault_.lookup_key, sender, one)
    k = keys_table
    found = conn.execute(
        select(k.c.key_id).where(k.c.sender == sender, k.c.lookup == old_tag)
    ).first()
    if found is None:
        return
    taken = conn.execute(
        select(k.c.key_id).where(k.c.sender == sender, k.c.lookup == new_tag)
    ).first()
    if taken is None:
        conn.execute(update(k).where(k.c.key_id == found.key_id).values(lookup=new_tag))
        done.renamed += 1
    else:
        conn.execute(update(k).where(k.c.key_id == found.key_id).values(lookup=None))
        conn.execute(
            insert(aliases_table).values(key_id=found.key_id, sender=sender, lookup=new_tag)
        )
        done.aliased += 1
    r = requests_table
    if inspect(conn).has_table(r.name):
        # A pending erasure names the patient by lookup tag: it must still find the patient.
        conn.execute(
            update(r)
            .where(r.c.sender == sender, r.c.lookup == old_tag, r.c.idx.is_(None))
            .values(lookup=new_tag)
        )
