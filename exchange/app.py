"""The FastAPI application: `create_app(settings)` wires services, routers and error handlers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from exchange import inbound
from exchange.bootstrap import Services, open_services, run_outbox
from exchange.config import Settings, json_logging
from exchange.http.deps import ExchangeApp
from exchange.http.errors import document_outcomes, install_handlers
from exchange.http.guards import document_oauth2
from exchange.http.metrics import MetricsMiddleware
from exchange.http.negotiation import refuse_other_formats
from exchange.http.public import ForwardedHeaders, Network, PublicBase, parse_public_url
from exchange.http.query import refuse_unknown_query
from exchange.http.ratelimit import RateLimit, RateLimitMiddleware, TokenBuckets
from exchange.http.routes import bulk_export as bulk_export_router
from exchange.http.routes import bundles, continuity, health, log, metadata, tiles, trace
from exchange.http.routes import cases as cases_router
from exchange.http.routes import deliveries as deliveries_router
from exchange.http.routes import disclosures as disclosures_router
from exchange.http.routes import e2b as e2b_router
from exchange.http.routes import epcis as epcis_router
from exchange.http.routes import metrics as metrics_router
from exchange.http.routes import organization as organization_router
from exchange.http.routes import quality as quality_router
from exchange.http.routes import rwd_export as rwd_export_router
from exchange.http.routes import settlement as settlement_router
from exchange.http.routes import shl as shl_router
from exchange.http.routes import smart as smart_router
from exchange.http.routes import verification as verification_router
from exchange.http.routes.metadata import SOFTWARE_VERSION
from exchange.identity.cache import authenticate
from exchange.intake import IntakeLimits
from exchange.outbox.process import OutboxProcess

# `medledger serve`'s default address, which clients on the same machine reach it by.
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"

DESCRIPTION = (
    "Cross-border medical record exchange. Hospitals POST FHIR R4 Bundles; each is validated, "
    "stored byte for byte, committed to a signed RFC 6962 log, and answered with a receipt "
    "anyone can verify offline with the log's key (GET /v1/log/key). Every error is a FHIR "
    "OperationOutcome."
)


def create_app(
    settings: Settings,
    *,
    services: Services | None = None,
    limits: IntakeLimits | None = None,
    intake_workers: int = 0,
    max_in_flight: int = 128,
    rate_limit: RateLimit | None = None,
    public_url: str = DEFAULT_PUBLIC_URL,
    trusted_proxies: tuple[Network, ...] = (),
    mllp: tuple[str, int] | None = None,
    outbox_process: bool = False,
) -> ExchangeApp:
    """The service for one log instance (SQLite under settings.data_dir, or settings.db_url).

    `intake_workers` > 0 validates submissions in that many processes, started with the app;
    `max_in_flight` caps concurrent submissions (429 beyond it).
    `rate_limit` gives each client a token bucket (429 + Retry-After when it is empty).
    `public_url` is the base of every absolute URL the service gives out; requests from
    `trusted_proxies` may name another with X-Forwarded-Proto/Host (exchange.public).
    `mllp` (host, port) also listens for HL7 v2 from home hospitals (exchange.inbound).
    `outbox_process` sends deliveries from a process of its own (exchange.outbox.process)
    rather than from the server's event loop.
    """
    if services is None:
        services = open_services(
            settings, limits=limits, intake_workers=intake_workers, max_in_flight=max_in_flight
        )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        services.start()
        runner = None
        if outbox_process:
            runner = OutboxProcess(run_outbox, services.settings, json_logs=json_logging())
            services.outbox.runs_elsewhere(runner.wake, runner.submitted)
            outbox = asyncio.create_task(runner.run(), name="outbox")
        else:
            outbox = asyncio.create_task(services.outbox.run(), name="outbox")
        listener = None
        if mllp is not None:
            listener = await inbound.start(
                services.engine, services.log, services.vault, services.intake,
                services.senders, *mllp, plan=services.outbox.plan,
            )  # fmt: skip
        try:
            yield
        finally:
            if listener is not None:
                listener.close()
                await listener.wait_closed()
            # In-flight deliveries finish and are recorded; one stuck past its timeout is
            # cancelled, its claim left to end with its lease.
            patience = services.settings.delivery_timeout + 5
            if runner is not None:
                await runner.stop(outbox, patience)
            else:
                services.outbox.stop()
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(outbox, patience)
            await services.outbox.close()
            services.close()

    public = PublicBase(parse_public_url(public_url), trusted_proxies)
    app = ExchangeApp(
        services,
        public,
        title="medledger",
        version=SOFTWARE_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(refuse_other_formats), Depends(refuse_unknown_query)],
    )
    if rate_limit is not None:

        async def identify(token: str) -> str | None:
            client = await authenticate(services.clients, token)
            return None if client is None else client.client_id

        app.add_middleware(RateLimitMiddleware, buckets=TokenBuckets(rate_limit), identify=identify)
    if trusted_proxies:
        app.add_middleware(ForwardedHeaders, public=public)  # before the limiter
    app.add_middleware(MetricsMiddleware, metrics=app.metrics)  # outermost: counts every 429
    install_handlers(app)
    document_outcomes(app)
    document_oauth2(app)
    app.include_router(bundles.router)
    app.include_router(metadata.router)
    app.include_router(log.router)
    app.include_router(tiles.router)
    app.include_router(trace.router)
    app.include_router(rwd_export_router.router)
    app.include_router(continuity.router)
    app.include_router(e2b_router.router)
    app.include_router(epcis_router.router)
    app.include_router(smart_router.router)
    app.include_router(organization_router.router)
    app.include_router(quality_router.router)
    app.include_router(verification_router.router)
    app.include_router(disclosures_router.router)
    app.include_router(settlement_router.router)
    app.include_router(bulk_export_router.router)
    app.include_router(cases_router.router)
    app.include_router(deliveries_router.router)
    app.include_router(shl_router.router)
    app.include_router(health.router)
    app.include_router(metrics_router.router)
    return app
