"""openapi.yaml is the HTTP contract: it must be exactly what the app generates.

After a deliberate change of the API, regenerate it:
    .venv/bin/python -m exchange.openapi_dump > openapi.yaml
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urljoin

import yaml

from exchange.http.routes.epcis import PROBLEM_SCHEMA
from exchange.openapi_dump import openapi_document
from tests.api_helpers import BASE, open_api
from tests.paths import ROOT

CONTRACT = ROOT / "openapi.yaml"
REGENERATE = ".venv/bin/python -m exchange.openapi_dump > openapi.yaml"


def _paths(doc: dict) -> dict[str, list[str]]:
    return {path: sorted(ops) for path, ops in doc.get("paths", {}).items()}


def test_openapi_yaml_is_what_the_app_serves() -> None:
    committed = yaml.safe_load(CONTRACT.read_text(encoding="utf-8"))
    generated = json.loads(json.dumps(openapi_document()))
    assert _paths(committed) == _paths(generated), f"endpoints differ; run: {REGENERATE}"
    assert committed == generated, f"openapi.yaml differs from the app; run: {REGENERATE}"


def test_every_error_answer_is_an_operation_outcome() -> None:
    doc = openapi_document()
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                if int(status) >= 400 and path.startswith("/auth/"):
                    # OAuth endpoints answer as RFC 6749 §5.2 says, since OAuth clients parse it.
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/OAuthError"}, (
                        f"{method.upper()} {path} {status}"
                    )
                elif int(status) == 401 and path == "/v1/shl/{link_id}/manifest":
                    # SHL fixes a wrong passcode's answer, since SHL clients parse it.
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ShlPasscodeRefused"}, (
                        f"{method.upper()} {path} {status}"
                    )
                elif int(status) >= 400 and "application/problem+json" in answer["content"]:
                    # EPCIS 2.0's REST binding fixes a refused query's answer (RFC 7807); what
                    # the framework refuses first is an OperationOutcome all the same.
                    assert path == "/epcis/events" and int(status) == 400, path
                    schema = answer["content"]["application/problem+json"]["schema"]
                    assert schema == PROBLEM_SCHEMA, f"{method.upper()} {path} {status}"
                    schema = answer["content"]["application/fhir+json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/OperationOutcome"}
                elif int(status) >= 400:
                    schema = answer["content"]["application/fhir+json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/OperationOutcome"}, (
                        f"{method.upper()} {path} {status}"
                    )
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_smart_backend_services_is_declared_beside_bearer(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        doc = api.client.get("/openapi.json").json()
        token_endpoint = api.client.get("/.well-known/smart-configuration").json()["token_endpoint"]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "description": "a credential from `medledger clients add`",
        "scheme": "bearer",
    }
    flow = schemes["oauth2"]["flows"]["clientCredentials"]
    assert set(schemes["oauth2"]["flows"]) == {"clientCredentials"}
    # Relative, as OpenAPI allows: resolved against where the document is served.
    assert urljoin(f"{BASE}/openapi.json", flow["tokenUrl"]) == token_endpoint
    guarded = 0
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            security = operation.get("security")
            if security is None:
                continue
            guarded += 1
            # Either scheme admits the caller: a credential, or a token with these scopes.
            assert [next(iter(s)) for s in security] == ["bearer", "oauth2"], (method, path)
            assert set(security[1]["oauth2"]) <= set(flow["scopes"]), (method, path)
    assert guarded >= 30
    read = doc["paths"]["/fhir/Bundle/{bundle_id}"]["get"]["security"]
    assert read == [{"bearer": []}, {"oauth2": ["system/Bundle.r"]}]
