"""API clients, their roles, and bearer credentials.

A credential is 32 random bytes (base64url, prefixed `mlt_`), shown once when the client is
registered; the database keeps only its SHA-256, so a copy of the database lets no one call
the API. Roles: `hospital` (submits Bundles as its org, reads what its org submitted),
`insurer` (settlement pull under consent), `auditor` (log reads and access-event metadata),
`admin` (reads everything).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBearer
from sqlalchemy import Engine, insert, select

from exchange import smart
from exchange.db import clients_table, smart_jwks_table
from exchange.outcome import ApiError

if TYPE_CHECKING:
    from exchange.services import Services
from ledger import store
from ledger.entry import format_time

# A regulator (NMPA, the pilot zone's medical products administration) reads one product's
# real-world data under each patient's research consent (exchange/regulator.py).
ROLES = ("hospital", "insurer", "auditor", "admin", "regulator")
# Roles that act for an organisation must name it: it becomes the ledger entry's sender, and
# the Organization a patient's consent names.
ORG_ROLES = frozenset({"hospital", "insurer", "regulator"})
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
    engine: Engine, name: str, role: str, org: str | None, jwks: str | None = None
) -> tuple[Client, str]:
    """Stores a new client and returns it with its credential, which is not kept anywhere.

    `jwks` (JSON text) registers the client's public keys for SMART Backend Services; it is
    validated first (smart.JwksError) and stored in the same transaction as the client.
    """
    check_client(name, role, org)
    jwks_json = smart.validated_jwks(jwks) if jwks is not None else None
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
            )
        )
        if jwks_json is not None:
            conn.execute(
                insert(smart_jwks_table).values(
                    client_id=client.client_id,
                    jwks=jwks_json,
                    created=format_time(datetime.now(UTC)),
                )
            )
    return client, token


def list_clients(engine: Engine) -> list[Client]:
    c = clients_table.c
    with engine.connect() as conn:
        rows = conn.execute(select(c.client_id, c.name, c.role, c.org).order_by(c.created)).all()
    return [Client(*row) for row in rows]


def find_client(engine: Engine, token_hash: bytes) -> Client | None:
    c = clients_table.c
    with engine.connect() as conn:
        row = conn.execute(
            select(c.client_id, c.name, c.role, c.org).where(c.token_hash == token_hash)
        ).first()
    return None if row is None else Client(*row)


class ClientCache:
    """Known credentials, kept briefly so a busy client costs no database read per request.

    Only hits are kept (random guesses cannot fill it); a removed client stops working within
    `ttl` seconds.
    """

    def __init__(self, engine: Engine, ttl: float = 10.0, max_size: int = 10_000) -> None:
        self.engine = engine
        self.ttl = ttl
        self.max_size = max_size
        self._hits: dict[bytes, tuple[Client, float]] = {}

    async def lookup(self, token: str) -> Client | None:
        if len(token) > _MAX_TOKEN_CHARS:
            return None
        key = hash_token(token)
        now = time.monotonic()
        hit = self._hits.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        client = await run_in_threadpool(find_client, self.engine, key)
        if client is not None:
            if len(self._hits) >= self.max_size:
                self._hits.clear()
            self._hits[key] = (client, now + self.ttl)
        return client


# --- FastAPI dependencies ----------------------------------------------------------------


def _unauthorized(diagnostics: str, error: str | None = None) -> ApiError:
    challenge = 'Bearer realm="medledger"' + (f', error="{error}"' if error else "")
    return ApiError(401, "login", diagnostics, headers={"WWW-Authenticate": challenge})


class RoleGuard(HTTPBearer):
    """A dependency admitting clients of the given roles: 401 without a valid bearer
    credential, 403 for other roles.

    One dependency, not a chain of them: it runs on every request, and each level of
    FastAPI dependency costs more than the lookup itself. Being an HTTPBearer, it still
    declares the bearer scheme in the OpenAPI document.
    """

    def __init__(self, *roles: str) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="bearer",
            description="a credential from `medledger clients add`",
        )
        self.roles = roles

    async def __call__(self, request: Request) -> Client:  # type: ignore[override]
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise _unauthorized(
                "send Authorization: Bearer <credential from medledger clients add>"
            )
        client = await authenticate(request.app.state.services, token)
        if client is None:
            raise _unauthorized("the bearer credential is not valid", "invalid_token")
        if client.role not in self.roles:
            raise ApiError(
                403,
                "forbidden",
                f"a {client.role} client may not do this; it needs the role "
                + " or ".join(self.roles),
            )
        return client


def require_role(*roles: str) -> RoleGuard:
    return RoleGuard(*roles)


def bearer_token(authorization: str | None) -> str | None:
    """The credential of an `Authorization: Bearer <credential>` value, else None.

    The scheme is case-insensitive and the credential may have blanks around it (RFC 9110
    §11.1); the rate limiter reads headers with this too, so both agree whose credential a
    header carries however it is spelt.
    """
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def authenticate(services: Services, token: str) -> Client | None:
    """The client behind an `mlt_` credential or a live SMART access token."""
    if token.startswith(TOKEN_PREFIX):
        return await services.clients.lookup(token)
    engine = services.engine
    grant = await run_in_threadpool(smart.lookup_token, engine, token)
    if grant is None:
        return None
    return Client(grant.client_id, grant.name, grant.role, grant.org, grant.scopes, grant.purpose)


def require_scope(client: Client, resource_type: str, interaction: str) -> None:
    """Refuses (403) a SMART access token without a scope for this interaction.

    `interaction` is create, read, update, delete or search (or its SMART v2 letter). An
    `mlt_` credential (scopes None) passes: its role check is the whole rule.
    """
    if client.scopes is None or smart.scope_permits(client.scopes, resource_type, interaction):
        return
    raise ApiError(
        403,
        "forbidden",
        f"the access token lacks the scope {smart.needed_scope(resource_type, interaction)} "
        f"(granted: {' '.join(sorted(client.scopes)) or 'none'}); request it at the token "
        "endpoint",
    )
