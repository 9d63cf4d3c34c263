"""/health: what a load balancer or an orchestrator asks before it routes traffic here.

`live` is 200 while the process answers at all. `ready` is 200 only when a submission would be
served at once: intake is warm (its worker processes up and their models loaded), the log
accepts appends, and the database answers. Neither needs a credential, and neither says more
than that: the reasons a server is not ready are in its own log, not in the answer.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from exchange.http.deps import ServicesDep
from exchange.http.errors import error_responses, outcome_response
from exchange.http.guards import public
from exchange.intake import Issue

router = APIRouter(prefix="/health", tags=["health"])

_NO_STORE = {"Cache-Control": "no-store"}
_NOT_READY = error_responses(503)
_NOT_READY[503] = {
    **_NOT_READY[503],
    "description": "Not ready: a submission would not be served at once; retry after Retry-After",
}


class Live(BaseModel):
    status: Literal["live"]


class Ready(BaseModel):
    status: Literal["ready"]


@router.get("/live", summary="The process is running", response_model=Live)
@public
async def live() -> JSONResponse:
    return JSONResponse({"status": "live"}, headers=_NO_STORE)


def _database_answers(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True


@router.get(
    "/ready",
    summary="A submission would be served now",
    response_model=Ready,
    responses=_NOT_READY,
)
@public
async def ready(services: ServicesDep) -> JSONResponse:
    if not services.intake.ready:
        reason = "intake workers are starting"
    elif services.log.read_only_reason is not None:
        reason = "the log serves reads only"
    elif not await run_in_threadpool(_database_answers, services.engine):
        reason = "the database does not answer"
    else:
        return JSONResponse({"status": "ready"}, headers=_NO_STORE)
    issue = Issue("error", "transient", f"not ready: {reason}")
    return outcome_response(503, [issue], {**_NO_STORE, "Retry-After": "1"})
