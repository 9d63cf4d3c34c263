"""/fhir/metadata, and errors outside the routes: every answer is FHIR, even a crash."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from exchange.http.routes.metadata import LIMITS_EXTENSION
from exchange.intake import IntakeLimits
from tests.api_helpers import FHIR_JSON, Api, is_outcome, open_api


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with open_api(tmp_path / "data") as a:
        yield a


def test_capability_statement_is_valid_and_truthful(api: Api) -> None:
    r = api.client.get("/fhir/metadata")
    assert r.status_code == 200 and r.headers["content-type"].startswith(FHIR_JSON)
    doc = r.json()
    CapabilityStatement.model_validate(doc)
    assert doc["fhirVersion"] == "4.0.1" and doc["kind"] == "instance"
    (rest,) = doc["rest"]
    (bundle,) = [r for r in rest["resource"] if r["type"] == "Bundle"]
    assert bundle["type"] == "Bundle"
    assert sorted(i["code"] for i in bundle["interaction"]) == ["create", "read", "vread"]
    assert bundle["conditionalCreate"] is False and bundle["updateCreate"] is False
    (binary,) = [r for r in rest["resource"] if r["type"] == "Binary"]
    assert sorted(i["code"] for i in binary["interaction"]) == ["read", "vread"]
    limits = {e["url"]: e["valueInteger"] for e in rest["extension"][0]["extension"]}
    assert rest["extension"][0]["url"] == LIMITS_EXTENSION
    defaults = IntakeLimits()
    assert limits == {
        "maxBytes": defaults.max_bytes,
        "maxDepth": defaults.max_depth,
        "maxEntries": defaults.max_entries,
        "maxStringChars": defaults.max_string_chars,
    }


def test_the_statement_follows_configured_limits(tmp_path: Path) -> None:
    with open_api(tmp_path / "data", limits=IntakeLimits(max_bytes=1000, max_entries=5)) as api:
        rest = api.client.get("/fhir/metadata").json()["rest"][0]
        limits = {e["url"]: e["valueInteger"] for e in rest["extension"][0]["extension"]}
        assert (limits["maxBytes"], limits["maxEntries"]) == (1000, 5)
        assert "at most 1000 bytes" in rest["documentation"]


def test_unknown_path_is_a_404_operation_outcome(api: Api) -> None:
    r = api.client.get("/fhir/Patient/1")
    assert r.status_code == 404
    assert "/fhir/Patient/1" in is_outcome(r)["issue"][0]["diagnostics"]


def test_wrong_method_is_a_405_operation_outcome(api: Api) -> None:
    r = api.client.delete("/fhir/Bundle/abc")
    assert r.status_code == 405
    assert is_outcome(r)["issue"][0]["code"] == "not-supported"


def test_an_unexpected_error_is_a_500_operation_outcome(api: Api) -> None:
    @api.client.app.get("/boom")  # type: ignore[attr-defined]
    def boom() -> None:
        raise RuntimeError("secret detail")

    r = api.client.get("/boom")
    assert r.status_code == 500
    issue = is_outcome(r)["issue"][0]
    assert issue["code"] == "exception" and "secret" not in issue["diagnostics"]
