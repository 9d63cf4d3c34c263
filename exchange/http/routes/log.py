"""/v1/log: the log's public reads for auditors. No credential needed: entries hold no PHI.

Every answer here can be checked offline against the log's key (GET /v1/log/key), so none of
it has to be trusted: `medledger audit --url` re-derives the tree from these reads.

Under a witness policy (`serve --policy`, docs/witness.md) the checkpoint served is the newest
one the policy's quorum cosigned, with its cosignatures (the log's latest until there is
one), and receipts are built against it, so a reader holding the policy can check both.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from exchange.errors import Invalid, NotFound
from exchange.http.deps import ServicesDep
from exchange.http.errors import error_responses
from exchange.http.guards import public
from exchange.keys.keyring import read_events
from ledger.checkpoint import parse_checkpoint
from ledger.encoding import b64
from ledger.keyset import derive_keyset, parse_key_document
from ledger.note import split as split_note

router = APIRouter(prefix="/v1/log", tags=["log"])

MAX_ENTRIES_PER_PAGE = 1000
_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_MAX_INDEX = 2**53 - 1


class InclusionProof(BaseModel):
    index: int
    tree_size: int
    hashes: list[str]


class ConsistencyProof(BaseModel):
    size1: int
    size2: int
    hashes: list[str]


class KeyDocument(BaseModel):
    """A key entry's published document: the signed note it commits to, with its salt."""

    index: int
    note: str
    salt: str


class LogKey(BaseModel):
    """One signing key and its lifetime in entry indexes (docs/ledger-format.md, Key rotation)."""

    vkey: str
    key_id: str
    added_at: int | None
    retired_at: int | None
    status: Literal["active", "retired"]
    documents: list[KeyDocument]


Services_ = ServicesDep
Index = Annotated[int, Query(ge=0, le=_MAX_INDEX)]


def _b64_all(items: list[bytes]) -> list[str]:
    return [b64(h) for h in items]


def _beyond(size: int, current: int) -> NotFound:
    return NotFound(f"the log has {current} entries, not {size}")


@router.get(
    "/checkpoint",
    summary="The latest signed checkpoint (C2SP tlog-checkpoint in a signed note); under a "
    "witness policy the newest one its quorum cosigned, with the cosignature lines",
    response_class=PlainTextResponse,
    responses={200: {"content": _TEXT}},
)
@public
def checkpoint(services: Services_) -> PlainTextResponse:
    return PlainTextResponse(services.checkpoint(), headers={"Cache-Control": "no-cache"})


@router.get(
    "/key",
    summary="The log's primary verifier key (signed-note vkey text); all keys: /v1/log/keys",
    response_class=PlainTextResponse,
    responses={200: {"content": _TEXT}},
)
@public
def key(services: Services_) -> PlainTextResponse:
    return PlainTextResponse(services.log.signer.verifier.vkey() + "\n")


@router.get(
    "/keys",
    summary="Every key the log ever signed with, its lifetime and its key entries' documents",
    response_model=list[LogKey],
)
@public
def keys(services: Services_) -> list[LogKey]:
    with services.engine.connect() as conn:
        events = read_events(conn)
    keyset = derive_keyset(services.log.origin, events, [services.log.signer.verifier])
    docs: dict[str, list[KeyDocument]] = {}
    for e in events:
        vkey = parse_key_document(e.note).key.vkey()
        docs.setdefault(vkey, []).append(KeyDocument(index=e.index, note=e.note, salt=b64(e.salt)))
    return [
        LogKey(
            vkey=k.verifier.vkey(),
            key_id=k.verifier.key_id.hex(),
            added_at=k.added,
            retired_at=k.retired,
            status="active" if k.retired is None else "retired",
            documents=docs.get(k.verifier.vkey(), []),
        )
        for k in keyset.keys
    ]


@router.get(
    "/entries",
    summary="Entries [start, end) as base64 of their bytes, at most 1000 per call",
    response_model=list[str],
    responses=error_responses(400),
)
@public
def entries(services: Services_, start: Index, end: Index) -> list[str]:
    if end < start:
        raise Invalid(f"end {end} is before start {start}")
    end = min(end, start + MAX_ENTRIES_PER_PAGE, services.log.size())
    return _b64_all(services.log.entries(start, end)) if end > start else []


@router.get(
    "/proof/inclusion",
    summary="RFC 6962 inclusion proof of entry `index` in the tree of `size` entries",
    response_model=InclusionProof,
    responses=error_responses(400, 404),
)
@public
def inclusion(services: Services_, index: Index, size: Index) -> InclusionProof:
    if index >= size:
        raise Invalid(f"index {index} is not in a tree of size {size}")
    current = services.log.size()
    if size > current:
        raise _beyond(size, current)
    return InclusionProof(
        index=index, tree_size=size, hashes=_b64_all(services.log.inclusion_proof(index, size))
    )


@router.get(
    "/proof/consistency",
    summary="RFC 6962 consistency proof between the trees of size1 and size2 entries",
    response_model=ConsistencyProof,
    responses=error_responses(400, 404),
)
@public
def consistency(services: Services_, size1: Index, size2: Index) -> ConsistencyProof:
    if size1 == 0:
        raise Invalid("every tree extends the empty one: size1 must be > 0")
    if size1 > size2:
        raise Invalid(f"size1 {size1} is larger than size2 {size2}")
    current = services.log.size()
    if size2 > current:
        raise _beyond(size2, current)
    hashes = services.log.consistency_proof(size1, size2)
    return ConsistencyProof(size1=size1, size2=size2, hashes=_b64_all(hashes))


@router.get(
    "/entries/{index}/receipt",
    summary="A receipt (c2sp.org/tlog-proof@v1) for entry `index` against the latest "
    "checkpoint; under a witness policy the newest witnessed one (404 until one covers it)",
    response_class=PlainTextResponse,
    responses={200: {"content": _TEXT}, **error_responses(400, 404)},
)
@public
def receipt(
    services: Services_, index: Annotated[int, PathParam(ge=0, le=_MAX_INDEX)]
) -> PlainTextResponse:
    current = services.log.size()
    if index >= current:
        raise NotFound(f"no entry {index}: the log has {current} entries")
    if services.witnesses is None:
        return PlainTextResponse(services.log.receipt(index))
    note = services.witnesses.witnessed()
    size = -1 if note is None else parse_checkpoint(split_note(note)[0]).size
    if note is None or index >= size:
        held = "none yet" if note is None else f"the newest is of size {size}"
        raise NotFound(
            f"no witnessed checkpoint covers entry {index} yet ({held}): the policy's witnesses "
            "have not cosigned one since it was appended; retry in a few seconds (the receipt "
            "answered with the submission is signed by the log alone)"
        )
    return PlainTextResponse(services.log.receipt_at(index, note))
