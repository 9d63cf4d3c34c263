"""Attempts driven by the backoff schedule against real peers, as the outbox will drive them.

Each test runs :func:`exchange.delivery.attempt.attempt` in a loop that waits as
:func:`exchange.delivery.backoff.next_attempt` says (on a schedule scaled down to tens of
milliseconds) until the verdict is final or the deadline passes. The peers are the FastAPI
FHIR receiver and python-hl7's MLLP server of ``tests.delivery.peers``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import hl7
import pytest

from exchange.delivery.attempt import Attempt, attempt
from exchange.delivery.backoff import Policy, next_attempt
from exchange.delivery.endpoints import Endpoint, FhirEndpoint, MllpEndpoint, parse_endpoint
from exchange.delivery.fhir_push import new_client
from exchange.delivery.messages import Document, ips_document, v2_message
from exchange.delivery.result import Outcome
from tests.delivery.fixtures import NOW, boao_kr, shanghai_ru
from tests.delivery.peers import Hl7Receiver, ReceiverState, bound_socket, fhir_receiver

TOKEN = "retry-token-0123456789"
FAST = Policy(
    base=timedelta(milliseconds=50), cap=timedelta(milliseconds=400), deadline=timedelta(seconds=20)
)


@dataclass
class Run:
    """What the loop saw: every attempt, the wait before each retry, and whether it gave up."""

    attempts: list[Attempt] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)
    gave_up: bool = False

    @property
    def outcomes(self) -> list[Outcome]:
        return [a.outcome for a in self.attempts]


async def drive(
    endpoint: Endpoint,
    payload: Document | bytes,
    *,
    policy: Policy = FAST,
    timeout: float = 10.0,
    after_failure: Callable[[int], Awaitable[None]] | None = None,
) -> Run:
    run = Run()
    first = datetime.now(UTC)
    async with new_client() as client:
        while True:
            result = await attempt(endpoint, payload, client=client, timeout=timeout)
            run.attempts.append(result)
            if result.outcome is not Outcome.RETRY:
                return run
            if after_failure is not None:
                await after_failure(len(run.attempts))
            now = datetime.now(UTC)
            at = next_attempt(
                len(run.attempts),
                first,
                now,
                policy=policy,
                seed=b"delivery-1",
                retry_after=result.retry_after,
            )
            if at is None:
                run.gave_up = True
                return run
            wait = (at - now).total_seconds()
            run.waits.append(wait)
            await asyncio.sleep(wait)


# -- FHIR ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[ReceiverState]:
    with fhir_receiver() as state:
        yield state


@pytest.fixture
def peer(receiver: ReceiverState) -> ReceiverState:
    base = receiver.base
    receiver.__init__()  # type: ignore[misc]
    receiver.base = base
    receiver.bearer_tokens.add(TOKEN)
    receiver.retry_after = None
    return receiver


def fhir(base: str) -> FhirEndpoint:
    endpoint = parse_endpoint(f"{base}/fhir", token=TOKEN)
    assert isinstance(endpoint, FhirEndpoint)
    return endpoint


def document(name: str = "ips-retry") -> Document:
    return ips_document(shanghai_ru(), now=NOW, document_id=name)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 408])
def test_fhir_server_errors_are_retried_with_growing_waits(
    peer: ReceiverState, status: int
) -> None:
    peer.fail_next, peer.fail_status = 2, status
    run = asyncio.run(drive(fhir(peer.base), document()))
    assert run.outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.DELIVERED]
    assert [a.status for a in run.attempts] == [status, status, 201]
    assert 0.05 <= run.waits[0] < 0.075 and 0.1 <= run.waits[1] < 0.15
    assert run.attempts[-1].location == f"{peer.base}/fhir/Bundle/1/_history/1"
    assert run.attempts[-1].reason == ""
    assert len(peer.posts) == 3 and len(peer.stored) == 1


@pytest.mark.parametrize("status", [400, 403, 404, 409, 410, 412, 415, 422])
def test_fhir_client_errors_are_not_retried(peer: ReceiverState, status: int) -> None:
    peer.fail_next, peer.fail_status = 5, status
    run = asyncio.run(drive(fhir(peer.base), document()))
    assert run.outcomes == [Outcome.PERMANENT] and run.attempts[0].status == status
    assert run.waits == [] and len(peer.posts) == 1 and peer.stored == {}


def test_fhir_retry_after_moves_the_next_attempt_later(peer: ReceiverState) -> None:
    peer.fail_next, peer.retry_after = 1, "1"
    run = asyncio.run(drive(fhir(peer.base), document()))
    assert run.outcomes == [Outcome.RETRY, Outcome.DELIVERED]
    assert run.attempts[0].retry_after == timedelta(seconds=1)
    assert 1.0 <= run.waits[0] < 1.1  # not the 50 ms the schedule alone would wait


def test_fhir_a_lost_answer_is_retried_and_the_receiver_keeps_one_copy(
    peer: ReceiverState,
) -> None:
    """Stored, but the answer never reached us: the retry's If-None-Exist finds it (200)."""
    peer.lose_answers = 1
    doc = document("ips-lost-answer")
    run = asyncio.run(drive(fhir(peer.base), doc))
    assert [a.status for a in run.attempts] == [503, 200]
    assert run.outcomes[-1] is Outcome.DELIVERED
    assert list(peer.stored.values()) == [doc.body]
    assert {p["if-none-exist"] for p in peer.posts} == {
        "identifier=" + doc.identifier[0] + "%7C" + doc.identifier[1]
    }


def test_fhir_connection_refused_is_retried_until_the_server_is_up() -> None:
    sock = bound_socket()  # bound, not listening: every connect is refused
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    doc = document("ips-refused")
    with contextlib.ExitStack() as stack:

        async def start_on_second_failure(failures: int) -> None:
            if failures == 2:
                state = stack.enter_context(fhir_receiver(sock))
                state.bearer_tokens.add(TOKEN)

        run = asyncio.run(drive(fhir(base), doc, after_failure=start_on_second_failure))
    assert run.outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.DELIVERED]
    assert run.attempts[0].status is None and "ConnectError" in run.attempts[0].reason
    assert run.attempts[2].status == 201


def test_fhir_gives_up_at_the_deadline(peer: ReceiverState) -> None:
    peer.fail_next = 1000
    policy = Policy(
        base=timedelta(milliseconds=50),
        cap=timedelta(milliseconds=400),
        deadline=timedelta(milliseconds=600),
    )
    run = asyncio.run(drive(fhir(peer.base), document(), policy=policy))
    assert run.gave_up and set(run.outcomes) == {Outcome.RETRY}
    # 50, 100, 200 ms waits and then the deadline: a handful of attempts, not a storm.
    assert 3 <= len(run.attempts) <= 6 and peer.stored == {}


def test_a_payload_that_does_not_fit_the_endpoint_is_a_caller_error() -> None:
    async def run() -> None:
        async with new_client() as client:
            with pytest.raises(TypeError):
                await attempt(fhir("http://127.0.0.1:9"), b"MSH|", client=client)
            with pytest.raises(TypeError):
                await attempt(MllpEndpoint("127.0.0.1", 9), document(), client=client)

    asyncio.run(run())


# -- MLLP ---------------------------------------------------------------------------------------


def oru(control_id: str = "DLV-R-1") -> bytes:
    return v2_message(boao_kr(), "ORU_R01", now=NOW, control_id=control_id)


def mllp_run(receiver: Hl7Receiver, data: bytes, *, timeout: float = 10.0) -> Run:
    async def run() -> Run:
        async with receiver:
            return await drive(MllpEndpoint("127.0.0.1", receiver.port), data, timeout=timeout)

    return asyncio.run(run())


def control_ids(receiver: Hl7Receiver) -> set[str]:
    return {str(hl7.parse(b.decode()).segment("MSH")(10)) for b in receiver.received}


def test_mllp_ae_is_retried_with_the_same_bytes_until_aa() -> None:
    receiver = Hl7Receiver("AE", "AE+ERR", "AA")
    data = oru()
    run = mllp_run(receiver, data)
    assert run.outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.DELIVERED]
    assert [a.ack_code for a in run.attempts] == ["AE", "AE", "AA"]
    assert "OBX^1^5^1 102 OBX-5 is not a number" in run.attempts[1].reason
    assert receiver.received == [data] * 3 and control_ids(receiver) == {"DLV-R-1"}
    assert run.waits[0] <= run.waits[1]
    assert b"MSA|AA|DLV-R-1" in run.attempts[-1].answer  # the ACK bytes, for the entry


@pytest.mark.parametrize("code", ["AR", "CR"])
def test_mllp_reject_is_final_after_one_attempt(code: str) -> None:
    receiver = Hl7Receiver(code, default="AA")
    run = mllp_run(receiver, oru())
    assert run.outcomes == [Outcome.PERMANENT] and run.attempts[0].ack_code == code
    assert len(receiver.received) == 1 and run.waits == []


def test_mllp_a_timeout_is_retried_on_a_new_connection() -> None:
    receiver = Hl7Receiver("silent", "AA")
    run = mllp_run(receiver, oru(), timeout=0.3)
    assert run.outcomes == [Outcome.RETRY, Outcome.DELIVERED]
    assert "no ACK within 0.3 s" in run.attempts[0].reason
    assert len(receiver.received) == 2


@pytest.mark.parametrize("mode", ["reset", "close", "wrong-id", "unframed"])
def test_mllp_an_unknown_fate_is_retried(mode: str) -> None:
    receiver = Hl7Receiver(mode, "AA")
    run = mllp_run(receiver, oru())
    assert run.outcomes == [Outcome.RETRY, Outcome.DELIVERED]
    assert receiver.received == [oru(), oru()]


def test_mllp_connection_refused_is_retried_until_the_receiver_is_up() -> None:
    sock = bound_socket()
    port = sock.getsockname()[1]
    receiver = Hl7Receiver("AA", port=port)

    async def start(failures: int) -> None:
        if failures == 2:
            sock.close()
            await receiver.__aenter__()

    async def run() -> Run:
        try:
            return await drive(MllpEndpoint("127.0.0.1", port), oru(), after_failure=start)
        finally:
            await receiver.__aexit__()

    result = asyncio.run(run())
    assert result.outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.DELIVERED]
    assert "cannot connect" in result.attempts[0].reason
    assert len(receiver.received) == 1


def test_mllp_a_message_with_framing_bytes_is_never_sent() -> None:
    receiver = Hl7Receiver("AA")
    run = mllp_run(receiver, oru().replace(b"PID|", b"PID|\x1c", 1))
    assert (
        run.outcomes == [Outcome.PERMANENT] and "VT (0x0B) or FS (0x1C)" in run.attempts[0].reason
    )
    assert receiver.received == []
