"""Every FHIR answer as FHIR R4 clients expect it (http.html#mime, search.html#return).

The world of tests/privacy/test_access_matrix.py (two hospitals, two insurers, a regulator,
an auditor, an admin, their patients' Bundles) is walked through every FHIR route of the app
as every actor; each answer, data or refusal, is held to the rules: labelled
`application/fhir+json; charset=utf-8` (unless FHIR or Bulk Data name another format for it),
parsed by the R4B models, and, for a searchset, carrying a `self` link that repeats the search
and a distinct `fullUrl` on every entry. Asking for XML only is a 406.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fhir.resources.R4B import get_fhir_model_class

from exchange.http.routes.continuity import ER7
from exchange.registry import institutions as inst
from tests.api_helpers import BASE, FHIR_JSON, FHIR_JSON_UTF8, observation_bundle
from tests.indexes.test_continuity_api import FIXTURES as KR_FIXTURES
from tests.indexes.test_continuity_api import KR, MRN
from tests.indexes.test_e2b_api import EVENT
from tests.outbox.helpers import HOME, TOKEN, consent, recipient
from tests.privacy.test_access_matrix import (
    ACTORS,
    ASYNC,
    DATA_PROBES,
    Route,
    Seen,
    World,
    built_world,
    route_rules,
)
from tests.registry.test_institutions import BASE as INSTITUTION

DISCLOSURES = ("/v1/patients/{value}/disclosures", "get")

# Answers whose format FHIR or Bulk Data fix as other than FHIR JSON: (route, status) -> type.
OTHER_FORMATS: dict[tuple[Route, int], str] = {
    (("/fhir/Bundle/{bundle_id}/$hl7v2", "get"), 200): f"{ER7}; charset=utf-8",
    (("/fhir/Bundle/{bundle_id}/$e2b", "get"), 200): "application/xml; charset=utf-8",  # ICSR
    (("/fhir/$export-status/{job_id}", "get"), 200): "application/json",  # the manifest
    # SMART discovery at the FHIR base (SMART App Launch 2.x, "Conformance").
    (("/fhir/.well-known/smart-configuration", "get"), 200): "application/json",
    (("/fhir/$export-status/{job_id}/{file_name}", "get"), 200): "application/fhir+ndjson",
    # The delivery queued (docs/api.md): its JSON, not a FHIR resource.
    **{
        (("/fhir/Bundle/{bundle_id}/$deliver", "post"), st): "application/json" for st in (200, 201)
    },
}
SUBMIT = ("/fhir/Bundle", "post")


def _fhir(route: Route) -> bool:
    return route[0].startswith("/fhir") or route == DISCLOSURES


def _answered_routes(world: World) -> None:
    """Requests that reach the routes the world's probes only see refused: the registry's
    (hospital-a registered), the IPS and HL7 v2 exports (of a patient with a name)."""
    key = Ed25519PrivateKey.generate()
    engine, log = world.api.services.engine, world.api.services.log
    inst.register_admin_key(engine, "admin-1", key.public_key())
    record = replace(INSTITUTION, org="hospital-a", licence_valid_to=date(2099, 12, 31))
    inst.append_attestation(log, inst.sign_attestation(record, "admin-1", key))
    world.route = ("/fhir/Organization/{org}", "get")
    world.get("auditor", "/fhir/Organization/hospital-a")
    world.route = ("/fhir/VerificationResult", "get")
    world.get("auditor", "/fhir/VerificationResult", target="Organization/hospital-a")
    ids = [
        world.call("post", "hospital-a", "/fhir/Bundle", content=(KR_FIXTURES / name).read_bytes(),
                   headers={"Content-Type": FHIR_JSON}).json()["id"]
        for name in KR
    ]  # fmt: skip
    world.route = ("/fhir/Patient/$summary", "get")
    world.get("hospital-a", "/fhir/Patient/$summary", identifier=MRN)
    # A delivery queued by hand: a recipient with an endpoint (never reached here) that the
    # patient's consent names for treatment.
    recipient(world.api, "http://127.0.0.1:9/fhir", token=TOKEN)
    consent(world.api, world.headers["hospital-a"])
    # An adverse event's ICSR (E2B(R3) XML, not FHIR).
    event = world.call("post", "hospital-a", "/fhir/Bundle", content=EVENT,
                       headers={"Content-Type": FHIR_JSON}).json()["id"]  # fmt: skip
    world.route = ("/fhir/Bundle/{bundle_id}/$e2b", "get")
    world.get("hospital-a", f"/fhir/Bundle/{event}/$e2b")
    world.route = ("/fhir/Bundle/{bundle_id}/$deliver", "post")
    world.call("post", "hospital-a", f"/fhir/Bundle/{ids[0]}/$deliver",
               params={"recipient": f"Organization/{HOME}"})  # fmt: skip
    world.route = ("/fhir/Bundle/{bundle_id}/$hl7v2", "get")
    world.get("hospital-a", f"/fhir/Bundle/{ids[0]}/$hl7v2", message="ADT_A08")
    world.route = ("/fhir/$export-status/{job_id}", "delete")
    started = world.get("hospital-a", "/fhir/$export", headers=ASYNC)
    world.call("delete", "hospital-a", urlsplit(started.headers["content-location"]).path)


def _route_of(app: Any, path: str, method: str) -> Route:
    """The route a request went to (the export probe reaches several)."""
    parts = path.split("/")
    for route in route_rules(app):
        template = route[0].split("/")
        if (
            route[1] == method.lower()
            and len(template) == len(parts)
            and all(t == p or t.startswith("{") for t, p in zip(template, parts, strict=True))
        ):
            return route
    raise AssertionError(f"no route serves {method} {path}")


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, list[Seen]]]:
    with built_world(tmp_path_factory.mktemp("walk") / "data") as world:
        _answered_routes(world)
        for route, probe in DATA_PROBES.items():
            if _fhir(route):
                world.route = route
                for actor in ACTORS:
                    probe(world, actor)
        # A submission in each form of answer, and one refused.
        world.route = SUBMIT
        for prefer in ("", "return=representation", "return=OperationOutcome", "return=minimal"):
            headers = {"Content-Type": FHIR_JSON, "Prefer": prefer}
            world.call("post", "hospital-a", "/fhir/Bundle", content=observation_bundle(),
                       headers=headers)  # fmt: skip
        world.call("post", "hospital-a", "/fhir/Bundle", content=b"{",
                   headers={"Content-Type": FHIR_JSON})  # fmt: skip
        app = world.api.client.app
        yield (
            world,
            [
                replace(
                    s, route=_route_of(app, s.response.request.url.path, s.response.request.method)
                )
                for s in world.seen
            ],
        )


def test_every_fhir_route_is_walked(walked: tuple[World, list[Seen]]) -> None:
    world, seen = walked
    routes = {r for r in route_rules(world.api.client.app) if _fhir(r)}
    answered = {s.route for s in seen if s.response.status_code < 400}
    assert len(routes) >= 20
    assert routes <= answered, sorted(routes - answered)


def test_every_fhir_answer_is_fhir_json_in_utf8(walked: tuple[World, list[Seen]]) -> None:
    _, seen = walked
    for s in seen:
        r = s.response
        if not r.content:
            continue  # 202 while an export runs, return=minimal
        expected = OTHER_FORMATS.get((s.route, r.status_code), FHIR_JSON_UTF8)
        default_submit = not r.request.headers.get("prefer")
        if s.route == SUBMIT and r.status_code in (200, 201) and default_submit:
            expected = "application/json"  # {"id", "index", ...}: not a FHIR resource
        assert r.headers["content-type"] == expected, (s.route, s.actor, r.status_code)


def _fhir_documents(seen: list[Seen]) -> Iterator[tuple[Seen, dict[str, Any]]]:
    for s in seen:
        if s.response.headers.get("content-type") == FHIR_JSON_UTF8:
            yield s, json.loads(s.response.content)


def test_every_fhir_answer_parses_as_r4b(walked: tuple[World, list[Seen]]) -> None:
    _, seen = walked
    kinds = set()
    for s, doc in _fhir_documents(seen):
        get_fhir_model_class(doc["resourceType"]).model_validate_json(s.response.content)
        kinds.add(doc["resourceType"])
    assert {"Bundle", "OperationOutcome", "CapabilityStatement", "Organization"} <= kinds


# R4 MeasureReport.subject: Reference(Patient | Practitioner | PractitionerRole | Location |
# Device | RelatedPerson | Group); the institution that reports is MeasureReport.reporter.
MEASURE_SUBJECTS = ("Patient", "Practitioner", "PractitionerRole", "Location", "Device",
                    "RelatedPerson", "Group")  # fmt: skip


def _resources(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield doc
    for entry in doc.get("entry", []) if doc["resourceType"] == "Bundle" else []:
        if "resource" in entry:
            yield from _resources(entry["resource"])


def test_measure_reports_follow_r4_reference_rules(walked: tuple[World, list[Seen]]) -> None:
    _, seen = walked
    reports = [
        r for _, doc in _fhir_documents(seen) for r in _resources(doc)
        if r["resourceType"] == "MeasureReport"
    ]  # fmt: skip
    assert reports
    for report in reports:
        subject = report.get("subject", {}).get("reference")
        assert subject is None or subject.split("/")[0] in MEASURE_SUBJECTS, subject
        assert report["reporter"]["reference"] == "Organization/hospital-a"


def test_every_searchset_links_itself_and_names_its_entries(
    walked: tuple[World, list[Seen]],
) -> None:
    _, seen = walked
    searched = set()
    for s, doc in _fhir_documents(seen):
        if doc["resourceType"] != "Bundle" or doc.get("type") != "searchset":
            continue
        searched.add(s.route)
        links = {link["relation"]: link["url"] for link in doc.get("link", [])}
        asked = urlsplit(str(s.response.request.url))
        self_link = urlsplit(links["self"])
        assert f"{self_link.scheme}://{self_link.netloc}" == BASE, (s.route, links)
        assert self_link.path == asked.path
        assert parse_qsl(self_link.query) == parse_qsl(asked.query), (s.route, links)
        full_urls = [e["fullUrl"] for e in doc.get("entry", [])]
        assert len(set(full_urls)) == len(full_urls), (s.route, full_urls)
    # The searches of the app: settlement, registry, quality, accounting of disclosures.
    searches = ("Claim", "Organization", "MeasureReport", "VerificationResult")
    assert {(f"/fhir/{t}", "get") for t in searches} | {DISCLOSURES} <= searched


def test_organization_entries_resolve_to_their_read(walked: tuple[World, list[Seen]]) -> None:
    world, seen = walked
    headers = world.headers["auditor"]
    found = world.api.client.get("/fhir/Organization", headers=headers).json()
    assert found["entry"]
    for entry in found["entry"]:
        read = world.api.client.get(entry["fullUrl"], headers=headers)
        assert read.status_code == 200 and read.json() == entry["resource"]


@pytest.mark.parametrize(
    ("accept", "params"),
    [
        ("application/fhir+xml", {}),
        ("application/xml, text/xml;q=0.5", {}),
        ("application/fhir+json", {"_format": "xml"}),
        (None, {"_format": "application/fhir+xml"}),
        (None, {"_format": "ttl"}),
    ],
)
def test_asking_only_for_another_format_is_406(
    walked: tuple[World, list[Seen]], accept: str | None, params: dict[str, str]
) -> None:
    world, _ = walked
    headers = world.headers["hospital-a"] | ({"Accept": accept} if accept else {})
    for path in ("/fhir/metadata", "/fhir/Organization", f"/fhir/Bundle/{world.bundle_ids[0]}"):
        r = world.api.client.get(path, headers=headers, params=params)
        assert r.status_code == 406, (path, r.text)
        assert r.headers["content-type"] == FHIR_JSON_UTF8
        assert r.json()["issue"][0]["code"] == "not-supported"


@pytest.mark.parametrize(
    ("accept", "params"),
    [
        ("application/fhir+xml;q=0.9, application/fhir+json", {}),
        ("application/fhir+xml, */*;q=0.1", {}),
        ("application/xml", {"_format": "json"}),  # _format wins over Accept
        (None, {"_format": "application/fhir+json"}),
        ("application/fhir+json;fhirVersion=4.0", {}),
    ],
)
def test_anything_admitting_json_is_served(
    walked: tuple[World, list[Seen]], accept: str | None, params: dict[str, str]
) -> None:
    world, _ = walked
    headers = world.headers["hospital-a"] | ({"Accept": accept} if accept else {})
    r = world.api.client.get("/fhir/metadata", headers=headers, params=params)
    assert r.status_code == 200 and r.headers["content-type"] == FHIR_JSON_UTF8
