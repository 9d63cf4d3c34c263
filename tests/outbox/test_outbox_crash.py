"""A real `medledger serve` killed with SIGKILL while the receiver holds a delivery it has
stored but not yet answered: the next server sends it again, under the same identifier, and
the receiver keeps one copy (its conditional create answers the retry 200)."""

from __future__ import annotations

import hashlib
import json
import signal
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from exchange.bootstrap import open_log, open_store
from exchange.config import Settings
from exchange.consent.crossborder import Recipient, set_recipient
from exchange.delivery.endpoints import parse_endpoint
from exchange.identity.clients import register_client
from exchange.outbox.endpoints import set_endpoint
from exchange.store.tables import deliveries_table
from ledger.entry import commitment, parse_entry
from ledger.keys import load_or_create_signer
from tests.delivery.fixtures import boao_kr
from tests.delivery.peers import fhir_receiver
from tests.outbox.helpers import BASIS, HOME, PASSPORT, TOKEN, serve_process, served_deliveries
from tests.settlement.test_settlement_index import consent_bundle

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

ORIGIN = "medledger.example/log"
FHIR = {"Content-Type": "application/fhir+json"}


def _state(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> list[str]:
    if backend == "sqlite":
        return ["--data", str(tmp_path / "data")]
    pg_url = request.getfixturevalue("pg_url")
    load_or_create_signer(tmp_path / "log.key", ORIGIN)
    return ["--db", pg_url, "--key-file", str(tmp_path / "log.key")]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_mid_delivery_delivers_once(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    state = _state(backend, tmp_path, request)
    log = tmp_path / "server.log"
    settings = _settings(state)
    with fhir_receiver() as peer:
        peer.bearer_tokens.add(TOKEN)
        peer.answer_delay = 30  # stored at once, answered only once lowered (after the kill)
        engine, opened = open_store(settings)
        _, token = register_client(engine, "crash", "hospital", "hospital-a")
        set_recipient(engine, Recipient(HOME, "KR", BASIS))
        set_endpoint(engine, opened, HOME, parse_endpoint(f"{peer.base}/fhir", token=TOKEN))
        engine.dispose()
        auth = {"Authorization": f"Bearer {token}"}
        proc, url = serve_process(state, log)
        try:
            for body in (consent_bundle(PASSPORT, HOME, purpose="TREAT"), boao_kr()[0]):
                answer = httpx.post(url + "/fhir/Bundle", content=body, headers={**auth, **FHIR})
                assert answer.status_code == 201, answer.text
            assert peer.stored_event.wait(30), log.read_text()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
        peer.answer_delay = 0
        proc, url = serve_process(state, log)
        try:
            deadline = time.monotonic() + 60
            while (found := served_deliveries(url, token))[0]["status"] == "pending":
                assert time.monotonic() < deadline, (found, log.read_text())
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    [done] = found
    assert done["status"] == "delivered" and done["attempts"] == 1, done
    # Two posts of the same document under the same identifier; one copy kept.
    assert len(peer.posts) == 2 and len(peer.stored) == 1
    assert peer.posts[0]["if-none-exist"] == peer.posts[1]["if-none-exist"]
    [received] = peer.stored.values()
    # The delivery's entry commits to its record, and the record to the bytes received.
    engine, _ = open_store(settings)
    ledger_log, _ = open_log(settings, engine)
    try:
        with engine.connect() as conn:
            row = conn.execute(select(deliveries_table)).one()
        entry = parse_entry(ledger_log.entries(done["ledger_index"], done["ledger_index"] + 1)[0])
    finally:
        ledger_log.close()
        engine.dispose()
    assert entry.kind == "delivery"
    assert entry.commit == commitment(bytes(row.salt), bytes(row.record))
    assert json.loads(row.record)["sent"]["sha256"] == hashlib.sha256(received).hexdigest()


def _settings(state: list[str]) -> Settings:
    if state[0] == "--data":
        return Settings(data_dir=Path(state[1]))
    return Settings(db_url=state[1], key_file=Path(state[3]))
