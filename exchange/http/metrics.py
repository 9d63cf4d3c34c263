"""Prometheus metrics of one app: what its requests did, and the state of its log and store.

Every label is a route template, a method, a status, a Bundle kind or an outcome: never an
identifier, a client, an organisation or anything a request carried (docs/operations.md).
Counters and histograms live in a registry of the app's own, so two apps in one process (the
tests) count apart; the gauges are read from the services when the metrics are scraped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exchange.bootstrap import Services
from exchange.outbox.queue import STATUSES
from exchange.store.tables import bundles_table, deliveries_table

SUBMIT_ROUTE = "/fhir/Bundle"
# Seconds from a submission's first byte to its receipt; group commit sets the floor.
RECEIPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _outcome(status: int) -> str:
    if status in (200, 201):
        return "accepted"
    if status == 429:
        return "throttled"
    if 400 <= status < 500:
        return "refused"
    return "failed"


class Metrics:
    """The registry of one app and the instruments its middleware feeds."""

    def __init__(self, services: Services) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "medledger_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.submissions = Counter(
            "medledger_submissions",
            "Bundle submissions (POST /fhir/Bundle) by kind (record, consent, rwd, settlement; "
            "'unknown' when refused before intake named one) and outcome: accepted (201, or "
            "200 for a retry), refused (4xx), throttled (429), failed (5xx)",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.receipt_seconds = Histogram(
            "medledger_receipt_seconds",
            "Seconds from an accepted submission's request to its receipt",
            buckets=RECEIPT_BUCKETS,
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "medledger_rate_limited",
            "Requests refused by the per-client rate limit or the submission cap (429)",
            registry=self.registry,
        )
        self.registry.register(_StateCollector(services))

    def observe(
        self, route: str, method: str, status: int, seconds: float, kind: str | None = None
    ) -> None:
        self.requests.labels(route, method, str(status)).inc()
        if status == 429:
            self.rate_limited.inc()
        if route == SUBMIT_ROUTE and method == "POST":
            outcome = _outcome(status)
            self.submissions.labels(kind or "unknown", outcome).inc()
            if outcome == "accepted":
                self.receipt_seconds.observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Gauges read at scrape time: the log's size, submissions in flight, Bundles by kind,
    deliveries by state."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def describe(self) -> Iterable[Metric]:
        return []  # read at every scrape, never at registration

    def collect(self) -> Iterator[Metric]:
        size = GaugeMetricFamily("medledger_log_size", "Entries in the log")
        size.add_metric([], self.services.log.size())
        yield size
        flight = GaugeMetricFamily(
            "medledger_submissions_in_flight",
            "Submissions admitted and not yet answered (intake and commit queue depth)",
        )
        flight.add_metric([], self.services.admission.busy)
        yield flight
        stored = GaugeMetricFamily(
            "medledger_bundles_stored", "Stored Bundle versions by kind", labels=["kind"]
        )
        for kind, count in self._counts(bundles_table.c.kind):
            stored.add_metric([str(kind)], count)
        yield stored
        deliveries = GaugeMetricFamily(
            "medledger_deliveries",
            "Deliveries to home hospitals by state: pending (queued or waiting to retry), "
            "delivered, failed (refused by the receiver, or given up)",
            labels=["state"],
        )
        # Every state, 0 too: an alert on pending growing needs the series before it does.
        counts = dict(self._counts(deliveries_table.c.status))
        for state in STATUSES:
            deliveries.add_metric([state], counts.get(state, 0))
        yield deliveries

    def _counts(self, column: ColumnElement[str]) -> list[tuple[str, int]]:
        """Rows of the column's table counted by its value; none while the store is down, so
        that the other metrics still answer."""
        try:
            with self.services.engine.connect() as conn:
                rows = conn.execute(select(column, func.count()).group_by(column)).all()
        except SQLAlchemyError:
            return []
        return [(str(value), int(count)) for value, count in rows]


class MetricsMiddleware:
    """Times and counts every HTTP request by the route template it matched."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            kind = scope.get("state", {}).get("submission_kind")
            self.metrics.observe(route, scope["method"], status, time.perf_counter() - start, kind)
