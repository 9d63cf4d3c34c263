"""`GET /metrics`: the Prometheus text exposition of this app (exchange/http/metrics.py).

No credential: it holds counts and timings by route template, status, outcome and Bundle
kind, nothing about any patient, client or organisation. Keep it off the public internet all
the same (docs/operations.md): request volumes are an operator's business.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST

from exchange.http.deps import app_of
from exchange.http.guards import public

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics: requests, submissions, receipt latency, log and store state",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
@public
async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(app_of(request).metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
