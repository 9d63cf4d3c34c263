"""The CapabilityStatement declares every interaction, search parameter and operation the app
serves under /fhir, and nothing it does not serve.

The routes are walked as FastAPI holds them (every one, in the OpenAPI document or not); each
is held to the declaration FHIR R4 gives its path and method, and the statement is parsed by
the R4B models. The SMART parts of `rest.security` are what SMART App Launch 2.x's
"Conformance" names: the `oauth-uris` extension with the token URL and the SMART-on-FHIR
service.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.routing import iter_route_contexts
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from exchange.http.capability import UnclassifiedRoute, served
from exchange.http.query import query_names
from tests.api_helpers import BASE, Api, open_api

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
Route = tuple[str, str]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with open_api(tmp_path_factory.mktemp("cap") / "data") as a:
        yield a


def _fhir_routes(app: Any) -> dict[Route, set[str]]:
    """(path, method) of every route under /fhir, with the query parameters it takes."""
    routes: dict[Route, set[str]] = {}
    for ctx in iter_route_contexts(app.routes):
        if ctx.path.startswith("/fhir/"):
            params = query_names(ctx.dependant) - {"_format", "_pretty"}
            for method in ctx.methods - {"HEAD"}:
                routes[(ctx.path, method)] = {p.split(":")[0] for p in params}
    return routes


def _statement(api: Api) -> dict[str, Any]:
    r = api.client.get("/fhir/metadata")
    assert r.status_code == 200, r.text
    CapabilityStatement.model_validate(r.json())
    return r.json()


def _declared(rest: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    resources = {r["type"]: r for r in rest["resource"]}
    return resources, {op["name"] for op in rest.get("operation", [])}


def _needs(path: str, method: str) -> tuple[str | None, str, str]:
    """What FHIR R4 calls (path, method): (resource type or None, 'operation' or
    'interaction', its name)."""
    parts = path.removeprefix("/fhir/").split("/")
    if parts[-1].startswith("$"):
        return (None if len(parts) == 1 else parts[0]), "operation", parts[-1][1:]
    if len(parts) == 1:
        return parts[0], "interaction", {"GET": "search-type", "POST": "create"}[method]
    if len(parts) == 2:
        return parts[0], "interaction", {"GET": "read", "PUT": "update", "DELETE": "delete"}[method]
    assert parts[2] == "_history" and len(parts) == 4, path
    return parts[0], "interaction", "vread"


def test_every_fhir_route_served_is_declared(api: Api) -> None:
    rest = _statement(api)["rest"][0]
    resources, system_ops = _declared(rest)
    routes = _fhir_routes(api.client.app)
    checked = set()
    for (path, method), params in sorted(routes.items()):
        if path in ("/fhir/metadata", "/fhir/.well-known/smart-configuration"):
            continue  # the statement itself, SMART's discovery document
        if path.startswith("/fhir/$export-status/"):
            continue  # the URLs $export hands out
        rtype, kind, name = _needs(path, method)
        checked.add(f"{rtype or ''}{'$' if kind == 'operation' else '.'}{name}")
        if rtype is None:
            assert name in system_ops, f"{method} {path}: ${name} is not declared"
            continue
        assert rtype in resources, f"{method} {path}: {rtype} is not declared"
        if kind == "operation":
            ops = {op["name"] for op in resources[rtype].get("operation", [])}
            assert name in ops, f"{method} {path}: {rtype} ${name} is not declared"
        else:
            codes = {i["code"] for i in resources[rtype]["interaction"]}
            assert name in codes, f"{method} {path}: {rtype} {name} is not declared"
        if name == "search-type":
            declared = {p["name"] for p in resources[rtype].get("searchParam", [])}
            assert params == declared, f"{method} {path} takes {params}, declares {declared}"
    # The walk reached the routes added over time, not only the first ones.
    assert {
        "$export", "Patient$summary", "Bundle$hl7v2", "Bundle$e2b", "Bundle$deliver",
        "Bundle.create", "Bundle.read", "Bundle.vread", "Binary.read", "Binary.vread",
        "MeasureReport.search-type", "VerificationResult.search-type", "Organization.read",
        "Organization.search-type", "Claim.search-type",
    } <= checked  # fmt: skip


def test_nothing_is_declared_that_is_not_served(api: Api) -> None:
    rest = _statement(api)["rest"][0]
    routes = {(p, m) for p, m in _fhir_routes(api.client.app)}
    paths = {p for p, _ in routes}
    verbs = {"search-type": ("", "GET"), "create": ("", "POST"), "read": ("/{}", "GET"),
             "vread": ("/{}/_history/{}", "GET")}  # fmt: skip
    for resource in rest["resource"]:
        rtype = resource["type"]
        for interaction in resource["interaction"]:
            suffix, method = verbs[interaction["code"]]
            assert any(
                m == method
                and p.startswith(f"/fhir/{rtype}")
                and _shape(p) == f"/fhir/{rtype}{suffix}"
                for p, m in routes
            ), f"{rtype} {interaction['code']} is declared but not served"
        for op in resource.get("operation", []):
            name = op["name"]
            assert any(p.startswith(f"/fhir/{rtype}/") and p.endswith(f"/${name}") for p in paths)
    for op in rest["operation"]:
        assert f"/fhir/${op['name']}" in paths


def _shape(path: str) -> str:
    return "/".join("{}" if s.startswith("{") else s for s in path.split("/"))


def test_security_names_smart_and_its_token_url(api: Api) -> None:
    security = _statement(api)["rest"][0]["security"]
    (uris,) = [e for e in security["extension"] if e["url"] == OAUTH_URIS]
    assert uris["extension"] == [{"url": "token", "valueUri": f"{BASE}/auth/token"}]
    codings = [c for s in security["service"] for c in s["coding"]]
    assert {
        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
        "code": "SMART-on-FHIR",
        "display": "SMART-on-FHIR",
    } in codings


def test_a_route_added_under_fhir_is_declared_as_soon_as_it_is_served(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        extra = APIRouter(prefix="/fhir")
        extra.add_api_route("/Device/{device_id}/$lookup", lambda device_id: {}, methods=["GET"])
        extra.add_api_route("/$ping", lambda: {}, methods=["POST"], summary="Answers pong")
        api.client.app.include_router(extra)  # type: ignore[attr-defined]
        resources, system_ops = _declared(_statement(api)["rest"][0])
        assert [op["name"] for op in resources["Device"]["operation"]] == ["lookup"]
        assert resources["Device"]["interaction"] == []
        (ping,) = [op for op in _statement(api)["rest"][0]["operation"] if op["name"] == "ping"]
        assert ping["documentation"] == "Answers pong" and "ping" in system_ops


def test_a_route_of_no_fhir_shape_is_refused() -> None:
    odd = APIRouter(prefix="/fhir")
    odd.add_api_route("/bundles/list", lambda: {}, methods=["GET"])
    with pytest.raises(UnclassifiedRoute, match="GET /fhir/bundles/list"):
        served(odd.routes)
