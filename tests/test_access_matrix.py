"""Who sees whose patient data, over every endpoint the app has; one access entry per request.

The routes come from the app's own OpenAPI document: each must be classified below as
patient data (probed as every actor) or not (probed too, and must show no patient's data), so
an endpoint added later fails this test until someone decides which it is.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from exchange.access import access_count
from exchange.db import bundles_table
from tests.api_helpers import Api, open_api, wrap
from tests.test_settlement_index import PASSPORT, _uuid, consent_bundle, settlement_bundle
from tests.test_settlement_search import PAY, recipient, submit

ASYNC = {"Prefer": "respond-async"}


@dataclass(frozen=True)
class Patient:
    name: str
    hospital: str
    payer: str
    consents_to: str | None
    amount: str

    @property
    def ident(self) -> tuple[str, str]:
        return (PASSPORT, f"PP-{self.name}")

    def markers(self) -> list[bytes]:
        """Bytes only this patient's data holds: identifier, amount lexeme, reference."""
        ref = _uuid(f"patient:{self.ident}").encode()
        return [self.ident[1].encode(), self.amount.encode(), ref]


PATIENTS = (
    Patient("KIM", "hospital-a", "insurer-a", "insurer-a", "1111.10"),
    Patient("LEE", "hospital-a", "insurer-b", "insurer-b", "2222.20"),
    Patient("PAK", "hospital-a", "insurer-a", None, "3333.30"),  # no consent on record
    Patient("ZED", "hospital-b", "insurer-a", "insurer-a", "4444.40"),
)
ACTORS = ("hospital-a", "hospital-b", "insurer-a", "insurer-b", "auditor", "admin")


def entitled(actor: str) -> set[str]:
    """The patients whose data an actor may ever receive."""
    if actor.startswith("hospital"):
        return {p.name for p in PATIENTS if p.hospital == actor}
    if actor.startswith("insurer"):
        return {p.name for p in PATIENTS if p.payer == actor and p.consents_to == actor}
    if actor == "admin":
        return {p.name for p in PATIENTS}  # reads stored Bundles (operations), no settlement pull
    return set()  # the auditor


def record_bundle(p: Patient) -> bytes:
    patient = json.dumps(
        {"resourceType": "Patient", "identifier": [{"system": p.ident[0], "value": p.ident[1]}]}
    ).encode()
    obs = (
        '{"resourceType":"Observation","status":"final","code":{"coding":[{"system":'
        '"http://loinc.org","code":"8480-6"}]},"subject":{"reference":"'
        + _uuid(f"patient:{p.ident}")
        + '"},"effectiveDateTime":"2026-03-02T08:20:00Z","valueQuantity":{"value":'
        + p.amount
        + ',"unit":"mm[Hg]"}}'
    ).encode()
    body = wrap([patient, obs])
    # wrap numbers its fullUrls; the Observation must point at the Patient's.
    return body.replace(b"urn:uuid:00000000-0000-0000-0000-000000000001",
                        _uuid(f"patient:{p.ident}").encode(), 1)  # fmt: skip


@dataclass
class World:
    api: Api
    headers: dict[str, dict[str, str]]
    bundle_ids: list[str]


@contextmanager
def built_world(data: Path, db_url: str | None = None) -> Iterator[World]:
    """Two hospitals, two insurers, an auditor and an admin; four patients (PATIENTS)."""
    with open_api(data, db_url) as api:
        headers = {
            "hospital-a": api.credential("hospital", "hospital-a"),
            "hospital-b": api.credential("hospital", "hospital-b"),
            "auditor": api.credential("auditor", None),
            "admin": api.credential("admin", None),
        }
        for org in ("insurer-a", "insurer-b"):
            recipient(api, org)
            headers[org] = {**api.credential("insurer", org), **PAY}
        for p in PATIENTS:
            h = headers[p.hospital]
            submit(api, settlement_bundle(p.ident, p.payer, amount=p.amount, tag=p.name), h)
            submit(api, record_bundle(p), h)
            if p.consents_to is not None:
                submit(api, consent_bundle(p.ident, p.consents_to), h)
        with api.services.engine.connect() as conn:
            ids = [r[0] for r in conn.execute(select(bundles_table.c.id))]
        yield World(api, headers, ids)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with built_world(tmp_path / "data") as w:
        yield w


@pytest.fixture
def world_any_db(tmp_path: Path, db_url: str) -> Iterator[World]:
    with built_world(tmp_path / "data", db_url) as w:
        yield w


Probe = Callable[[World, str], list[Any]]


def _get(w: World, actor: str, path: str, **params: Any) -> Any:
    return w.api.client.get(path, params=params, headers=w.headers[actor])


def _per_bundle(suffix: str) -> Probe:
    def probe(w: World, actor: str) -> list[Any]:
        return [_get(w, actor, f"/fhir/Bundle/{b}{suffix}") for b in w.bundle_ids]

    return probe


def _per_patient(path: str, param: str, split: bool = False) -> Probe:
    def probe(w: World, actor: str) -> list[Any]:
        out = []
        for p in PATIENTS:
            if split:
                out.append(_get(w, actor, path.format(value=p.ident[1]), system=p.ident[0]))
            else:
                out.append(_get(w, actor, path, **{param: f"{p.ident[0]}|{p.ident[1]}"}))
        if not split and param == "patient.identifier" and actor.startswith("hospital"):
            out.append(_get(w, actor, path))  # a hospital may search without a patient
        return out

    return probe


def _export(w: World, actor: str) -> list[Any]:
    started = w.api.client.get("/fhir/$export", headers={**w.headers[actor], **ASYNC})
    out = [started]
    if started.status_code != 202:
        return out
    status = urlsplit(started.headers["Content-Location"]).path
    deadline = time.monotonic() + 20
    while (answer := w.api.client.get(status, headers=w.headers[actor])).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    out.append(answer)
    for item in answer.json()["output"]:
        url = urlsplit(item["url"]).path
        out.append(w.api.client.get(url, headers=w.headers[actor]))
        # Nobody else may poll or download it.
        for other in ACTORS:
            if other != actor:
                for path in (status, url):
                    stranger = w.api.client.get(path, headers=w.headers[other])
                    assert stranger.status_code in (403, 404), (other, path)
                    out.append(stranger)
    return out


def _no_probe_needed(w: World, actor: str) -> list[Any]:
    return []


def _plain_get(path: str, **params: Any) -> Probe:
    def probe(w: World, actor: str) -> list[Any]:
        return [_get(w, actor, path, **params)]

    return probe


SETTLEMENT_SEARCHES = {
    f"/fhir/{t}": _per_patient(f"/fhir/{t}", "patient.identifier")
    for t in ("Claim", "ClaimResponse", "Invoice", "ExplanationOfBenefit", "Coverage",
              "DocumentReference")
}  # fmt: skip

# (path, method) -> how to probe it as one actor. Every route of the app must be here.
ROUTES: dict[tuple[str, str], Probe] = {
    ("/fhir/Bundle", "post"): _no_probe_needed,  # answers the submitter with its own bytes
    ("/fhir/Bundle/{bundle_id}", "get"): _per_bundle(""),
    ("/fhir/Bundle/{bundle_id}/_history/{version}", "get"): _per_bundle("/_history/1"),
    ("/fhir/Bundle/{bundle_id}/$hl7v2", "get"): _per_bundle("/$hl7v2"),
    ("/fhir/Patient/$summary", "get"): _per_patient("/fhir/Patient/$summary", "identifier"),
    ("/v1/patients/{value}/disclosures", "get"): _per_patient(
        "/v1/patients/{value}/disclosures", "system", split=True
    ),
    **{(path, "get"): probe for path, probe in SETTLEMENT_SEARCHES.items()},
    ("/fhir/$export", "get"): _export,
    # Job URLs: probed inside _export (owner and strangers).
    ("/fhir/$export-status/{job_id}", "get"): _no_probe_needed,
    ("/fhir/$export-status/{job_id}", "delete"): _no_probe_needed,
    ("/fhir/$export-status/{job_id}/{file_name}", "get"): _no_probe_needed,
    # No patient data: probed all the same.
    ("/fhir/metadata", "get"): _plain_get("/fhir/metadata"),
    ("/fhir/Organization", "get"): _plain_get("/fhir/Organization"),
    ("/fhir/Organization/{org}", "get"): _plain_get("/fhir/Organization/hospital-a"),
    ("/v1/trace", "get"): _plain_get("/v1/trace", gtin="09506000134352"),
    # The regulator's export (tests/test_rwd_export_api.py); none of these actors may use it.
    ("/v1/trace/rwd-export", "get"): _plain_get("/v1/trace/rwd-export", gtin="09506000134352"),
    # Aggregates over an institution's Bundles (counts and ratios, no patient named).
    ("/fhir/MeasureReport", "get"): _plain_get(
        "/fhir/MeasureReport", subject="Organization/hospital-a", period="2026"
    ),
    ("/fhir/VerificationResult", "get"): _plain_get(
        "/fhir/VerificationResult", target="Organization/hospital-a"
    ),
    ("/v1/log/checkpoint", "get"): _plain_get("/v1/log/checkpoint"),
    ("/v1/log/key", "get"): _plain_get("/v1/log/key"),
    ("/v1/log/keys", "get"): _plain_get("/v1/log/keys"),
    ("/v1/log/entries", "get"): _plain_get("/v1/log/entries", start=0, end=40),
    ("/v1/log/proof/inclusion", "get"): _plain_get("/v1/log/proof/inclusion", index=0, size=2),
    ("/v1/log/proof/consistency", "get"): _plain_get("/v1/log/proof/consistency", size1=1, size2=2),
    ("/v1/log/entries/{index}/receipt", "get"): _plain_get("/v1/log/entries/0/receipt"),
    ("/.well-known/smart-configuration", "get"): _plain_get("/.well-known/smart-configuration"),
    ("/health/live", "get"): _plain_get("/health/live"),
    ("/health/ready", "get"): _plain_get("/health/ready"),
    ("/auth/token", "post"): _no_probe_needed,  # takes a signed assertion, returns a token
}


def test_every_route_is_classified(world: World) -> None:
    doc = world.api.client.get("/openapi.json").json()
    routes = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    unclassified = sorted(routes - set(ROUTES))
    assert not unclassified, (
        f"classify these routes in {Path(__file__).name} (patient data or not): {unclassified}"
    )


def test_no_actor_sees_a_patient_it_is_not_entitled_to(world: World) -> None:
    doc = world.api.client.get("/openapi.json").json()
    present = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    seen: dict[str, set[str]] = {a: set() for a in ACTORS}
    for route, probe in ROUTES.items():
        if route not in present:
            continue  # a route this build does not have (classified for when it does)
        for actor in ACTORS:
            for answer in probe(world, actor):
                assert answer.status_code < 500, (route, actor, answer.text)
                # A searchset's links echo the asker's own query, which discloses nothing.
                content = re.sub(rb'"link":\[[^\]]*\]', b"", answer.content)
                for p in PATIENTS:
                    if any(m in content for m in p.markers()):
                        assert p.name in entitled(actor), (route, actor, p.name, answer.text)
                        seen[actor].add(p.name)
    # The probes reach real data: each actor got all it is entitled to somewhere.
    for actor in ACTORS:
        assert seen[actor] == entitled(actor), (actor, seen[actor])


# --- one access entry per insurer request (done-when 4) ---------------------------------------


def _insurer_request(w: World, rng: random.Random) -> Any:
    """One random insurer request that reaches a patient-data operation."""
    org = rng.choice(["insurer-a", "insurer-b"])
    headers = dict(w.headers[org])
    purpose = rng.choice(["HPAYMT", "HPAYMT", "COVERAGE", "TREAT", None])
    if purpose is None:
        headers.pop("X-Purpose-Of-Use")
    else:
        headers["X-Purpose-Of-Use"] = purpose
    kind = rng.choice(["search", "search", "search", "unnamed", "bad-date", "export"])
    if kind == "export":
        return w.api.client.get("/fhir/$export", headers={**headers, **ASYNC})
    rtype = rng.choice(["Claim", "Invoice", "Coverage", "ExplanationOfBenefit"])
    p = rng.choice(PATIENTS)
    params: dict[str, Any] = {"patient.identifier": f"{p.ident[0]}|{p.ident[1]}"}
    if kind == "unnamed":
        params = {}
    if kind == "bad-date":
        params["_lastUpdated"] = "ge2026-02-30"
    if rng.random() < 0.3:
        params["_count"] = rng.randint(1, 3)
    return w.api.client.get(f"/fhir/{rtype}", params=params, headers=headers)


@pytest.mark.parametrize("seed", [11, 29])
def test_each_insurer_request_appends_exactly_one_access_entry(
    world_any_db: World, seed: int
) -> None:
    world = world_any_db
    rng = random.Random(seed)
    engine = world.api.services.engine
    start_count, start_size = access_count(engine), world.api.log_size()
    statuses = []
    n = 30
    for _ in range(n):
        answer = _insurer_request(world, rng)
        assert answer.status_code in (200, 202, 400, 403), answer.text
        statuses.append(answer.status_code)
    # Export workers append nothing themselves: the kick-off was the one entry.
    assert access_count(engine) == start_count + n
    assert world.api.log_size() == start_size + n
    assert {200, 400, 403} <= set(statuses)  # allowed and refused requests were both made


def test_access_entries_hold_no_patient_data(world: World) -> None:
    for actor in ("insurer-a", "insurer-b"):
        for p in PATIENTS:
            _get(
                world, actor, "/fhir/Claim", **{"patient.identifier": f"{p.ident[0]}|{p.ident[1]}"}
            )
    entries = world.api.client.get("/v1/log/entries", params={"start": 0, "end": 100}).text
    from exchange.access import access_table

    with world.api.services.engine.connect() as conn:
        stored = b"".join(bytes(r.data) for r in conn.execute(access_table.select()))
    for p in PATIENTS:
        for marker in p.markers():
            assert marker not in stored and marker.decode() not in entries
