"""The exchange's tables, beside the ledger's in the same database.

`exchange_bundles` holds each submitted Bundle version byte for byte, with the salt of its
ledger commitment, both sealed by the vault (exchange.vault: read them through bundle_by_id /
bundle_by_index, which decrypt); a row is written in the same transaction as its ledger entry
(ledger.log.Submission.write), so neither exists without the other. Bundle rows are
append-only, like the ledger's. `exchange_clients` holds API clients with the SHA-256 of their
bearer token, never the token, its expiry and the client's revocation; every change of a
credential bumps the one row of `exchange_credential_epoch`, which each request reads (shared
by concurrent requests) before it trusts a credential it has cached. `exchange_secrets` holds
per-log keys (the pseudonym key).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError

from ledger import store

metadata = MetaData()

bundles_table = Table(
    "exchange_bundles",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, nullable=False, unique=True),  # the ledger entry
    Column("sender", String(64), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("media", String(64), nullable=False),
    Column("salt", LargeBinary, nullable=False),
    Column("digest", LargeBinary, nullable=False),  # SHA-256 of data
    Column("data", LargeBinary, nullable=False),
    Column("subject", LargeBinary),  # the patient's pseudonym, as in the entry
    # Bundle.identifier is indexed through a hash: its text is unbounded, index keys are not.
    Column("ident_hash", LargeBinary),
    Column("ident_system", Text),
    Column("ident_value", Text),
    Column("idempotency_key", String(256)),
    Column("received", String(32), nullable=False),
    Index("ix_exchange_bundles_ident", "sender", "ident_hash", "version", unique=True),
    Index("ix_exchange_bundles_subject", "sender", "subject"),
)

clients_table = Table(
    "exchange_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("role", String(16), nullable=False),
    Column("org", String(64)),
    Column("token_hash", LargeBinary, nullable=False, unique=True),
    Column("created", String(32), nullable=False),
    # Added after the first databases were made: nullable, so create_schema can add them.
    Column("expires", BigInteger),  # unix seconds after which the token is refused; NULL never
    Column("revoked", String(32)),  # when the client was revoked (RFC 3339); NULL while active
)

credential_epoch_table = Table(
    "exchange_credential_epoch",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1
    Column("epoch", BigInteger, nullable=False),
)

# SMART Backend Services (exchange.smart): each client's registered public JWKS, the `jti` of
# every accepted client assertion until it expires (replay refusal), and issued access tokens,
# kept as SHA-256 only, like the `mlt_` credentials.
smart_jwks_table = Table(
    "exchange_smart_jwks",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("jwks", Text, nullable=False),
    Column("created", String(32), nullable=False),
)

smart_jti_table = Table(
    "exchange_smart_jti",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("jti", String(256), primary_key=True),
    Column("expires", BigInteger, nullable=False),  # unix seconds
)

smart_tokens_table = Table(
    "exchange_smart_tokens",
    metadata,
    Column("token_hash", LargeBinary, primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("scopes", Text, nullable=False),  # space-separated, as granted
    Column("purpose", String(64)),
    Column("expires", BigInteger, nullable=False),  # unix seconds
)

secrets_table = Table(
    "exchange_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", LargeBinary, nullable=False),
)

APPEND_ONLY_TABLES = ("exchange_bundles", "access_events", "access_event_subjects")
PSEUDONYM_KEY = "pseudonym-key"


def create_schema(engine: Engine) -> None:
    """Creates the exchange tables and their append-only triggers (idempotent)."""
    from exchange.vault import vault  # noqa: F401  (define their tables on this metadata)

    # The ledger's schema first: on PostgreSQL it defines the trigger function used here.
    store.create_schema(engine)
    with store.schema_transaction(engine) as conn:
        metadata.create_all(conn)
        _add_missing_columns(conn, clients_table)
        epoch = credential_epoch_table.c
        if conn.execute(select(epoch.id).where(epoch.id == 1)).first() is None:
            conn.execute(insert(credential_epoch_table).values(id=1, epoch=0))
        for table in APPEND_ONLY_TABLES:
            store._create_append_only_trigger(conn, table)


def _add_missing_columns(conn: Connection, table: Table) -> None:
    """Adds the columns a database made by an earlier version lacks (only nullable ones are
    ever added to a table, so ADD COLUMN needs no default)."""
    have = {c["name"] for c in inspect(conn).get_columns(table.name)}
    for column in table.columns:
        if column.name not in have:
            assert column.nullable, f"{table.name}.{column.name} cannot be added to old rows"
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"))


def secret(engine: Engine, name: str, size: int = 32) -> bytes:
    """The named per-log secret, created at random on first use by whichever process is first."""
    with engine.connect() as conn:
        found = conn.execute(select(secrets_table.c.value).where(secrets_table.c.name == name))
        value = found.scalar()
    if value is not None:
        return bytes(value)
    try:
        with store.write_transaction(engine) as conn:
            conn.execute(insert(secrets_table).values(name=name, value=os.urandom(size)))
    except IntegrityError:
        pass  # another process created it first
    return secret(engine, name, size)


@dataclass(frozen=True)
class BundleRow:
    id: str
    version: int
    index: int
    sender: str
    kind: str
    media: str
    salt: bytes
    data: bytes


_ROW_COLUMNS = (
    bundles_table.c.id,
    bundles_table.c.version,
    bundles_table.c.idx,
    bundles_table.c.sender,
    bundles_table.c.kind,
    bundles_table.c.media,
    bundles_table.c.salt,
)


def bundle_by_id(engine: Engine, bundle_id: str, version: int | None = None) -> BundleRow | None:
    """A stored Bundle: the given version, or the latest one."""
    q = select(*_ROW_COLUMNS, bundles_table.c.data).where(bundles_table.c.id == bundle_id)
    if version is None:
        q = q.order_by(bundles_table.c.version.desc()).limit(1)
    else:
        q = q.where(bundles_table.c.version == version)
    with engine.connect() as conn:
        row = conn.execute(q).first()
        return None if row is None else _bundle_row(conn, row)


def bundle_by_index(conn: Connection, index: int, *, with_data: bool = False) -> BundleRow | None:
    """A stored Bundle by its ledger index (decrypted; raises vault.Erased when erased)."""
    cols = (*_ROW_COLUMNS, bundles_table.c.data) if with_data else _ROW_COLUMNS
    row = conn.execute(select(*cols).where(bundles_table.c.idx == index)).first()
    return None if row is None else _bundle_row(conn, row)


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


def subjects_by_index(engine: Engine, indexes: Iterable[int]) -> dict[int, list[bytes]]:
    """The pseudonyms of the patients each Bundle at these ledger indexes names: those whose
    keys its bytes are sealed under (exchange.vault), in the order it names them. The first is
    its entry's subject (for a Bundle stored under a spelling that exchange.store_upgrade made
    an alias, the same patient's current pseudonym); a Bundle naming no patient has none, and
    an erased patient has none left. An access entry about the Bundle's data names each."""
    from exchange.vault import vault

    wanted = sorted(set(indexes))
    opened = vault.of(engine)
    found: dict[int, list[bytes]] = {}
    t = bundles_table
    with engine.connect() as conn:
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            # The salt is sealed under the same keys as the bytes, and is small.
            rows = conn.execute(select(t.c.idx, t.c.salt).where(t.c.idx.in_(chunk))).all()
            needs = {int(r.idx): vault.sealed_key_ids(bytes(r.salt)) for r in rows}
            pseudonyms = opened.pseudonyms(conn, {k for ids in needs.values() for k in ids})
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


def bundle_patients(engine: Engine, indexes: Iterable[int]) -> dict[bytes, list[bytes]]:
    """:func:`patients_of` the Bundles at `indexes`, in ledger order: whom a disclosure of
    their data concerns."""
    by_index = subjects_by_index(engine, indexes)
    return patients_of(by_index[idx] for idx in sorted(by_index))


# Values per IN list: far below every backend's limit on bound parameters.
_IN_CHUNK = 500


def _bundle_row(conn: Connection, row: object) -> BundleRow:
    # Salt and bytes are sealed in the vault (exchange.vault); this is where they are opened.
    from exchange.vault import vault

    m = row._mapping  # type: ignore[attr-defined]
    opened = vault.of(conn.engine)
    where = (m["id"], int(m["version"]), int(m["idx"]))
    try:
        salt = opened.open_part(conn, bytes(m["salt"]), "salt", *where)
        data = opened.open_part(conn, bytes(m["data"]), "data", *where) if "data" in m else b""
    except vault.Erased as e:
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
    )
