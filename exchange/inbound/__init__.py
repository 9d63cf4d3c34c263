"""Package inbound takes HL7 v2 from home hospitals over MLLP into the exchange.

:func:`start` runs :func:`exchange.delivery.mllp.start_server` with
:func:`exchange.delivery.inbound.handler`: ``identify`` finds the registered sender
(:mod:`exchange.identity.mllp`, by peer address, then MSH-4), and ``submit`` takes the Bundle
the message became like any HTTP submission of that hospital client: the institution registry
may bar it, intake checks it, and it is appended with its sealed row (exchange.bundles.submit).
A refusal by the service is the ACK's AE with its reason; the MSA-3 of an AA names the ledger
index. Deliveries are planned as for an HTTP submission: ``plan`` (the outbox's) gives the
rows written in the Bundle's transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine

from exchange.bundles.submit import RowWriter, SubmitRequest, submit
from exchange.delivery.ack import Header
from exchange.delivery.inbound import SubmitRefused, handler
from exchange.delivery.mllp import MllpServer, Peer, start_server
from exchange.errors import MedledgerError
from exchange.identity.clients import Client
from exchange.identity.mllp import sender, sender_by_client
from exchange.intake.runner import IntakeRunner
from exchange.intake.worker import Checked
from exchange.registry.admission import SenderCache
from exchange.vault import Vault
from ledger.log import Log

__all__ = ["start"]

FHIR_JSON = "application/fhir+json"


async def start(
    engine: Engine,
    log: Log,
    vault_: Vault,
    intake: IntakeRunner,
    senders: SenderCache,
    host: str,
    port: int,
    plan: Callable[[Client, Checked], Awaitable[RowWriter | None]],
) -> MllpServer:
    """Listen for HL7 v2 on ``host:port`` (0: a free port) until the server is closed."""

    async def identify(peer: Peer, header: Header) -> str | None:
        facility = header.sending_facility[0] if header.sending_facility else ""
        found = await run_in_threadpool(sender, engine, peer[0], facility)
        return None if found is None else found.client_id

    async def submit_bundle(bundle: bytes, client_id: str) -> int:
        client = await run_in_threadpool(sender_by_client, engine, client_id)
        if client is None:
            raise SubmitRefused("the sender's client was revoked or expired meanwhile")
        try:
            await senders.admit(client.org, datetime.now(UTC).date())
            checked = await intake.check(bundle, FHIR_JSON)
            deliveries = await plan(client, checked)
            req = SubmitRequest(client, bundle, checked, also_write=deliveries)
            stored = await submit(log, vault_, req)
        except MedledgerError as e:
            raise SubmitRefused(e.diagnostics) from None
        return stored.index

    return await start_server(handler(identify, submit_bundle), host, port)
