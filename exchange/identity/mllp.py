"""Home hospitals that send HL7 v2 over MLLP, and the client each one submits as.

MLLP carries no credential, so a sender is known by where it connects from (its peer IP
address) or by what it says it is (MSH-4, the sending facility's first component). Each
registration names a client of role ``hospital``; its messages are submitted as that client,
exactly like its HTTP submissions. The peer address is looked up first: it is the stronger of
the two (docs/threat-model.md, "Delivery transports"). A revoked or expired client is no
sender.
"""

from __future__ import annotations

import ipaddress
import time

from sqlalchemy import Engine, delete, insert, select

from exchange.identity.clients import Client, ClientStateError
from exchange.store.tables import clients_table, mllp_senders_table
from ledger import store

__all__ = ["KINDS", "register_sender", "sender", "sender_by_client"]

KINDS = ("peer", "facility")


def _check(kind: str, value: str) -> str:
    if kind == "peer":
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"--peer {value!r} is not an IP address") from None
    if kind != "facility":
        raise ValueError(f"a sender is registered by {' or '.join(KINDS)}, not {kind!r}")
    if not value or len(value) > 255 or any(c in value for c in "|^~\\&\r\n"):
        raise ValueError(f"--facility {value!r}: MSH-4's first component, without separators")
    return value


def register_sender(engine: Engine, client_id: str, kind: str, value: str) -> None:
    """Messages from this peer address (``kind`` peer) or MSH-4 (facility) are submitted as
    the hospital client ``client_id``; a registration of the same value is replaced."""
    value = _check(kind, value)
    c, t = clients_table.c, mllp_senders_table.c
    with store.write_transaction(engine) as conn:
        row = conn.execute(select(c.role, c.revoked).where(c.client_id == client_id)).first()
        if row is None or row.revoked is not None:
            raise ClientStateError(client_id, "is not an active client")
        if row.role != "hospital":
            raise ClientStateError(client_id, f"is a {row.role}: only a hospital submits")
        conn.execute(delete(mllp_senders_table).where(t.kind == kind, t.value == value))
        conn.execute(insert(mllp_senders_table).values(kind=kind, value=value, client_id=client_id))


def sender(engine: Engine, peer: str, facility: str) -> Client | None:
    """The active hospital client registered for this peer address, else for this MSH-4."""
    t = mllp_senders_table.c
    with engine.connect() as conn:
        for kind, value in (("peer", peer), ("facility", facility)):
            if not value:
                continue
            found = conn.execute(
                select(t.client_id).where(t.kind == kind, t.value == value)
            ).scalar()
            if found is not None:
                return sender_by_client(engine, found)
    return None


def sender_by_client(engine: Engine, client_id: str) -> Client | None:
    """The client, if it is an active hospital client."""
    c = clients_table.c
    with engine.connect() as conn:
        row = conn.execute(
            select(c.client_id, c.name, c.role, c.org, c.expires).where(
                c.client_id == client_id, c.revoked.is_(None), c.role == "hospital"
            )
        ).first()
    if row is None or (row.expires is not None and row.expires <= time.time()):
        return None
    return Client(row.client_id, row.name, row.role, row.org)
