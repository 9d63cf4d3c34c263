"""An exchange with its outbox on a fast schedule, recipients, consents, and real peers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select

from exchange.app import create_app
from exchange.config import Settings
from exchange.consent.crossborder import LegalBasis, Recipient, set_recipient
from exchange.delivery.endpoints import parse_endpoint
from exchange.outbox.endpoints import set_endpoint
from exchange.store.tables import deliveries_table
from tests.api_helpers import Api
from tests.delivery.fixtures import boao_kr
from tests.delivery.peers import Hl7Receiver
from tests.paths import ROOT
from tests.settlement.test_settlement_index import consent_bundle

PASSPORT = ("http://hl7.org/fhir/sid/passport-KOR", "M12345678")  # boao_kr's patient
HOME = "home-kr"
TOKEN = "home-kr-bearer-token"
BASIS = LegalBasis("standard-contract", "琼网信备2026-0043")


@contextmanager
def exchange(
    data: Path, db_url: str | None = None, mllp_port: int | None = None, **delivery: Any
) -> Iterator[Api]:
    """The service with its outbox looking every 50 ms (unless told `poll`) and retrying after
    100 ms (and, with `mllp_port`, listening for HL7 v2 on it)."""
    settings = Settings(
        data_dir=data,
        db_url=db_url,
        delivery_first_wait=delivery.pop("first_wait", timedelta(milliseconds=100)),
        delivery_poll=delivery.pop("poll", 0.05),
        delivery_timeout=delivery.pop("timeout", 5.0),
        **delivery,
    )
    mllp = None if mllp_port is None else ("127.0.0.1", mllp_port)
    app = create_app(settings, public_url="http://testserver", mllp=mllp)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, app.services)


def recipient(api: Api, url: str, *, org: str = HOME, country: str = "KR", **options: Any) -> None:
    services = api.services
    set_recipient(services.engine, Recipient(org, country, BASIS))
    set_endpoint(services.engine, services.vault, org, parse_endpoint(url, **options))


def consent(api: Api, headers: dict[str, str], org: str = HOME, **options: Any) -> dict[str, Any]:
    """The patient's consent to disclose to `org` (TREAT unless told otherwise)."""
    options.setdefault("purpose", "TREAT")
    answer = api.post(consent_bundle(PASSPORT, org, **options), headers)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def record(api: Api, headers: dict[str, str], n: int = 0) -> dict[str, Any]:
    """The patient's inpatient record (a `record` Bundle), its identifier varied by n."""
    body = boao_kr()[0]
    if n:
        body = body.replace(b"SUB-20261120-0001", f"SUB-20261120-{n:04d}".encode())
    answer = api.post(body, headers)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def deliveries(api: Api, headers: dict[str, str], **params: str) -> list[dict[str, Any]]:
    answer = api.client.get("/v1/deliveries", headers=headers, params=params)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["deliveries"])


def settled(api: Api, headers: dict[str, str], count: int = 1, within: float = 30) -> list[Any]:
    """The deliveries once `count` of them are no longer pending."""
    deadline = time.monotonic() + within
    while True:
        found = deliveries(api, headers)
        if sum(d["status"] != "pending" for d in found) >= count:
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.05)


def row(api: Api, delivery_id: str) -> Any:
    with api.services.engine.connect() as conn:
        t = deliveries_table
        return conn.execute(select(t).where(t.c.id == delivery_id)).one()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_of(api: Api, delivery_id: str) -> dict[str, Any]:
    return dict(json.loads(row(api, delivery_id).record))


@contextmanager
def hl7_receiver(*modes: str, default: str = "AA") -> Iterator[Hl7Receiver]:
    """python-hl7's MLLP server on an event loop of its own thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    receiver = Hl7Receiver(*modes, default=default)
    asyncio.run_coroutine_threadsafe(receiver.__aenter__(), loop).result(10)
    try:
        yield receiver
    finally:
        asyncio.run_coroutine_threadsafe(receiver.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def serve_process(state: list[str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A real `medledger serve` on `state` (its --data or --db options), its stderr to `log`,
    answering /health/ready; the process and its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exchange.cli", "serve", "--port", str(port),
         "--intake-workers", "0", "--rate-limit", "0", "--delivery-timeout", "1", *state],
        stdout=subprocess.DEVNULL, stderr=log.open("ab"), env=_env(),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the server did not start")


def served_deliveries(url: str, token: str) -> list[dict[str, Any]]:
    answer = httpx.get(url + "/v1/deliveries", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["deliveries"])
