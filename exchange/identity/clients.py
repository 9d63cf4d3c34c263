"""API clients, their roles, and bearer credentials.

A credential is 32 random bytes (base64url, prefixed `mlt_`), shown once when the client is
registered or rotated; the database keeps only its SHA-256, so a copy of the database lets no
one call the API. A credential may expire; a client may be revoked, and its credential
rotated or its SMART JWKS replaced: each change takes effect on the next request of every
process (ClientCache), and kills the client's issued SMART access tokens.

Roles: `hospital` (submits Bundles as its org, reads what its org submitted), `insurer`
(settlement pull under consent), `auditor` (log reads and the registry), `regulator` (one
product's RWD under research consent), `mediator` (a patient's case package under a consent
naming it for legal purposes), `admin` (reads everything). Each route declares which
roles it admits and the SMART scope an access token needs (require_role), or is @public.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, delete, insert, select, update

from exchange.errors import Forbidden
from exchange.identity import smart
from exchange.identity.jwks_url import checked_url
from exchange.store.tables import (
    clients_table,
    credential_epoch_table,
    smart_jwks_table,
    smart_tokens_table,
)
from ledger import store
from ledger.entry import format_time

# A regulator (NMPA, the pilot zone's medical products administration) reads one product's
# real-world data under each patient's research consent (exchange/regulator.py).
ROLES = ("hospital", "insurer", "auditor", "admin", "regulator", "mediator")
# Roles that act for an organisation must name it: it becomes the ledger entry's sender, and
# the Organization a patient's consent names.
ORG_ROLES = frozenset({"hospital", "insurer", "regulator", "mediator"})
TOKEN_PREFIX = "mlt_"
# The same rule as a ledger entry's sender (a FHIR id), since a hospital's org becomes one.
_ORG = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_MAX_TOKEN_CHARS = 256


class ClientError(ValueError):
    """The client cannot be registered as asked (unknown role, missing or malformed org)."""


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    role: str
    org: str | None
    # SMART v2 scopes of an access token (exchange.smart); None for an `mlt_` credential,
    # which may do everything its role may.
    scopes: frozenset[str] | None = None
    # The v3-ActReason code the client assertion bound into the token (purpose_of_use).
    purpose: str | None = None


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_client(name: str, role: str, org: str | None) -> None:
    if not name.strip():
        raise ClientError("the client needs a name")
    if role not in ROLES:
        raise ClientError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if role in ORG_ROLES and not org:
        raise ClientError(f"a {role} client needs --org: the id of the organisation it acts for")
    if org is not None and not _ORG.fullmatch(org):
        raise ClientError(
            f"org {org!r} is not an organisation id (1-64 of A-Z a-z 0-9 - .), "
            "as in Organization/<id>"
        )


def register_client(
    engine: Engine,
    name: str,
    role: str,
    org: str | None,
    jwks: str | None = None,
    expires: int | None = None,
    jwks_url: str | None = None,
) -> tuple[Client, str]:
    """Stores a new client and returns it with its credential, which is not kept anywhere.

    `jwks` (JSON text) registers the client's public keys for SMART Backend Services, or
    `jwks_url` where they are published (not both); either is checked first (smart.JwksError)
    and stored in the same transaction as the client. `expires` (unix seconds) is when the
    credential stops working; None: never.
    """
    check_client(name, role, org)
    keys = _checked_keys(jwks, jwks_url) if jwks is not None or jwks_url is not None else None
    client = Client("cl-" + secrets.token_hex(8), name.strip(), role, org)
    token = new_token()
    with store.write_transaction(engine) as conn:
        conn.execute(
            insert(clients_table).values(
                client_id=client.client_id,
                name=client.name,
                role=role,
                org=org,
                token_hash=hash_token(token),
                created=format_time(datetime.now(UTC)),
                expires=expires,
            )
        )
        if keys is not None:
            conn.execute(insert(smart_jwks_table).values(client_id=client.client_id, **keys))
    return client, token


def _checked_keys(jwks: str | None, url: str | None) -> dict[str, str | None]:
    """The smart_jwks_table row values of a JWKS or a JWKS URL (exactly one of them)."""
    if (jwks is None) == (url is None):
        raise smart.JwksError("register either a JWKS or a JWKS URL, not both")
    return {
        "jwks": smart.validated_jwks(jwks) if jwks is not None else None,
        "jwks_url": checked_url(url) if url is not None else None,
        "created": format_time(datetime.now(UTC)),
    }


class ClientStateError(LookupError):
    """The client named is not one that can be changed: unknown, or revoked."""

    def __init__(self, client_id: str, why: str) -> None:
        super().__init__(f"client {client_id!r} {why}")
        self.client_id = client_id


@dataclass(frozen=True)
class ClientInfo:
    """A registered client as `medledger clients list` shows it (never its credential)."""

    client_id: str
    name: str
    role: str
    org: str | None
    created: str
    expires: int | None  # unix seconds; None: never
    revoked: str | None  # when (RFC 3339); None: active
    smart: bool  # has a registered JWKS (SMART Backend Services)

    def status(self, now: float) -> str:
        if self.revoked is not None:
            return "revoked"
        return "expired" if self.expires is not None and self.expires <= now else "active"


def list_clients(engine: Engine) -> list[ClientInfo]:
    c, j = clients_table.c, smart_jwks_table.c
    q = (
        select(c.client_id, c.name, c.role, c.org, c.created, c.expires, c.revoked, j.client_id)
        .outerjoin(smart_jwks_table, j.client_id == c.client_id)
        .order_by(c.created, c.client_id)
    )
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return [ClientInfo(*row[:7], smart=row[7] is not None) for row in rows]


def _locked(conn: Connection, client_id: str) -> str | None:
    """Locks the client's row (PostgreSQL; a SQLite write transaction holds the whole store),
    so a token being issued meanwhile waits for the change; returns when it was revoked (None:
    active) and refuses an unknown client."""
    c = clients_table.c
    row = conn.execute(select(c.revoked).where(c.client_id == client_id).with_for_update()).first()
    if row is None:
        raise ClientStateError(client_id, "is not registered (see medledger clients list)")
    revoked: str | None = row.revoked
    return revoked


def _changeable(conn: Connection, client_id: str) -> None:
    revoked = _locked(conn, client_id)
    if revoked is not None:
        raise ClientStateError(client_id, f"was revoked at {revoked}; register a new client")


def _credentials_changed(conn: Connection, client_id: str) -> None:
    """What every credential change does in its transaction: the client's issued SMART access
    tokens die with it, and the epoch moves on, so no process trusts a cached credential."""
    conn.execute(delete(smart_tokens_table).where(smart_tokens_table.c.client_id == client_id))
    e = credential_epoch_table.c
    conn.execute(update(credential_epoch_table).where(e.id == 1).values(epoch=e.epoch + 1))


def revoke_client(engine: Engine, client_id: str) -> bool:
    """Revokes a client for good: its `mlt_` credential, its issued access tokens and its
    JWKS stop working on the next request of any process. False: it was revoked already."""
    with store.write_transaction(engine) as conn:
        if _locked(conn, client_id) is not None:
            return False
        conn.execute(
            update(clients_table)
            .where(clients_table.c.client_id == client_id)
            .values(revoked=format_time(datetime.now(UTC)))
        )
        _credentials_changed(conn, client_id)
    return True


def rotate_token(engine: Engine, client_id: str, expires: int | None = None) -> str:
    """Gives the client a new `mlt_` credential (returned once; `expires` as for
    register_client); the old one stops working on the next request."""
    token = new_token()
    with store.write_transaction(engine) as conn:
        _changeable(conn, client_id)
        conn.execute(
            update(clients_table)
            .where(clients_table.c.client_id == client_id)
            .values(token_hash=hash_token(token), expires=expires)
        )
        _credentials_changed(conn, client_id)
    return token


def replace_jwks(
    engine: Engine, client_id: str, jwks: str | None = None, jwks_url: str | None = None
) -> None:
    """Replaces the client's registered JWKS or JWKS URL (or registers one): assertions
    signed by the old keys are refused from now on, and the access tokens they got stop
    working."""
    keys = _checked_keys(jwks, jwks_url)
    j = smart_jwks_table.c
    with store.write_transaction(engine) as conn:
        _changeable(conn, client_id)
        conn.execute(delete(smart_jwks_table).where(j.client_id == client_id))
        conn.execute(insert(smart_jwks_table).values(client_id=client_id, **keys))
        _credentials_changed(conn, client_id)


_DURATION = re.compile(r"([1-9][0-9]{0,5})([dhm])")
_UNIT_SECONDS = {"d": 86_400, "h": 3_600, "m": 60}


def expiry(text: str, now: datetime) -> int:
    """`--expires`: a duration from now (`90d`, `12h`, `30m`) or an RFC 3339 time with its
    offset, as unix seconds; ClientError unless it is in the future."""
    m = _DURATION.fullmatch(text)
    if m is not None:
        return int(now.timestamp()) + int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise ClientError(
            f"--expires {text!r} is neither a duration (90d, 12h, 30m) nor an RFC 3339 time "
            "with its offset (2027-01-01T00:00:00Z)"
        )
    if when <= now:
        raise ClientError(f"--expires {text!r} is not in the future")
    return int(when.timestamp())


def find_credential(engine: Engine, token_hash: bytes) -> tuple[Client, int | None] | None:
    """The client behind a credential unless revoked, with the credential's expiry (unix
    seconds; None: never)."""
    c = clients_table.c
    with engine.connect() as conn:
        row = conn.execute(
            select(c.client_id, c.name, c.role, c.org, c.expires).where(
                c.token_hash == token_hash, c.revoked.is_(None)
            )
        ).first()
    return None if row is None else (Client(*row[:4]), row[4])


def live(found: tuple[Client, int | None] | None) -> Client | None:
    if found is None:
        return None
    client, expires = found
    return None if expires is not None and expires <= time.time() else client


def find_client(engine: Engine, token_hash: bytes) -> Client | None:
    """The client behind a credential that is neither revoked nor expired."""
    return live(find_credential(engine, token_hash))


def require_scope(client: Client, resource_type: str, interaction: str) -> None:
    """Refuses (403) a SMART access token without a scope for this interaction.

    `interaction` is create, read, update, delete or search (or its SMART v2 letter). An
    `mlt_` credential (scopes None) passes: its role check is the whole rule.
    """
    if client.scopes is None or smart.scope_permits(client.scopes, resource_type, interaction):
        return
    raise Forbidden(
        f"the access token lacks the scope {smart.needed_scope(resource_type, interaction)} "
        f"(granted: {' '.join(sorted(client.scopes)) or 'none'}); request it at the token "
        "endpoint",
    )
