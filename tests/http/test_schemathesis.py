"""Generated requests from the OpenAPI document, for each role and anonymously.

Every operation of the published document (the app's own, which tests/http/test_openapi_contract.py
keeps equal to openapi.yaml) is exercised with schemathesis-generated valid and invalid
requests. Checks: no 5xx, status codes, content types and bodies conform to the document,
invalid data is rejected (4xx), and an operation that needs a credential does not ignore it.

CI runs 100 examples per operation and generation mode (over 1,000 requests per role),
derandomized so that a run replays the same cases; MEDLEDGER_SOAK=1 runs 400 fresh ones,
MEDLEDGER_QUICK=1 25 for a quick look while developing. MEDLEDGER_SCHEMATHESIS_EXAMPLES
overrides all three.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from exchange.app import create_app
from exchange.config import Settings
from exchange.identity.clients import register_client

SOAK = os.environ.get("MEDLEDGER_SOAK", "") not in ("", "0")
QUICK = os.environ.get("MEDLEDGER_QUICK", "") not in ("", "0")
EXAMPLES = int(
    os.environ.get("MEDLEDGER_SCHEMATHESIS_EXAMPLES", 400 if SOAK else 25 if QUICK else 100)
)
ROLES = {
    "hospital": "hospital-a",
    "insurer": "insurer-a",
    "auditor": None,
    "admin": None,
    "regulator": "regulator-a",
    "anonymous": None,
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, dict[str, Any]]]:
    data: Path = tmp_path_factory.mktemp("schemathesis")
    app = create_app(Settings(data_dir=data))
    with TestClient(app):  # runs the lifespan: intake started, services closed after
        creds: dict[str, Any] = {"anonymous": None}
        for role, org in ROLES.items():
            if role != "anonymous":
                _, token = register_client(app.services.engine, role, role, org)
                creds[role] = {"Authorization": f"Bearer {token}"}
        yield app, creds


@pytest.fixture(scope="module")
def api_schema(served: tuple[FastAPI, dict[str, Any]]) -> Any:
    schema = schemathesis.openapi.from_asgi("/openapi.json", served[0])
    schema.config.generation.update(
        modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    )
    return schema


@pytest.mark.parametrize("role", list(ROLES))
def test_generated_requests_conform(
    role: str, served: tuple[FastAPI, dict[str, Any]], api_schema: Any
) -> None:
    headers = served[1][role]
    sent = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(
            case=operation.as_strategy(schemathesis.GenerationMode.POSITIVE)
            | operation.as_strategy(schemathesis.GenerationMode.NEGATIVE)
        )
        # CI replays the same cases every run (a red build means a change broke something);
        # the soak explores new ones.
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=not SOAK,
        )
        def run(case: Any) -> None:
            nonlocal sent
            sent += 1
            # A JSON object the document allows is not thereby a valid FHIR Bundle (FHIR's rules
            # are not expressible in the document's JSON Schema), so rejecting one is correct.
            case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

        run()
    print(f"{role}: {sent} generated requests")
    assert sent >= EXAMPLES
    if EXAMPLES >= 100:  # the size CI promises
        assert sent >= 1000, f"only {sent} requests as {role}"
