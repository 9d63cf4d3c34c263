"""`medledger serve` sends deliveries from a child process of its own (exchange.outbox.process):
at a lower priority than intake, started again when it exits, and gone with its server."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from exchange.bootstrap import open_store
from exchange.config import Settings
from exchange.consent.crossborder import Recipient, set_recipient
from exchange.delivery.endpoints import parse_endpoint
from exchange.identity.clients import register_client
from exchange.outbox.endpoints import set_endpoint
from exchange.outbox.process import NICE
from tests.delivery.fixtures import boao_kr
from tests.delivery.peers import fhir_receiver
from tests.outbox.helpers import BASIS, HOME, PASSPORT, TOKEN, serve_process, served_deliveries
from tests.settlement.test_settlement_index import consent_bundle

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

FHIR = {"Content-Type": "application/fhir+json"}


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # the fields after the command's name


def _alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except FileNotFoundError:
        return False


def _sender_of(server: int) -> int | None:
    """The server's child that sends deliveries (multiprocessing's spawn of it), or None."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat(int(entry.name))[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if parent == server and b"multiprocessing.spawn" in cmdline and _alive(int(entry.name)):
            return int(entry.name)
    return None


def _statuses(url: str, token: str) -> list[str]:
    return [d["status"] for d in served_deliveries(url, token)]


def _until(what: Callable[[], object], within: float, failure: str) -> object:
    deadline = time.monotonic() + within
    while not (found := what()):
        assert time.monotonic() < deadline, failure
        time.sleep(0.1)
    return found


def test_a_niced_child_sends_is_started_again_and_dies_with_its_server(tmp_path: Path) -> None:
    data, log = tmp_path / "data", tmp_path / "server.log"
    with fhir_receiver() as peer:
        peer.bearer_tokens.add(TOKEN)
        engine, opened = open_store(Settings(data_dir=data))
        _, token = register_client(engine, "hospital", "hospital", "hospital-a")
        set_recipient(engine, Recipient(HOME, "KR", BASIS))
        set_endpoint(engine, opened, HOME, parse_endpoint(f"{peer.base}/fhir", token=TOKEN))
        engine.dispose()
        auth = {"Authorization": f"Bearer {token}", **FHIR}
        proc, url = serve_process(["--data", str(data)], log)
        try:
            sender = _until(lambda: _sender_of(proc.pid), 30, log.read_text())
            assert isinstance(sender, int)
            # Intake comes first: the sender runs NICE steps below its server, once started.
            niced = int(_stat(proc.pid)[16]) + NICE
            _until(lambda: int(_stat(sender)[16]) == niced, 30, "the sender is not niced")

            consent = consent_bundle(PASSPORT, HOME, purpose="TREAT")
            first = boao_kr()[0]
            for body in (consent, first):
                answer = httpx.post(url + "/fhir/Bundle", content=body, headers=auth)
                assert answer.status_code == 201, answer.text
            _until(lambda: _statuses(url, token) == ["delivered"], 30, log.read_text())

            # A sender that dies is started again, and the next record is delivered.
            os.kill(sender, signal.SIGKILL)
            again = _until(lambda: (_sender_of(proc.pid) or sender) != sender, 30, "no restart")
            assert again
            second = first.replace(b"SUB-20261120-0001", b"SUB-20261120-0002")
            answer = httpx.post(url + "/fhir/Bundle", content=second, headers=auth)
            assert answer.status_code == 201, answer.text
            both = ["delivered", "delivered"]
            _until(lambda: _statuses(url, token) == both, 30, log.read_text())
            assert len(peer.stored) == 2
            assert "the delivery process exited" in log.read_text()

            # Killed with its server, the sender exits too: no orphan keeps sending.
            sender = _sender_of(proc.pid)
            assert sender is not None
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        _until(lambda: not _alive(sender), 10, f"the sender {sender} outlived its server")
