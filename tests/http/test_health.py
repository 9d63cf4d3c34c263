"""GET /health/live and /health/ready: what a load balancer or orchestrator asks before routing.

Ready means a submission would be served at once: the store is open for appends and the intake
workers are warm. Neither needs a credential, and neither says more than that.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from fastapi.testclient import TestClient

from exchange.app import create_app
from exchange.config import Settings
from exchange.identity.clients import register_client
from tests.api_helpers import FHIR_JSON, is_outcome, observation_bundle, open_api


def test_live_and_ready_need_no_credential_and_say_nothing_more(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        live = api.client.get("/health/live")
        ready = api.client.get("/health/ready")
        assert (live.status_code, live.json()) == (200, {"status": "live"})
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        assert live.headers["cache-control"] == ready.headers["cache-control"] == "no-store"


def test_ready_waits_for_warm_intake_workers(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data"), intake_workers=1)
    _, token = register_client(app.services.engine, "his", "hospital", "hospital-a")
    # Without its lifespan the app has not started its intake workers.
    cold = TestClient(app, raise_server_exceptions=False)
    assert cold.get("/health/live").status_code == 200
    refused = cold.get("/health/ready")
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "intake" in is_outcome(refused)["issue"][0]["diagnostics"]
    with TestClient(app, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 60
        while (status := client.get("/health/ready").status_code) != 200:
            assert status == 503 and time.monotonic() < deadline
            time.sleep(0.05)
        # Ready: the workers are up and warm, and a submission is served by them.
        assert app.services.intake.ready
        headers = {"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON}
        answer = client.post("/fhir/Bundle", content=observation_bundle(), headers=headers)
        assert answer.status_code == 201, answer.text


def test_not_ready_while_the_log_serves_reads_only(tmp_path: Path) -> None:
    data, saved = tmp_path / "data", tmp_path / "saved"
    with open_api(data) as api:
        pass
    shutil.copytree(data, saved)
    with open_api(data) as api:
        assert api.post(observation_bundle(), api.credential()).status_code == 201
    # The database goes back to before that entry; the checkpoint file beside the key does not.
    for name in ("medledger.db", "medledger.db-wal", "medledger.db-shm"):
        (data / name).unlink(missing_ok=True)
        if (saved / name).exists():
            shutil.copy2(saved / name, data / name)
    with open_api(data) as api:
        assert api.services.log.read_only_reason
        assert api.client.get("/health/live").status_code == 200
        refused = api.client.get("/health/ready")
        assert refused.status_code == 503
        assert "reads only" in is_outcome(refused)["issue"][0]["diagnostics"]
