"""Conditional create of IPS documents against a real FHIR receiver (FastAPI + fhir.resources).

The receiver (``tests.delivery.peers``) runs under uvicorn on a free port, validates every
Bundle with fhir.resources R4B, implements If-None-Exist, and is a SMART Backend Services
authorization server that verifies our client assertions with PyJWT.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fhir.resources.R4B.bundle import Bundle

from exchange.delivery.endpoints import FhirEndpoint, parse_endpoint
from exchange.delivery.fhir_push import (
    PushResult,
    _retry_after,
    if_none_exist,
    new_client,
    push_document,
)
from exchange.delivery.messages import ips_document
from exchange.delivery.result import Outcome
from exchange.delivery.smart_client import TokenCache
from tests.delivery.fixtures import NOW, boao_kr, shanghai_ru
from tests.delivery.peers import ReceiverState, _search_identifier, fhir_receiver

TOKEN = "static-token-0123456789"


@pytest.fixture(scope="module")
def receiver() -> Iterator[ReceiverState]:
    with fhir_receiver() as state:
        yield state


@pytest.fixture
def peer(receiver: ReceiverState) -> ReceiverState:
    """The module's receiver, emptied and reset for one test."""
    base = receiver.base
    receiver.__init__()  # type: ignore[misc]
    receiver.base = base
    receiver.bearer_tokens.add(TOKEN)
    return receiver


def push(endpoint: FhirEndpoint, body: bytes, identifier: tuple[str, str], **kw: Any) -> PushResult:
    async def run() -> PushResult:
        async with new_client() as client:
            return await push_document(endpoint, body, identifier, client=client, timeout=30, **kw)

    return asyncio.run(run())


def bearer(peer: ReceiverState, token: str = TOKEN) -> FhirEndpoint:
    endpoint = parse_endpoint(f"{peer.base}/fhir", token=token)
    assert isinstance(endpoint, FhirEndpoint)
    return endpoint


def rsa_pem() -> tuple[bytes, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _pem(key), key.public_key()


def ec_pem() -> tuple[bytes, Any]:
    key = ec.generate_private_key(ec.SECP384R1())
    return _pem(key), key.public_key()


def _pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def smart(
    peer: ReceiverState, client_id: str = "medledger-boao", pem: bytes | None = None
) -> FhirEndpoint:
    if pem is None:
        pem, public = ec_pem()
        peer.smart_clients[client_id] = public
    endpoint = parse_endpoint(f"{peer.base}/fhir", client_id=client_id, key_pem=pem)
    assert isinstance(endpoint, FhirEndpoint)
    return endpoint


# -- conditional create ------------------------------------------------------------------------


def test_bearer_push_creates_the_document_once_and_a_retry_finds_it(peer: ReceiverState) -> None:
    doc = ips_document(boao_kr(), now=NOW, document_id="ips-kr-1")
    first = push(bearer(peer), doc.body, doc.identifier)
    assert first.outcome is Outcome.DELIVERED and first.status == 201 and not first.existing
    assert first.location == f"{peer.base}/fhir/Bundle/1/_history/1"
    assert peer.stored["1"] == doc.body  # the exact bytes, which fhir.resources accepted
    assert Bundle.model_validate_json(peer.stored["1"]).type == "document"
    assert peer.posts[0]["content-type"] == "application/fhir+json"
    assert peer.posts[0]["authorization"] == f"Bearer {TOKEN}"

    again = push(bearer(peer), doc.body, doc.identifier)
    assert again.outcome is Outcome.DELIVERED and again.status == 200 and again.existing
    assert again.location == first.location
    assert json.loads(again.body)["identifier"]["value"] == doc.identifier[1]
    assert len(peer.stored) == 1  # the receiver holds one copy


def test_503_is_retried_after_retry_after_and_then_created_once(peer: ReceiverState) -> None:
    doc = ips_document(shanghai_ru(), now=NOW, document_id="ips-ru-1")
    peer.fail_next = 1
    first = push(bearer(peer), doc.body, doc.identifier)
    assert first.outcome is Outcome.RETRY and first.status == 503
    assert first.retry_after == timedelta(seconds=1)
    assert peer.stored == {}
    second = push(bearer(peer), doc.body, doc.identifier)
    assert second.outcome is Outcome.DELIVERED and second.status == 201
    assert len(peer.stored) == 1


def test_400_is_permanent_and_keeps_the_operation_outcome_text(peer: ReceiverState) -> None:
    bad = (
        b'{"resourceType": "Bundle", "type": "document", "entry": [{"resource": '
        b'{"resourceType": "Patient", "birthDate": "the first of May"}}]}'
    )
    result = push(bearer(peer), bad, ("urn:ietf:rfc:3986", "urn:uuid:bad"))
    assert result.outcome is Outcome.PERMANENT and result.status == 400
    assert "not a valid R4 Bundle" in result.reason and "(at Bundle)" in result.reason
    assert peer.stored == {}


def test_a_refused_bearer_token_is_permanent(peer: ReceiverState) -> None:
    doc = ips_document(shanghai_ru(), now=NOW, document_id="ips-ru-2")
    result = push(bearer(peer, token="wrong-token"), doc.body, doc.identifier)
    assert result.outcome is Outcome.PERMANENT and result.status == 401
    assert "no valid bearer token" in result.reason


def test_if_none_exist_escapes_and_encodes_the_identifier(peer: ReceiverState) -> None:
    system, value = "urn:example:ids", "a|b,c$d\\e&f=g+h i"
    header = if_none_exist(system, value)
    assert header.startswith("identifier=urn:example:ids%7C")
    assert " " not in header and "&" not in header.split("=", 1)[1]
    assert _search_identifier(header) == (system, value)  # as a FHIR server reads it
    doc = json.loads(ips_document(shanghai_ru(), now=NOW, document_id="ips-ru-3").body)
    doc["identifier"] = {"system": system, "value": value}
    body = json.dumps(doc).encode()
    assert push(bearer(peer), body, (system, value)).status == 201
    assert push(bearer(peer), body, (system, value)).status == 200
    assert len(peer.stored) == 1


def test_redirects_are_refused_not_followed(peer: ReceiverState) -> None:
    endpoint = parse_endpoint(f"{peer.base}/moved", token=TOKEN)
    assert isinstance(endpoint, FhirEndpoint)
    doc = ips_document(shanghai_ru(), now=NOW, document_id="ips-ru-4")
    result = push(endpoint, doc.body, doc.identifier)
    assert result.outcome is Outcome.PERMANENT and result.status == 307
    assert "redirects are not followed" in result.reason
    assert peer.posts == [] and peer.stored == {}  # nothing reached /fhir/Bundle


def test_answers_are_read_up_to_the_cap(peer: ReceiverState) -> None:
    endpoint = parse_endpoint(f"{peer.base}/huge", token=TOKEN)
    assert isinstance(endpoint, FhirEndpoint)
    result = push(endpoint, b"{}", ("urn:x", "y"), max_answer=4096)
    assert result.outcome is Outcome.DELIVERED and result.status == 201
    assert len(result.body) == 4096


def test_no_answer_is_a_retry() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the push: nothing listens there
    endpoint = parse_endpoint(f"http://127.0.0.1:{port}/fhir", token=TOKEN)
    assert isinstance(endpoint, FhirEndpoint)
    result = push(endpoint, b"{}", ("urn:x", "y"))
    assert result.outcome is Outcome.RETRY and result.status is None
    assert "ConnectError" in result.reason


def test_tls_certificates_are_verified_by_default() -> None:
    client = new_client()
    try:
        assert client._transport._pool._ssl_context.verify_mode.name == "CERT_REQUIRED"  # type: ignore[attr-defined]
        assert client.follow_redirects is False
    finally:
        asyncio.run(client.aclose())


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120), ("0", 0), (" 7 ", 7), ("soon", None), (None, None)],
)
def test_retry_after_delay_seconds(value: str | None, seconds: int | None) -> None:
    expected = None if seconds is None else timedelta(seconds=seconds)
    assert _retry_after(value) == expected


def test_retry_after_http_date() -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    delay = _retry_after(format_datetime(later, usegmt=True))
    assert delay is not None and timedelta(minutes=58) < delay <= timedelta(hours=1)
    past = _retry_after(format_datetime(datetime(2001, 1, 1, tzinfo=UTC), usegmt=True))
    assert past == timedelta(0)


# -- SMART Backend Services ----------------------------------------------------------------------


@pytest.mark.parametrize("key", ["RS384", "ES384"])
def test_smart_backend_services_token_then_create(peer: ReceiverState, key: str) -> None:
    pem, public = rsa_pem() if key == "RS384" else ec_pem()
    peer.smart_clients["medledger-boao"] = public
    endpoint = smart(peer, pem=pem)
    doc = ips_document(boao_kr(), now=NOW, document_id=f"ips-smart-{key}")
    result = push(endpoint, doc.body, doc.identifier)
    assert result.outcome is Outcome.DELIVERED and result.status == 201, result.reason
    assert peer.token_requests == 1 and peer.granted_scopes == ["system/Bundle.c"]


def test_smart_token_is_cached_across_pushes(peer: ReceiverState) -> None:
    endpoint = smart(peer)
    tokens = TokenCache()
    for n in range(3):
        doc = ips_document(shanghai_ru(), now=NOW, document_id=f"ips-cache-{n}")
        assert push(endpoint, doc.body, doc.identifier, tokens=tokens).status == 201
    assert peer.token_requests == 1
    assert len({p["authorization"] for p in peer.posts}) == 1


def test_smart_token_is_fetched_again_when_it_runs_out(peer: ReceiverState) -> None:
    peer.token_lifetime = 20  # shorter than the 30 s the cache keeps in hand: never reused
    endpoint = smart(peer)
    tokens = TokenCache()
    for n in range(2):
        doc = ips_document(shanghai_ru(), now=NOW, document_id=f"ips-expiry-{n}")
        assert push(endpoint, doc.body, doc.identifier, tokens=tokens).status == 201
    assert peer.token_requests == 2


def test_smart_refetches_the_token_once_on_401(peer: ReceiverState) -> None:
    endpoint = smart(peer)
    tokens = TokenCache()
    doc = ips_document(shanghai_ru(), now=NOW, document_id="ips-401-1")
    assert push(endpoint, doc.body, doc.identifier, tokens=tokens).status == 201
    peer.revoke_tokens()  # the server forgets the token the cache still holds
    doc2 = ips_document(shanghai_ru(), now=NOW, document_id="ips-401-2")
    result = push(endpoint, doc2.body, doc2.identifier, tokens=tokens)
    assert result.outcome is Outcome.DELIVERED and result.status == 201
    assert peer.token_requests == 2
    sent = [p["authorization"] for p in peer.posts]
    assert len(sent) == 3 and sent[0] == sent[1] != sent[2]  # 201, 401 (revoked), 201 (fresh)


def test_smart_with_an_unregistered_key_is_permanent(peer: ReceiverState) -> None:
    pem, _ = ec_pem()
    other, public = ec_pem()
    peer.smart_clients["medledger-boao"] = public  # the receiver knows another key
    endpoint = smart(peer, pem=pem)
    doc = ips_document(shanghai_ru(), now=NOW, document_id="ips-badkey")
    result = push(endpoint, doc.body, doc.identifier)
    assert result.outcome is Outcome.PERMANENT and result.status is None
    assert "token endpoint answered 401" in result.reason and "invalid_client" in result.reason
    assert peer.posts == []


def test_smart_assertions_are_never_replayed(peer: ReceiverState) -> None:
    endpoint = smart(peer)
    for n in range(3):  # a fresh cache each time: three assertions, three distinct jti
        doc = ips_document(shanghai_ru(), now=NOW, document_id=f"ips-jti-{n}")
        assert push(endpoint, doc.body, doc.identifier).status == 201
    assert peer.token_requests == 3 and len(peer.seen_jti) == 3


def test_smart_token_endpoint_down_is_a_retry(peer: ReceiverState) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pem, _ = ec_pem()
    endpoint = parse_endpoint(f"http://127.0.0.1:{port}/fhir", client_id="x", key_pem=pem)
    assert isinstance(endpoint, FhirEndpoint)
    result = push(endpoint, b"{}", ("urn:x", "y"))
    assert result.outcome is Outcome.RETRY and "SMART discovery" in result.reason


def test_httpx_client_given_by_the_caller_is_used_as_is(peer: ReceiverState) -> None:
    doc = ips_document(shanghai_ru(), now=NOW, document_id="ips-own-client")

    async def run() -> PushResult:
        async with httpx.AsyncClient(follow_redirects=True) as client:
            endpoint = parse_endpoint(f"{peer.base}/moved", token=TOKEN)
            assert isinstance(endpoint, FhirEndpoint)
            return await push_document(endpoint, doc.body, doc.identifier, client=client)

    # Redirects stay refused even on a client that would follow them.
    assert asyncio.run(run()).status == 307
    assert peer.stored == {}
