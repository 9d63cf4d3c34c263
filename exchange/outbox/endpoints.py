"""Where each recipient receives deliveries: its endpoint, stored beside its legal basis.

A recipient (``exchange_crossborder_recipients``, exchange.consent.crossborder) may have one
endpoint (:func:`exchange.delivery.endpoints.parse_endpoint`). The URL and the HL7 v2 message
are kept in the clear; the credentials (a bearer token, or a SMART client id and private key)
are sealed by the vault under a key derived from its master key, bound to the recipient's
org, so the database alone reveals none of them. Reading an endpoint parses it again, so what
is sent to is always what the parser accepts today.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, literal, select, update

from exchange.consent.crossborder import Recipient, recipient_of_row
from exchange.delivery.endpoints import (
    BearerToken,
    Endpoint,
    FhirEndpoint,
    MllpEndpoint,
    SmartCredentials,
    parse_endpoint,
)
from exchange.settlement.index import NEWEST_INDEXED, consents_generation
from exchange.store.tables import recipients_table
from exchange.vault import Vault
from ledger import store

__all__ = [
    "NotRecorded",
    "Parsed",
    "Reachable",
    "RecipientEndpoint",
    "describe",
    "endpoint_of",
    "reachable",
    "set_endpoint",
    "still",
]


class NotRecorded(LookupError):
    """An endpoint was given for a recipient that is not recorded (no country, no basis)."""

    def __init__(self, org: str) -> None:
        super().__init__(f"recipient {org} is not recorded: give --country (and its --basis)")
        self.org = org


@dataclass(frozen=True)
class RecipientEndpoint:
    org: str
    country: str
    endpoint: Endpoint


def _aad(org: str) -> bytes:
    return b"medledger endpoint credentials\x00" + org.encode()


def _secret(endpoint: Endpoint) -> bytes | None:
    if not isinstance(endpoint, FhirEndpoint) or endpoint.credentials is None:
        return None
    c = endpoint.credentials
    if isinstance(c, BearerToken):
        return json.dumps({"token": c.token}).encode()
    return json.dumps(
        {"client_id": c.client_id, "key": c.key_pem.decode("ascii"), "key_id": c.key_id}
    ).encode()


def set_endpoint(engine: Engine, vault_: Vault, org: str, endpoint: Endpoint | None) -> None:
    """Record (or, with None, remove) the endpoint of a recorded recipient."""
    t = recipients_table
    secret = None if endpoint is None else _secret(endpoint)
    values = {
        "endpoint": None if endpoint is None else endpoint.url,
        "endpoint_message": endpoint.message if isinstance(endpoint, MllpEndpoint) else None,
        "endpoint_secret": None if secret is None else vault_.seal_secret(secret, _aad(org)),
    }
    with store.write_transaction(engine) as conn:
        done = conn.execute(update(t).where(t.c.org == org).values(**values))
        if done.rowcount == 0:
            raise NotRecorded(org)


def _parse(
    vault_: Vault, org: str, url: str, message: str | None, sealed: bytes | None
) -> Endpoint:
    creds: dict[str, str] = {}
    if sealed is not None:
        creds = json.loads(vault_.open_secret(bytes(sealed), _aad(org)))
    key = creds.get("key")
    return parse_endpoint(
        url,
        token=creds.get("token"),
        client_id=creds.get("client_id"),
        key_pem=None if key is None else key.encode("ascii"),
        key_id=creds.get("key_id"),
        message=message,
    )


# What the recipient's row held -> the endpoint parsed from it (Parsed).
_Stored = tuple[str, str, str | None, bytes | None]


class Parsed:
    """Endpoints already parsed, by the exact row they came from: the row is read on every
    use, so a changed endpoint is parsed (and its credentials opened) again, and an unchanged
    one is not, once per delivery."""

    SIZE = 256

    def __init__(self) -> None:
        self._by_row: dict[_Stored, Endpoint] = {}
        self._lock = threading.Lock()

    def get(self, vault_: Vault, stored: _Stored) -> Endpoint:
        with self._lock:
            found = self._by_row.get(stored)
        if found is None:
            found = _parse(vault_, *stored)
            with self._lock:
                if len(self._by_row) >= self.SIZE:
                    self._by_row.clear()
                self._by_row[stored] = found
        return found


def endpoint_of(
    engine: Engine, vault_: Vault, org: str, parsed: Parsed | None = None
) -> RecipientEndpoint | None:
    """The recipient's endpoint with its credentials, or None when it has none."""
    t = recipients_table
    q = select(t.c.country, t.c.endpoint, t.c.endpoint_message, t.c.endpoint_secret)
    with engine.connect() as conn:
        row = conn.execute(q.where(t.c.org == org)).first()
    if row is None or row.endpoint is None:
        return None
    sealed = None if row.endpoint_secret is None else bytes(row.endpoint_secret)
    stored = (org, row.endpoint, row.endpoint_message, sealed)
    endpoint = _parse(vault_, *stored) if parsed is None else parsed.get(vault_, stored)
    return RecipientEndpoint(org, row.country, endpoint)


@dataclass(frozen=True)
class Reachable:
    """What deciding deliveries reads of the store, in one look: every recipient that has an
    endpoint (org -> its URL and the recipient; no credentials are opened), and the
    generation of the patients' Consents (exchange.settlement.index.consents_generation).
    ``rows`` is the look as read, for :func:`still` to compare."""

    endpoints: dict[str, tuple[str, Recipient]]
    consents_at: int
    rows: tuple[tuple[Any, ...], ...]


_t = recipients_table.c
_one_row = select(literal(1).label("one")).subquery("one_row")
# Built once, one statement: read for every record submission, where building or a second
# round trip would cost more than the read. The left join gives one row with no recipients.
_REACHABLE = (
    select(*NEWEST_INDEXED, _t.org, _t.endpoint, _t.country, _t.basis, _t.reference)
    .select_from(_one_row.outerjoin(recipients_table, _t.endpoint.is_not(None)))
    .order_by(_t.org)
)


def _look(conn: Connection) -> tuple[tuple[Any, ...], ...]:
    return tuple(tuple(r) for r in conn.execute(_REACHABLE))


def reachable(engine: Engine) -> Reachable:
    with engine.connect() as conn:
        rows = _look(conn)
    kinds = len(NEWEST_INDEXED)
    found = {
        org: (endpoint, recipient_of_row(org, country, basis, reference))
        for org, endpoint, country, basis, reference in (r[kinds:] for r in rows)
        if org is not None
    }
    return Reachable(found, consents_generation(rows[0][:kinds]), rows)


def still(conn: Connection, look: Reachable) -> bool:
    """Whether the store, as ``conn``'s transaction sees it, reads as it did in ``look``: no
    Consent has come or gone and no recipient's endpoint changed since. Inside the ledger's
    write transaction this makes a decision taken on ``look`` exact; on an open connection
    it costs one statement (tens of microseconds), no checkout."""
    return _look(conn) == look.rows


def describe(endpoint: Endpoint) -> dict[str, str | None]:
    """What may be shown of an endpoint: never a credential."""
    auth: str | None = None
    if isinstance(endpoint, FhirEndpoint) and endpoint.credentials is not None:
        if isinstance(endpoint.credentials, SmartCredentials):
            auth = f"smart-backend-services client {endpoint.credentials.client_id}"
        else:
            auth = "bearer"
    message = endpoint.message if isinstance(endpoint, MllpEndpoint) else None
    return {"endpoint": endpoint.url, "transport": endpoint.transport, "auth": auth,
            "message": message}  # fmt: skip
