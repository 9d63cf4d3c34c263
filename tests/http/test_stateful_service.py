"""The whole service against a simple model: append, retries, reads, crashes, audits.

The model is a list of (identifier, body) in log order. Each rule drives the real app over
HTTP (TestClient) on a real SQLite data directory; `crash` drops the app without flushing
anything of its own and reopens the same directory. CI runs the full size, 200 examples x
30 steps (about three minutes here); MEDLEDGER_QUICK=1 runs 20 x 20 (about 12 s).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from exchange.app import create_app
from exchange.audit.sources import HttpSource
from exchange.config import Settings
from exchange.identity.clients import register_client
from ledger.audit import audit
from ledger.audit.state import AuditState
from ledger.note import Verifier
from tests.api_helpers import FHIR_JSON, observation_bundle

QUICK = os.environ.get("MEDLEDGER_QUICK", "") not in ("", "0")


class Service(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="medledger-stateful-"))
        self.model: list[tuple[str, bytes, str]] = []  # identifier, body, location
        self.state: AuditState | None = None
        self.checkpoints: list[str] = []
        self._open()
        _, token = register_client(self.app.services.engine, "sm", "hospital", "hospital-a")
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON}

    def _open(self) -> None:
        self.app = create_app(Settings(data_dir=self.dir))
        self.client = TestClient(self.app, raise_server_exceptions=False)
        self.client.__enter__()

    def _close(self) -> None:
        self.client.__exit__(None, None, None)

    def teardown(self) -> None:
        self._close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _post(self, body: bytes) -> Any:
        return self.client.post("/fhir/Bundle", content=body, headers=self.headers)

    @rule(value=st.decimals(0, 999, places=2).map(str))
    def append(self, value: str) -> None:
        ident = f"urn:uuid:{uuid.uuid4()}"
        body = observation_bundle(value=value, identifier=ident)
        r = self._post(body)
        assert r.status_code == 201, r.text
        assert r.json()["index"] == len(self.model)
        self.model.append((ident, body, r.headers["Location"]))

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def retry_same(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.model) - 1))
        r = self._post(self.model[i][1])
        assert r.status_code == 200, r.text
        assert r.json()["index"] == i

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def retry_changed(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.model) - 1))
        doc = json.loads(self.model[i][1])
        doc["entry"][0]["resource"]["valueQuantity"]["value"] = 1000.5
        r = self._post(json.dumps(doc).encode())
        assert r.status_code == 409, r.text
        assert r.json()["resourceType"] == "OperationOutcome"

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.model) - 1))
        r = self.client.get(self.model[i][2], headers=self.headers)
        assert r.status_code == 200, r.text
        assert r.json()["identifier"]["value"] == self.model[i][0]

    @rule()
    def crash(self) -> None:
        self._close()
        self._open()

    @rule()
    def checkpoint(self) -> None:
        r = self.client.get("/v1/log/checkpoint")
        assert r.status_code == 200
        self.checkpoints.append(r.text)

    @rule()
    def audit_log(self) -> None:
        key = Verifier.from_vkey(self.client.get("/v1/log/key").text)
        result = audit(HttpSource("http://testserver", client=self.client), [key], state=self.state)
        assert result.ok, result.error
        assert result.size == len(self.model)
        self.state = result.state

    @invariant()
    def log_size_matches_model(self) -> None:
        assert self.app.services.log.size() == len(self.model)


TestService = Service.TestCase
TestService.settings = settings(
    max_examples=20 if QUICK else 200,
    stateful_step_count=20 if QUICK else 30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
