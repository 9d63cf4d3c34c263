"""Stored Bundles read back: one version by id or by ledger index, opened by the vault; as a
FHIR read serves it; and whom each names.

`exchange_bundles` holds each submitted Bundle version byte for byte, with the salt of its
ledger commitment, both sealed by the vault (exchange.vault: the readers here open them,
given the vault); a row is written in the same transaction as its ledger entry
(exchange.bundles.submit), so neither exists without the other. Bundle rows are append-only,
like the ledger's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, RowMapping, select

from exchange.bundles.splice import splice_identity
from exchange.store.tables import bundles_table
from exchange.vault import Erased, Vault, sealed_key_ids


@dataclass(frozen=True)
class BundleRow:
    id: str
    version: int
    index: int
    sender: str
    kind: str
    media: str
    salt: bytes
    data: bytes  # exactly as submitted: what the ledger entry commits to
    received: str  # the entry's time, RFC 3339 UTC with milliseconds


def as_read(data: bytes, bundle_id: str, version: int, received: str) -> bytes:
    """A stored Bundle version as a FHIR read answers it: its submitted bytes with the
    server's `id`, `meta.versionId` and `meta.lastUpdated` spliced in (exchange.bundles.splice),
    whatever the client put there. The receipt commits to the submitted bytes, not these."""
    return splice_identity(data, bundle_id, str(version), received)


_ROW_COLUMNS = (
    bundles_table.c.id,
    bundles_table.c.version,
    bundles_table.c.idx,
    bundles_table.c.sender,
    bundles_table.c.kind,
    bundles_table.c.media,
    bundles_table.c.salt,
    bundles_table.c.received,
)


def bundle_by_id(vault_: Vault, bundle_id: str, version: int | None = None) -> BundleRow | None:
    """A stored Bundle: the given version, or the latest one."""
    q = select(*_ROW_COLUMNS, bundles_table.c.data).where(bundles_table.c.id == bundle_id)
    if version is None:
        q = q.order_by(bundles_table.c.version.desc()).limit(1)
    else:
        q = q.where(bundles_table.c.version == version)
    with vault_.engine.connect() as conn:
        row = conn.execute(q).first()
        return None if row is None else _bundle_row(vault_, conn, row._mapping)


def bundle_versions(vault_: Vault, bundle_id: str) -> list[BundleRow]:
    """Every stored version of a Bundle, oldest first (decrypted; vault.Erased when erased)."""
    q = (
        select(*_ROW_COLUMNS, bundles_table.c.data)
        .where(bundles_table.c.id == bundle_id)
        .order_by(bundles_table.c.version)
    )
    with vault_.engine.connect() as conn:
        return [_bundle_row(vault_, conn, row._mapping) for row in conn.execute(q)]


def bundle_by_index(
    vault_: Vault, conn: Connection, index: int, *, with_data: bool = False
) -> BundleRow | None:
    """A stored Bundle by its ledger index (decrypted; raises vault.Erased when erased)."""
    cols = (*_ROW_COLUMNS, bundles_table.c.data) if with_data else _ROW_COLUMNS
    row = conn.execute(select(*cols).where(bundles_table.c.idx == index)).first()
    return None if row is None else _bundle_row(vault_, conn, row._mapping)


def bundle_id_of_version(
    conn: Connection, sender: str, ident_hash: bytes, version: int
) -> str | None:
    """The logical id of version `version` of the sender's Bundle with this identifier."""
    return conn.execute(
        select(bundles_table.c.id).where(
            bundles_table.c.sender == sender,
            bundles_table.c.ident_hash == ident_hash,
            bundles_table.c.version == version,
        )
    ).scalar()


def subjects_by_index(vault_: Vault, indexes: Iterable[int]) -> dict[int, list[bytes]]:
    """The pseudonyms of the patients each Bundle at these ledger indexes names: those whose
    keys its bytes are sealed under (exchange.vault), in the order it names them. The first is
    its entry's subject (for a Bundle stored under a spelling that exchange.store_upgrade made
    an alias, the same patient's current pseudonym); a Bundle naming no patient has none, and
    an erased patient has none left. An access entry about the Bundle's data names each."""
    wanted = sorted(set(indexes))
    found: dict[int, list[bytes]] = {}
    t = bundles_table
    with vault_.engine.connect() as conn:
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            # The salt is sealed under the same keys as the bytes, and is small.
            rows = conn.execute(select(t.c.idx, t.c.salt).where(t.c.idx.in_(chunk))).all()
            needs = {int(r.idx): sealed_key_ids(bytes(r.salt)) for r in rows}
            pseudonyms = vault_.pseudonyms(conn, {k for ids in needs.values() for k in ids})
            for idx, ids in needs.items():
                found[idx] = [pseudonyms[k] for k in ids if k in pseudonyms]
    return found


def patients_of(named: Iterable[Sequence[bytes]]) -> dict[bytes, list[bytes]]:
    """Whom the access entries about some Bundles name (exchange.access), given the patients
    each Bundle names (:func:`subjects_by_index`): one entry per Bundle's first patient (its
    own entry's subject), in order, naming the further patients of each such Bundle, without
    repeats."""
    out: dict[bytes, list[bytes]] = {}
    for subjects in named:
        if not subjects:
            continue
        first, *rest = subjects
        others = out.setdefault(first, [])
        others.extend(s for s in dict.fromkeys(rest) if s != first and s not in others)
    return out


def bundle_patients(vault_: Vault, indexes: Iterable[int]) -> dict[bytes, list[bytes]]:
    """:func:`patients_of` the Bundles at `indexes`, in ledger order: whom a disclosure of
    their data concerns."""
    by_index = subjects_by_index(vault_, indexes)
    return patients_of(by_index[idx] for idx in sorted(by_index))


# Values per IN list: far below every backend's limit on bound parameters.
_IN_CHUNK = 500


def _bundle_row(opened: Vault, conn: Connection, m: RowMapping) -> BundleRow:
    # Salt and bytes are sealed in the vault (exchange.vault); this is where they are opened.
    where = (m["id"], int(m["version"]), int(m["idx"]))
    try:
        salt = opened.open_part(conn, bytes(m["salt"]), "salt", *where)
        data = opened.open_part(conn, bytes(m["data"]), "data", *where) if "data" in m else b""
    except Erased as e:
        e.sender = m["sender"]  # so a reader can answer another org's as absent, not erased
        raise
    return BundleRow(
        id=m["id"],
        version=int(m["version"]),
        index=int(m["idx"]),
        sender=m["sender"],
        kind=m["kind"],
        media=m["media"],
        salt=salt,
        data=data,
        received=m["received"],
    )
