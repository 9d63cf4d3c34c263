"""/tlog: the log's tree as C2SP tlog-tiles, for readers at scale and for caches in front.

The same bytes `medledger tiles sync` writes to a directory (ledger.tiles.sync.LogTiles):
``checkpoint``, hash tiles ``tile/<L>/<N>[.p/<W>]`` and entry bundles
``tile/entries/<N>[.p/<W>]``. No credential is needed, as for /v1/log: entries hold no PHI.

A full tile never changes, so it is cached for a year as immutable; a partial tile's path
names its width and so never changes either, but a log may remove it once the full tile
exists, so it is cached briefly, as the checkpoint is (it moves with every commit). The
checkpoint is the one /v1/log/checkpoint serves: the newest witnessed one under a witness
policy, so readers of the tiles can require the quorum too. A tile beyond the log's tree is
404, as is a path the spec does not write.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse, Response

from exchange.errors import NotFound
from exchange.http.deps import ServicesDep
from exchange.http.errors import error_responses
from exchange.http.guards import public
from ledger.tiles import TileError, parse_path
from ledger.tiles.sync import LogTiles

router = APIRouter(prefix="/tlog", tags=["tiles"])

IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=10"
"""Seconds a partial tile or the checkpoint may be served from a cache: a reader sees a
commit that late at most, and a removed partial tile is gone from caches as soon."""
OCTETS = "application/octet-stream"


@router.get(
    "/checkpoint",
    summary="The log's checkpoint the tiles are read by (as GET /v1/log/checkpoint)",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
@public
def checkpoint(services: ServicesDep) -> PlainTextResponse:
    return PlainTextResponse(services.checkpoint(), headers={"Cache-Control": SHORT})


@router.get(
    "/tile/{path:path}",
    summary="A hash tile (tile/<L>/<N>[.p/<W>]) or entry bundle (tile/entries/<N>[.p/<W>])",
    response_class=Response,
    responses={
        200: {"content": {OCTETS: {"schema": {"type": "string", "format": "binary"}}}},
        **error_responses(404),
    },
)
@public
def tile(
    services: ServicesDep,
    path: Annotated[str, PathParam(description="<L>/<N>[.p/<W>] or entries/<N>[.p/<W>]")],
) -> Response:
    try:
        t = parse_path(f"tile/{path}")
        data = LogTiles(services.log).read(t)
    except TileError as e:
        raise NotFound(f"no tile at tile/{path[:80]}: {e}") from e
    cache = IMMUTABLE if t.full else SHORT
    return Response(data, media_type=OCTETS, headers={"Cache-Control": cache})
