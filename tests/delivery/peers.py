"""Real peers for the delivery tests, built from libraries that are not this project's code.

- :class:`Hl7Receiver`: an HL7 v2 receiver on python-hl7's asyncio MLLP server
  (``hl7.mllp.start_hl7_server``). It records every block it reads, byte for byte, and answers
  as the test tells it, with ACKs made by python-hl7's ``Message.create_ack``.
- :class:`FhirReceiver`: a FHIR R4 server in FastAPI run under uvicorn on a free port. It
  validates every POSTed Bundle with fhir.resources (R4B), implements conditional create
  (``If-None-Exist``), can be told to answer 503 to the next N requests, and is a SMART
  Backend Services authorization server: ``.well-known/smart-configuration`` and a token
  endpoint that verifies client assertions with PyJWT against the client's public key.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import hl7
import hl7.mllp
import jwt
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

# -- HL7 v2 over MLLP ------------------------------------------------------------------------

ACK_MODES = ("AA", "AE", "AR", "CA", "CE", "CR")


class Hl7Receiver:
    """An MLLP receiver that answers each message by the next mode in ``modes``.

    Modes: an acknowledgement code (``AA``, ``AE``, ``AR``, ``CA``...), ``AE+ERR`` (AE with an
    ERR segment), ``wrong-id`` (AA whose MSA-2 names another message), ``reset`` (abort the
    connection), ``close`` (close it without answering), ``silent`` (never answer),
    ``unframed`` (answer without the VT start block), ``huge`` (a block of 2 MB).
    When ``modes`` runs out, ``default`` is used.
    """

    def __init__(self, *modes: str, default: str = "AA", port: int = 0) -> None:
        self.modes = list(modes)
        self.default = default
        self.received: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = port

    async def __aenter__(self) -> Hl7Receiver:
        self.server = await hl7.mllp.start_hl7_server(
            self._client, "127.0.0.1", self.port, encoding="utf-8", reuse_address=True
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _client(
        self, reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter
    ) -> None:
        try:
            while not writer.is_closing():
                try:
                    block = await reader.readblock()
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.received.append(block)
                mode = self.modes.pop(0) if self.modes else self.default
                if mode == "reset":
                    writer.transport.abort()
                    return
                if mode == "close":
                    return
                if mode == "silent":
                    await asyncio.sleep(3600)
                    return
                message = hl7.parse(block.decode("utf-8"))
                if mode == "huge":
                    writer.writeblock(b"MSH|" + b"X" * 2_000_000)
                elif mode == "unframed":
                    writer.write(str(message.create_ack("AA")).encode() + b"\x1c\r")
                else:
                    writer.writeblock(_ack(message, mode).encode("utf-8"))
                await writer.drain()
        finally:
            writer.close()


def _ack(message: hl7.Message, mode: str) -> str:
    code = "AA" if mode == "wrong-id" else mode.split("+")[0]
    ack = message.create_ack(code, message_id=secrets.token_hex(8))
    text = str(ack).rstrip("\r")
    if mode == "wrong-id":
        ack.segment("MSA")[2] = "NOT-YOURS"
        text = str(ack).rstrip("\r")
    if mode.endswith("+ERR"):
        text += "\rERR||OBX^1^5^1|102^Data type error^HL70357|E|||OBX-5 is not a number"
    return text + "\r"


# -- FHIR R4 over HTTP -------------------------------------------------------------------------


@dataclass
class ReceiverState:
    """What the FHIR receiver holds and how it is told to behave."""

    base: str = ""
    bearer_tokens: set[str] = field(default_factory=set)  # static tokens that are accepted
    smart_clients: dict[str, Any] = field(default_factory=dict)  # client id -> public key
    issued: dict[str, float] = field(default_factory=dict)  # access token -> expiry (time())
    token_lifetime: int = 300
    token_requests: int = 0
    seen_jti: set[str] = field(default_factory=set)
    granted_scopes: list[str] = field(default_factory=list)
    fail_next: int = 0  # answer fail_status to this many Bundle POSTs
    fail_status: int = 503
    lose_answers: int = 0  # store this many Bundles, then answer 503 as if the answer was lost
    retry_after: str | None = "1"  # the Retry-After header of those answers
    stored: dict[str, bytes] = field(default_factory=dict)  # id -> exact bytes
    by_identifier: dict[tuple[str, str], str] = field(default_factory=dict)
    posts: list[dict[str, str]] = field(default_factory=list)  # headers of every Bundle POST
    redirect_hits: int = 0
    stored_event: threading.Event = field(default_factory=threading.Event)  # set on each store
    answer_delay: float = 0.0  # seconds between storing a Bundle and answering (at most)

    def revoke_tokens(self) -> None:
        self.issued.clear()


def fhir_app(state: ReceiverState) -> FastAPI:
    app = FastAPI()

    @app.get("/fhir/.well-known/smart-configuration")
    def smart_configuration() -> dict[str, Any]:
        return {
            "token_endpoint": f"{state.base}/auth/token",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "scopes_supported": ["system/Bundle.c"],
            "capabilities": ["client-confidential-asymmetric"],
        }

    @app.post("/auth/token")
    async def token(request: Request) -> JSONResponse:
        state.token_requests += 1
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("ascii")).items()}
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        if form.get("client_assertion_type") != (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        ):
            return JSONResponse({"error": "invalid_client"}, status_code=400)
        assertion = str(form.get("client_assertion", ""))
        try:
            header = jwt.get_unverified_header(assertion)
            client_id = jwt.decode(assertion, options={"verify_signature": False})["iss"]
            public_key = state.smart_clients[client_id]
            claims = jwt.decode(
                assertion,
                public_key,
                algorithms=["RS384", "ES384"],
                audience=f"{state.base}/auth/token",
                issuer=client_id,
                options={"require": ["exp", "jti", "sub", "iss", "aud"]},
            )
        except (jwt.PyJWTError, KeyError) as e:
            return JSONResponse(
                {"error": "invalid_client", "error_description": str(e)}, status_code=401
            )
        if header.get("typ") != "JWT" or not header.get("kid"):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if claims["sub"] != client_id or claims["exp"] > time.time() + 300:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if claims["jti"] in state.seen_jti:
            return JSONResponse(
                {"error": "invalid_client", "error_description": "jti replayed"}, status_code=401
            )
        state.seen_jti.add(claims["jti"])
        state.granted_scopes.append(str(form.get("scope")))
        access = secrets.token_urlsafe(24)
        state.issued[access] = time.time() + state.token_lifetime
        return JSONResponse(
            {
                "access_token": access,
                "token_type": "bearer",
                "expires_in": state.token_lifetime,
                "scope": str(form.get("scope")),
            }
        )

    @app.post("/moved/Bundle")
    def moved() -> Response:
        return Response(status_code=307, headers={"Location": f"{state.base}/fhir/Bundle"})

    @app.post("/huge/Bundle")
    def huge() -> Response:
        return Response(
            content=b"{" + b" " * 3_000_000 + b"}",
            status_code=201,
            media_type="application/fhir+json",
            headers={"Location": f"{state.base}/huge/Bundle/1"},
        )

    @app.post("/fhir/Bundle")
    async def create(request: Request) -> Response:
        state.posts.append(dict(request.headers))
        auth = request.headers.get("authorization", "")
        token_value = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        valid = token_value is not None and (
            token_value in state.bearer_tokens or state.issued.get(token_value, 0) > time.time()
        )
        if not valid:
            return _outcome(401, "login", "no valid bearer token")
        if state.fail_next > 0:
            state.fail_next -= 1
            headers = {} if state.retry_after is None else {"Retry-After": state.retry_after}
            return Response(status_code=state.fail_status, headers=headers)
        if request.headers.get("content-type") != "application/fhir+json":
            return _outcome(415, "not-supported", "send application/fhir+json")
        body = await request.body()
        try:
            bundle = Bundle.model_validate_json(body)
        except ValidationError as e:
            return _outcome(400, "structure", f"not a valid R4 Bundle: {e.errors()[0]['msg']}")
        identifier = _search_identifier(request.headers.get("if-none-exist"))
        if identifier is not None and identifier in state.by_identifier:
            existing = state.by_identifier[identifier]
            return Response(
                content=state.stored[existing],
                status_code=200,
                media_type="application/fhir+json",
                headers={"Location": f"{state.base}/fhir/Bundle/{existing}/_history/1"},
            )
        new_id = str(len(state.stored) + 1)
        state.stored[new_id] = body
        if bundle.identifier is not None:
            key = (str(bundle.identifier.system), str(bundle.identifier.value))
            state.by_identifier[key] = new_id
        state.stored_event.set()
        waited = 0.0
        while waited < state.answer_delay:  # lowering answer_delay ends the wait early
            await asyncio.sleep(0.05)
            waited += 0.05
        if state.lose_answers > 0:
            state.lose_answers -= 1
            return Response(status_code=503)
        return Response(
            status_code=201,
            headers={"Location": f"{state.base}/fhir/Bundle/{new_id}/_history/1"},
        )

    return app


def _search_identifier(header: str | None) -> tuple[str, str] | None:
    """``identifier=system|value`` of an If-None-Exist header, FHIR search escapes undone."""
    if header is None:
        return None
    values = parse_qs(header, keep_blank_values=True, strict_parsing=True).get("identifier")
    if not values:
        return None
    token, parts, escaped = values[0], [""], False
    for ch in token:
        if escaped:
            parts[-1] += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "|" and len(parts) == 1:
            parts.append("")
        else:
            parts[-1] += ch
    return (parts[0], parts[1]) if len(parts) == 2 else None


def _outcome(status: int, code: str, text: str) -> JSONResponse:
    return JSONResponse(
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "error", "code": code, "diagnostics": text, "expression": ["Bundle"]}
            ],
        },
        status_code=status,
        media_type="application/fhir+json",
    )


def bound_socket() -> socket.socket:
    """A TCP socket bound to a free loopback port and not listening: connecting is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def fhir_receiver(sock: socket.socket | None = None) -> Iterator[ReceiverState]:
    """A FhirReceiver under uvicorn for the duration of the block, on ``sock`` (bound, not yet
    listening) or a free loopback port."""
    state = ReceiverState()
    if sock is None:
        sock = bound_socket()
    state.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(fhir_app(state), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the FHIR receiver did not start")
        time.sleep(0.01)
    try:
        yield state
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
