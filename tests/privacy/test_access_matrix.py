"""Who may call which route with which token scope, and who sees whose patient data.

The routes come from the FastAPI app itself: every route it serves, in the OpenAPI document
or not. Each declares its access rule, a RoleGuard with its roles and the SMART scope an
access token needs (exchange.auth.require_role), or @public; a route added without one fails
test_every_route_declares_an_access_rule. The other tests hold the rules to what the app does:
other roles are refused, tokens without the scope are refused, each role may be granted
exactly the scopes its routes need, docs/smart.md shows the same tables, no actor sees a
patient it is not entitled to, and every answer that carries a patient's data to anyone but
the hospital that submitted it is an access entry in that patient's accounting of disclosures.
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from jwt.algorithms import ECAlgorithm
from sqlalchemy import select

from exchange.bundles.read import bundle_by_id
from exchange.http.guards import EndpointScopes, RoleGuard, Scope
from exchange.identity import smart
from exchange.identity.clients import ROLES, register_client
from exchange.privacy.access import access_count
from exchange.store.tables import access_table, bundles_table
from tests.api_helpers import Api, observation_bundle, open_api, wrap
from tests.indexes.test_trace_api import GTIN, pack
from tests.paths import ROOT
from tests.settlement.test_rwd_export_api import REGULATOR
from tests.settlement.test_settlement_index import (
    PASSPORT,
    _uuid,
    consent_bundle,
    settlement_bundle,
)
from tests.settlement.test_settlement_search import PAY, recipient, submit

ASYNC = {"Prefer": "respond-async"}
RESEARCH = {"X-Purpose-Of-Use": "HRESCH"}
DOC = ROOT / "docs" / "smart.md"


# --- the access rules the app declares -----------------------------------------------------


@dataclass(frozen=True)
class Rule:
    roles: tuple[str, ...]  # empty: public
    scope: Scope | EndpointScopes | None

    @property
    def public(self) -> bool:
        return not self.roles


Route = tuple[str, str]  # (path, method)


def _guards(dependant: Any) -> list[RoleGuard]:
    found = []
    for dep in dependant.dependencies:
        if isinstance(dep.call, RoleGuard):
            found.append(dep.call)
        found.extend(_guards(dep))
    return found


def route_rules(app: FastAPI) -> dict[Route, Rule | None]:
    """Every (path, method) the app serves, with its declared rule (None: none declared)."""
    framework = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    rules: dict[Route, Rule | None] = {}
    for ctx in iter_route_contexts(app.routes):
        assert ctx.path is not None
        for method in sorted(ctx.methods or ()):
            if method == "HEAD":
                continue  # served with GET
            # As the OpenAPI schema names it: `{value:path}` is the parameter `{value}`.
            key = (re.sub(r"\{([^}:]+):[^}]+\}", r"{\1}", ctx.path), method.lower())
            dependant = getattr(ctx, "dependant", None)
            guards = _guards(dependant) if dependant is not None else []
            if ctx.path in framework:
                rules[key] = Rule((), None)  # FastAPI's own schema and docs pages
            elif len(guards) == 1:
                rules[key] = Rule(guards[0].roles, guards[0].scope)
            elif not guards and getattr(ctx.endpoint, "access_rule", None) == "public":
                rules[key] = Rule((), None)
            else:
                rules[key] = None
    return rules


# --- the world: two hospitals, two insurers, a regulator, an auditor, an admin ------------


@dataclass(frozen=True)
class Patient:
    name: str
    hospital: str
    payer: str
    consents_to: str | None
    amount: str
    research: bool = False  # consents to the regulator's research use (and has RWD)

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
    Patient("MOK", "hospital-a", "insurer-a", None, "5555.50", research=True),
)
MEDIATOR = "mediation-hainan"  # named by no patient's consent: receives nothing
ACTORS = ("hospital-a", "hospital-b", "insurer-a", "insurer-b", REGULATOR, MEDIATOR, "auditor",
          "admin")  # fmt: skip
# The actor whose credential stands for each role in the rule probes.
ROLE_ACTOR = {"hospital": "hospital-a", "insurer": "insurer-a", "regulator": REGULATOR,
              "mediator": MEDIATOR, "auditor": "auditor", "admin": "admin"}  # fmt: skip
ROLE_ORG = {"hospital": "hospital-a", "insurer": "insurer-a", "regulator": REGULATOR,
            "mediator": MEDIATOR}  # fmt: skip


def entitled(actor: str) -> set[str]:
    """The patients whose data an actor may ever receive."""
    if actor.startswith("hospital"):
        return {p.name for p in PATIENTS if p.hospital == actor}
    if actor.startswith("insurer"):
        return {p.name for p in PATIENTS if p.payer == actor and p.consents_to == actor}
    if actor == REGULATOR:
        return {p.name for p in PATIENTS if p.research}
    if actor == "admin":
        return {p.name for p in PATIENTS}  # reads stored Bundles (operations), no settlement pull
    return set()  # the auditor, and the mediator no consent names


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


def rwd_bundle(p: Patient, n: int) -> bytes:
    """The Lecheng RWD administration fixture, about this patient (as the hospital names them)."""
    text = pack("AB12C34", f"SER{n:06d}", 100 + n).decode()
    text = text.replace("http://hl7.org/fhir/sid/passport-RUS", p.ident[0])
    return text.replace("753108642", p.ident[1]).replace("BL2026110391", f"BL-{p.name}").encode()


@dataclass(frozen=True)
class Seen:
    """One request of a probe: who asked, the answer, and the access entries it appended."""

    route: Route
    actor: str
    response: Any
    entries: list[Access]


@dataclass
class World:
    api: Api
    headers: dict[str, dict[str, str]]
    client_ids: dict[str, str]
    bundle_ids: list[str]
    subjects: dict[str, set[bytes]]  # patient -> the subjects of their Bundles' entries
    smart_clients: dict[str, tuple[str, Any]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    route: Route = ("", "")

    def get(self, actor: str, path: str, headers: dict[str, str] | None = None, **p: Any) -> Any:
        """A GET as `actor`, kept with the access entries it appended."""
        return self.call("get", actor, path, headers=headers, params=p)

    def call(self, method: str, actor: str, path: str, **kw: Any) -> Any:
        size = self.api.log_size()
        headers = {**self.headers[actor], **(kw.pop("headers", None) or {})}
        answer = self.api.client.request(method, path, headers=headers, **kw)
        self.seen.append(Seen(self.route, actor, answer, entries_since(self.api, size)))
        return answer

    def token(self, role: str, scopes: list[str], purpose: str | None = None) -> dict[str, str]:
        """Authorization headers with a real SMART access token of `role` for `scopes`."""
        client_id, key = self.smart_clients[role]
        now = int(time.time())
        claims = {"iss": client_id, "sub": client_id, "aud": "http://testserver/auth/token",
                  "exp": now + 240, "iat": now, "jti": str(uuid.uuid4())}  # fmt: skip
        if purpose is not None:
            claims["purpose_of_use"] = purpose
        assertion = jwt.encode(claims, key, algorithm="ES384", headers={"kid": "k1"})
        answer = self.api.client.post(
            "/auth/token",
            data={"grant_type": "client_credentials", "client_assertion_type":
                  smart.ASSERTION_TYPE, "client_assertion": assertion, "scope": " ".join(scopes)},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        granted = answer.json()["scope"].split()
        assert sorted(granted) == sorted(scopes), (scopes, granted)
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}


@dataclass(frozen=True)
class Access:
    index: int
    client_id: str
    action: str
    outcome: str
    subject: bytes | None


def entries_since(api: Api, size: int) -> list[Access]:
    t = access_table.c
    q = select(t.idx, t.client_id, t.action, t.outcome, t.subject).where(t.idx >= size)
    with api.services.engine.connect() as conn:
        rows = conn.execute(q).all()
    return [Access(i, c, a, o, None if s is None else bytes(s)) for i, c, a, o, s in rows]


def _register_smart(api: Api, role: str) -> tuple[str, Any]:
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = {**json.loads(ECAlgorithm.to_jwk(key.public_key())), "kid": "k1"}
    jwks = json.dumps({"keys": [jwk]})
    client, _ = register_client(api.services.engine, role, role, ROLE_ORG.get(role), jwks)
    return client.client_id, key


@contextmanager
def built_world(data: Path, db_url: str | None = None) -> Iterator[World]:
    """The actors of ACTORS and the patients of PATIENTS."""
    with open_api(data, db_url) as api:
        headers: dict[str, dict[str, str]] = {}
        client_ids: dict[str, str] = {}
        for actor, role, org in (
            ("hospital-a", "hospital", "hospital-a"), ("hospital-b", "hospital", "hospital-b"),
            ("insurer-a", "insurer", "insurer-a"), ("insurer-b", "insurer", "insurer-b"),
            (REGULATOR, "regulator", REGULATOR), (MEDIATOR, "mediator", MEDIATOR),
            ("auditor", "auditor", None), ("admin", "admin", None),
        ):  # fmt: skip
            client, token = register_client(api.services.engine, actor, role, org)
            headers[actor] = {"Authorization": f"Bearer {token}"}
            client_ids[actor] = client.client_id
        for org in ("insurer-a", "insurer-b"):
            recipient(api, org)
            headers[org].update(PAY)
        headers[REGULATOR].update(RESEARCH)
        for n, p in enumerate(PATIENTS):
            h = headers[p.hospital]
            submit(api, settlement_bundle(p.ident, p.payer, amount=p.amount, tag=p.name), h)
            submit(api, record_bundle(p), h)
            if p.consents_to is not None:
                submit(api, consent_bundle(p.ident, p.consents_to), h)
            if p.research:
                submit(api, rwd_bundle(p, n), h)
                submit(api, consent_bundle(p.ident, REGULATOR, purpose="HRESCH"), h)
        engine = api.services.engine
        with engine.connect() as conn:
            rows = conn.execute(select(bundles_table.c.id, bundles_table.c.subject)).all()
        subjects: dict[str, set[bytes]] = {p.name: set() for p in PATIENTS}
        for bundle_id, subject in rows:
            stored = bundle_by_id(api.services.vault, bundle_id)
            assert stored is not None and subject is not None
            for p in PATIENTS:
                if any(m in stored.data for m in p.markers()):
                    subjects[p.name].add(bytes(subject))
        world = World(api, headers, client_ids, [r[0] for r in rows], subjects)
        world.smart_clients = {role: _register_smart(api, role) for role in ROLES}
        yield world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with built_world(tmp_path_factory.mktemp("matrix") / "data") as w:
        yield w


@pytest.fixture
def world_any_db(tmp_path: Path, db_url: str) -> Iterator[World]:
    with built_world(tmp_path / "data", db_url) as w:
        yield w


# --- every route declares its rule ---------------------------------------------------------


def test_every_route_declares_an_access_rule(world: World) -> None:
    rules = route_rules(world.api.client.app)
    undeclared = sorted(route for route, rule in rules.items() if rule is None)
    assert not undeclared, (
        "give these routes a RoleGuard (exchange.auth.require_role with roles and scope) or "
        f"declare them @public: {undeclared}"
    )
    assert len(rules) >= 30  # the app's routes were found, not an empty list


# Sample path parameters: any syntactically valid value; the guard answers before the handler.
PATH_SAMPLES = {
    "bundle_id": "no-such-bundle",
    "version": "1",
    "job_id": str(uuid.UUID(int=0)),
    "file_name": "1.ndjson",
    "value": "PP-NOBODY",
    "org": "hospital-a",
    "index": "0",
    "path": "0/000.p/1",
    "link_id": "A" * 43,
    "ticket": "AAAA",
}


def _filled(path: str) -> str:
    def sample(m: re.Match[str]) -> str:
        if m.group(1) not in PATH_SAMPLES:
            pytest.fail(f"add a sample value of path parameter {m.group(1)!r} to PATH_SAMPLES")
        return PATH_SAMPLES[m.group(1)]

    return re.sub(r"\{([^}]+)\}", sample, path)


def _diagnostics(answer: Any) -> str:
    try:
        return " ".join(i.get("diagnostics", "") for i in answer.json().get("issue", []))
    except ValueError:
        return ""


def _role_refused(answer: Any) -> bool:
    return answer.status_code == 403 and "may not do this" in _diagnostics(answer)


def _scope_refused(answer: Any, scope: str | None = None) -> bool:
    text = _diagnostics(answer)
    named = scope is None or f"lacks the scope {scope} " in text
    return answer.status_code == 403 and "lacks the scope" in text and named


def _guarded(world: World) -> dict[Route, Rule]:
    rules = route_rules(world.api.client.app)
    return {route: rule for route, rule in rules.items() if rule is not None and not rule.public}


def test_roles_are_enforced_as_declared(world: World) -> None:
    client = world.api.client
    for (path, method), rule in route_rules(client.app).items():
        assert rule is not None
        url = _filled(path)
        anonymous = client.request(method, url)
        if rule.public:
            assert anonymous.status_code not in (401, 403), (path, method, anonymous.text)
            continue
        assert anonymous.status_code == 401, (path, method, anonymous.text)
        for role in ROLES:
            size = world.api.log_size()
            answer = client.request(method, url, headers=world.headers[ROLE_ACTOR[role]])
            if role in rule.roles:
                assert answer.status_code != 401 and not _role_refused(answer), (
                    path, method, role, answer.text,
                )  # fmt: skip
            else:
                assert _role_refused(answer), (path, method, role, answer.text)
                assert world.api.log_size() == size  # a refused role appends nothing


# What the regulator may read, named here rather than read from the app: the registry and its
# attestations, quality indicators, a product's traceability (recall counts, EPCIS events, the
# RWD export under research consent, a Bundle's ICSR), and the public routes. Every other route
# refuses it.
REGULATOR_READS = {
    ("/fhir/Organization", "get"),
    ("/fhir/Organization/{org}", "get"),
    ("/fhir/VerificationResult", "get"),
    ("/fhir/MeasureReport", "get"),
    ("/v1/trace", "get"),
    ("/v1/trace/rwd-export", "get"),
    ("/epcis/events", "get"),
    ("/fhir/Bundle/{bundle_id}/$e2b", "get"),
}


def test_the_regulator_reads_exactly_its_routes(world: World) -> None:
    """Each route the app serves, asked by the regulator: the guarded ones of REGULATOR_READS
    pass the role check, every other guarded route refuses it and appends nothing."""
    client = world.api.client
    rules = route_rules(client.app)
    guarded = {route for route, rule in rules.items() if rule is not None and not rule.public}
    assert REGULATOR_READS <= guarded
    for path, method in sorted(guarded):
        size = world.api.log_size()
        answer = client.request(method, _filled(path), headers=world.headers[REGULATOR])
        if (path, method) in REGULATOR_READS:
            assert answer.status_code != 401 and not _role_refused(answer), (path, answer.text)
        else:
            assert _role_refused(answer), (path, method, answer.text)
            assert world.api.log_size() == size


def _without(role: str, scope: Scope) -> list[str]:
    """Every scope `role` may be granted except `scope`."""
    grants = dict(smart.ROLE_SCOPES[role])
    if "*" in grants:  # the admin: named types, since its wildcard holds every scope
        perms = grants.pop("*")
        other = "Bundle" if scope.resource_type == "Organization" else "Organization"
        grants = {scope.resource_type: perms, other: perms}
    out = []
    for rtype, perms in sorted(grants.items()):
        left = perms.replace(scope.permission, "") if rtype == scope.resource_type else perms
        if left:
            out.append(f"system/{rtype}.{left}")
    return out


def test_static_scopes_are_enforced_as_declared(world: World) -> None:
    """A token without the route's scope is refused (403 naming it); one with it passes."""
    client = world.api.client
    checked = 0
    for (path, method), rule in _guarded(world).items():
        if not isinstance(rule.scope, Scope):
            continue
        url, needed = _filled(path), str(rule.scope)
        for role in rule.roles:
            lacking = _without(role, rule.scope)
            if lacking:  # a role granted nothing else has no token without the scope
                answer = client.request(method, url, headers=world.token(role, lacking))
                assert _scope_refused(answer, needed), (path, role, answer.text)
            headers = world.token(role, [needed])
            if role == "regulator":
                headers.update(RESEARCH)
            answer = client.request(method, url, headers=headers)
            assert answer.status_code != 401 and not _role_refused(answer), (path, role)
            assert not _scope_refused(answer), (path, role, answer.text)
            checked += 1
    assert checked >= 10


# Routes whose scope depends on the request: each has a probe here, run with real tokens.
EndpointProbe = Callable[[World], None]


def _submit_probe(w: World) -> None:
    client = w.api.client
    post = {"Content-Type": "application/fhir+json"}
    answer = client.post("/fhir/Bundle", content=observation_bundle(),
                         headers={**w.token("hospital", ["system/Bundle.r"]), **post})  # fmt: skip
    assert _scope_refused(answer, "system/Bundle.c"), answer.text
    create = {**w.token("hospital", ["system/Bundle.c"]), **post}
    answer = client.post("/fhir/Bundle", content=observation_bundle(identifier="urn:x:1"),
                         headers=create)  # fmt: skip
    assert answer.status_code == 201, answer.text
    again = observation_bundle("130.00", identifier="urn:x:1")
    answer = client.post("/fhir/Bundle", content=again, headers={**create, "If-Match": 'W/"1"'})
    assert _scope_refused(answer, "system/Bundle.u"), answer.text
    update = {**w.token("hospital", ["system/Bundle.u"]), **post, "If-Match": 'W/"1"'}
    assert client.post("/fhir/Bundle", content=again, headers=update).status_code == 201


def _search_probe(rtype: str) -> EndpointProbe:
    def probe(w: World) -> None:
        kim = next(p for p in PATIENTS if p.name == "KIM")
        params = {"patient.identifier": f"{kim.ident[0]}|{kim.ident[1]}"}
        for role in ("hospital", "insurer"):
            scope = Scope(rtype, "s")
            extra = PAY if role == "insurer" else {}
            lacking = {**w.token(role, _without(role, scope)), **extra}
            answer = w.api.client.get(f"/fhir/{rtype}", params=params, headers=lacking)
            assert _scope_refused(answer, str(scope)), (role, answer.text)
            having = {**w.token(role, [str(scope)]), **extra}
            answer = w.api.client.get(f"/fhir/{rtype}", params=params, headers=having)
            assert answer.status_code == 200, (role, answer.text)

    return probe


def _wait(w: World, url: str, headers: dict[str, str]) -> Any:
    deadline = time.monotonic() + 20
    while (answer := w.api.client.get(url, headers=headers)).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return answer


def _export_probe(w: World) -> None:
    """Kick-off, status, file and delete each need system/<Type>.r of the types involved."""
    client = w.api.client
    for role in ("hospital", "insurer"):
        extra = {**ASYNC, **(PAY if role == "insurer" else {})}
        claim = Scope("Claim", "r")
        lacking = {**w.token(role, _without(role, claim)), **extra}
        having = {**w.token(role, [str(claim)]), **extra}
        refused = client.get("/fhir/$export", params={"_type": "Claim"}, headers=lacking)
        assert _scope_refused(refused, "system/Claim.r"), refused.text
        started = client.get("/fhir/$export", params={"_type": "Claim"}, headers=having)
        assert started.status_code == 202, started.text
        status = urlsplit(started.headers["Content-Location"]).path
        assert _scope_refused(client.get(status, headers=lacking), "system/Claim.r")
        done = _wait(w, status, having)
        assert done.status_code == 200, done.text
        for item in done.json()["output"]:
            url = urlsplit(item["url"]).path
            assert _scope_refused(client.get(url, headers=lacking), "system/Claim.r")
            assert client.get(url, headers=having).status_code == 200
        assert _scope_refused(client.delete(status, headers=lacking), "system/Claim.r")
        assert client.delete(status, headers=having).status_code == 202


ENDPOINT_SCOPE_PROBES: dict[Route, EndpointProbe] = {
    ("/fhir/Bundle", "post"): _submit_probe,
    **{(f"/fhir/{t}", "get"): _search_probe(t) for t in smart._SETTLEMENT},
    ("/fhir/$export", "get"): _export_probe,
    # Probed within _export_probe, on the job it started.
    ("/fhir/$export-status/{job_id}", "get"): _export_probe,
    ("/fhir/$export-status/{job_id}", "delete"): _export_probe,
    ("/fhir/$export-status/{job_id}/{file_name}", "get"): _export_probe,
}


def test_request_dependent_scopes_are_enforced(world: World) -> None:
    dynamic = {r for r, rule in _guarded(world).items() if isinstance(rule.scope, EndpointScopes)}
    assert dynamic == set(ENDPOINT_SCOPE_PROBES), (
        "each route whose endpoint checks its own scopes needs a probe in ENDPOINT_SCOPE_PROBES"
    )
    for probe in dict.fromkeys(ENDPOINT_SCOPE_PROBES.values()):
        probe(world)


def _needed(world: World) -> dict[str, set[tuple[str, str]]]:
    needs: dict[str, set[tuple[str, str]]] = {role: set() for role in ROLES}
    for rule in _guarded(world).values():
        assert rule.scope is not None
        scopes = rule.scope.scopes if isinstance(rule.scope, EndpointScopes) else (rule.scope,)
        for role in rule.roles:
            needs[role].update((s.resource_type, s.permission) for s in scopes)
    return needs


def test_each_role_may_be_granted_exactly_what_its_routes_need(world: World) -> None:
    assert set(smart.ROLE_SCOPES) == set(ROLES)
    for role, needs in _needed(world).items():
        grants = smart.ROLE_SCOPES[role]
        if "*" in grants:  # the admin: every type, the permissions its routes use
            assert set(grants) == {"*"}
            assert {letter for _, letter in needs} == set(grants["*"]), role
            continue
        granted = {(t, letter) for t, perms in grants.items() for letter in perms}
        assert granted == needs, (role, sorted(granted ^ needs))


# --- docs/smart.md shows the same two tables ------------------------------------------------


def _scope_cell(rule: Rule) -> str:
    if rule.public:
        return "none"
    if isinstance(rule.scope, EndpointScopes):
        return rule.scope.when
    return f"`{rule.scope}`"


def expected_route_rows(app: FastAPI) -> list[str]:
    framework = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    rows = []
    for (path, method), rule in sorted(route_rules(app).items()):
        if path in framework:
            continue
        assert rule is not None
        roles = ", ".join(rule.roles) if rule.roles else "public"
        rows.append(f"| `{method.upper()} {path}` | {roles} | {_scope_cell(rule)} |")
    return rows


def expected_grant_rows() -> list[str]:
    return [
        f"| {role} | "
        + ", ".join(f"`system/{t}.{p}`" for t, p in sorted(smart.ROLE_SCOPES[role].items()))
        + " |"
        for role in ROLES
    ]


def _table_rows(text: str, heading: str) -> list[str]:
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return rows[1:]  # after the header row


def test_the_scope_tables_in_docs_match_the_app(world: World) -> None:
    text = DOC.read_text("utf-8")
    assert _table_rows(text, "## Scopes each role may be granted") == expected_grant_rows()
    assert _table_rows(text, "## Route access rules") == expected_route_rows(world.api.client.app)


# --- who sees whose data, and the accounting of every disclosure ---------------------------


Probe = Callable[[World, str], None]


def _per_bundle(suffix: str, prefix: str = "/fhir/Bundle") -> Probe:
    def probe(w: World, actor: str) -> None:
        for b in w.bundle_ids:
            w.get(actor, f"{prefix}/{b}{suffix}")

    return probe


def _per_patient(path: str, param: str, split: bool = False) -> Probe:
    def probe(w: World, actor: str) -> None:
        for p in PATIENTS:
            if split:
                w.get(actor, path.format(value=p.ident[1]), system=p.ident[0])
            else:
                w.get(actor, path, **{param: f"{p.ident[0]}|{p.ident[1]}"})
        if not split and param == "patient.identifier" and actor.startswith("hospital"):
            w.get(actor, path)  # a hospital may search without a patient

    return probe


def _export(w: World, actor: str) -> None:
    started = w.get(actor, "/fhir/$export", headers=ASYNC)
    if started.status_code != 202:
        return
    status = urlsplit(started.headers["Content-Location"]).path
    deadline = time.monotonic() + 20
    while (answer := w.get(actor, status)).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for item in answer.json()["output"]:
        url = urlsplit(item["url"]).path
        w.get(actor, url)
        # Nobody else may poll or download it.
        for other in ACTORS:
            if other != actor:
                for path in (status, url):
                    assert w.get(other, path).status_code in (403, 404), (other, path)


def _case_package(w: World, actor: str) -> None:
    for p in PATIENTS:
        body = {"patient": f"{p.ident[0]}|{p.ident[1]}", "org": p.hospital}
        w.call("post", actor, "/v1/cases", json=body)


def _no_probe_needed(w: World, actor: str) -> None:
    pass


def _plain_get(path: str, **params: Any) -> Probe:
    def probe(w: World, actor: str) -> None:
        w.get(actor, path, **params)

    return probe


def _verification_results(w: World, actor: str) -> None:
    for target in ("Organization/hospital-a", "Practitioner/dr-wang"):
        w.get(actor, "/fhir/VerificationResult", target=target)


def _tiles(w: World, actor: str) -> None:
    for path in ("tile/0/000.p/2", "tile/entries/000.p/2"):
        assert w.get(actor, f"/tlog/{path}").status_code == 200, path


def _shl_links(w: World, actor: str) -> None:
    """A link only to the hospital's own patient; these patients have no name, which an IPS
    needs, so even that is refused (422, naming it) and nothing is shared."""
    expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    for p in PATIENTS:
        body = {"patient": f"{p.ident[0]}|{p.ident[1]}", "expires": expires}
        made = w.call("post", actor, "/v1/shl", json=body)
        want = 422 if p.hospital == actor else 404 if actor.startswith("hospital") else 403
        assert made.status_code == want, (actor, p.name, made.text)


SETTLEMENT_SEARCHES = {
    f"/fhir/{t}": _per_patient(f"/fhir/{t}", "patient.identifier") for t in smart._SETTLEMENT
}

# (path, method) -> how to probe it as one actor. Every route of the app must be here.
DATA_PROBES: dict[Route, Probe] = {
    ("/fhir/Bundle", "post"): _no_probe_needed,  # answers the submitter with its own bytes
    ("/fhir/Bundle/{bundle_id}", "get"): _per_bundle(""),
    ("/fhir/Bundle/{bundle_id}/_history/{version}", "get"): _per_bundle("/_history/1"),
    ("/fhir/Bundle/{bundle_id}/$hl7v2", "get"): _per_bundle("/$hl7v2"),
    ("/fhir/Bundle/{bundle_id}/$e2b", "get"): _per_bundle("/$e2b"),
    # Queues a delivery (no recipient has an endpoint here: refused); answers no patient data.
    ("/fhir/Bundle/{bundle_id}/$deliver", "post"): _no_probe_needed,
    # The outbox: ids and statuses, no patient data.
    ("/v1/deliveries", "get"): _plain_get("/v1/deliveries"),
    ("/fhir/Binary/{bundle_id}", "get"): _per_bundle("", "/fhir/Binary"),
    ("/fhir/Binary/{bundle_id}/_history/{version}", "get"): _per_bundle(
        "/_history/1", "/fhir/Binary"
    ),
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
    ("/v1/trace/rwd-export", "get"): _plain_get("/v1/trace/rwd-export", gtin=GTIN),
    ("/v1/cases", "post"): _case_package,
    # SMART Health Links: whoever asks may make links to its own patients only; what a
    # link's public routes answer is encrypted under the link's key, so these probes cannot
    # read it: tests/sharing/test_shl_api.py opens the files and checks each access entry.
    ("/v1/shl", "post"): _shl_links,
    ("/v1/shl/{link_id}", "delete"): _no_probe_needed,
    ("/v1/shl/{link_id}/qr.png", "get"): _no_probe_needed,
    ("/v1/shl/{link_id}/manifest", "post"): _no_probe_needed,
    ("/v1/shl/{link_id}/files/{ticket}", "get"): _no_probe_needed,
    ("/v1/shl/{link_id}/file", "get"): _no_probe_needed,
    ("/shl/view", "get"): _plain_get("/shl/view"),
    # No patient data: probed all the same.
    ("/fhir/metadata", "get"): _plain_get("/fhir/metadata"),
    ("/fhir/Organization", "get"): _plain_get("/fhir/Organization"),
    ("/fhir/Organization/{org}", "get"): _plain_get("/fhir/Organization/hospital-a"),
    ("/v1/trace", "get"): _plain_get("/v1/trace", gtin=GTIN),
    # Dispensing events: packs, times and places (these Bundles dispense nothing).
    ("/epcis/events", "get"): _plain_get("/epcis/events"),
    # Aggregates over an institution's Bundles (counts and ratios, no patient named).
    ("/fhir/MeasureReport", "get"): _plain_get(
        "/fhir/MeasureReport", reporter="Organization/hospital-a", period="2026"
    ),
    # An institution's licence and accreditations, a practitioner's licences: no patient.
    ("/fhir/VerificationResult", "get"): _verification_results,
    ("/v1/log/checkpoint", "get"): _plain_get("/v1/log/checkpoint"),
    ("/v1/log/key", "get"): _plain_get("/v1/log/key"),
    ("/v1/log/keys", "get"): _plain_get("/v1/log/keys"),
    ("/v1/log/entries", "get"): _plain_get("/v1/log/entries", start=0, end=40),
    ("/v1/log/proof/inclusion", "get"): _plain_get("/v1/log/proof/inclusion", index=0, size=2),
    ("/v1/log/proof/consistency", "get"): _plain_get("/v1/log/proof/consistency", size1=1, size2=2),
    ("/v1/log/entries/{index}/receipt", "get"): _plain_get("/v1/log/entries/0/receipt"),
    ("/tlog/checkpoint", "get"): _plain_get("/tlog/checkpoint"),
    ("/tlog/tile/{path}", "get"): _tiles,
    ("/.well-known/smart-configuration", "get"): _plain_get("/.well-known/smart-configuration"),
    ("/fhir/.well-known/smart-configuration", "get"): _plain_get(
        "/fhir/.well-known/smart-configuration"
    ),
    ("/health/live", "get"): _plain_get("/health/live"),
    ("/health/ready", "get"): _plain_get("/health/ready"),
    ("/metrics", "get"): _plain_get("/metrics"),  # counts by route, status and kind
    ("/auth/token", "post"): _no_probe_needed,  # takes a signed assertion, returns a token
    # FastAPI's schema and documentation pages: the API's description, no data.
    ("/openapi.json", "get"): _plain_get("/openapi.json"),
    ("/docs", "get"): _no_probe_needed,
    ("/docs/oauth2-redirect", "get"): _no_probe_needed,
    ("/redoc", "get"): _no_probe_needed,
}


def test_every_route_has_a_data_probe(world: World) -> None:
    routes = set(route_rules(world.api.client.app))
    assert routes == set(DATA_PROBES), (
        f"probe these routes in {Path(__file__).name} (patient data or not): "
        f"{sorted(routes - set(DATA_PROBES))}; stale: {sorted(set(DATA_PROBES) - routes)}"
    )


@pytest.fixture(scope="module")
def probed(world: World) -> list[Seen]:
    """Every route probed as every actor, each request with the access entries it appended."""
    start = len(world.seen)
    for route, probe in DATA_PROBES.items():
        world.route = route
        for actor in ACTORS:
            probe(world, actor)
    return world.seen[start:]


def _patients_in(answer: Any) -> list[Patient]:
    # A searchset's links echo the asker's own query, which discloses nothing.
    content = re.sub(rb'"link":\[[^\]]*\]', b"", answer.content)
    return [p for p in PATIENTS if any(m in content for m in p.markers())]


def test_no_actor_sees_a_patient_it_is_not_entitled_to(probed: list[Seen]) -> None:
    seen: dict[str, set[str]] = {a: set() for a in ACTORS}
    for s in probed:
        assert s.response.status_code < 500, (s.route, s.actor, s.response.text)
        for p in _patients_in(s.response):
            assert p.name in entitled(s.actor), (s.route, s.actor, p.name, s.response.text)
            seen[s.actor].add(p.name)
    # The probes reach real data: each actor got all it is entitled to somewhere.
    for actor in ACTORS:
        assert seen[actor] == entitled(actor), (actor, seen[actor])


def test_every_disclosure_is_in_the_patients_accounting(world: World, probed: list[Seen]) -> None:
    """Patient data leaving for anyone but the hospital that submitted it is an access entry
    (outcome 0, this client) about that patient, appended by that request, and found by the
    patient's hospital at /v1/patients/{value}/disclosures."""
    expected: dict[str, set[int]] = {p.name: set() for p in PATIENTS}
    disclosures = 0
    for s in probed:
        for p in _patients_in(s.response):
            if s.actor == p.hospital:
                continue  # the hospital's own data, read back by it: a use, not a disclosure
            about = [
                e for e in s.entries
                if e.subject in world.subjects[p.name] and e.outcome == "0"
                and e.client_id == world.client_ids[s.actor]
            ]  # fmt: skip
            assert about, (s.route, s.actor, p.name, [(e.action, e.subject) for e in s.entries])
            expected[p.name].update(e.index for e in about)
            disclosures += 1
    assert disclosures >= 20
    for p in PATIENTS:
        answer = world.api.client.get(
            f"/v1/patients/{p.ident[1]}/disclosures",
            params={"system": p.ident[0]},
            headers=world.headers[p.hospital],
        )
        listed = {int(e["fullUrl"].rsplit(":", 1)[1]) for e in answer.json().get("entry", [])}
        assert expected[p.name] <= listed, (p.name, sorted(expected[p.name] - listed))


def test_a_patient_of_two_hospitals_is_in_both_accountings(tmp_path: Path) -> None:
    """An identifier can name a patient at two hospitals (two pseudonyms): an insurer's search
    that discloses both hospitals' resources is in each hospital's accounting of the patient."""
    twin = (PASSPORT, "PP-TWIN")
    with open_api(tmp_path / "data") as api:
        hospitals = {org: api.credential("hospital", org) for org in ("hospital-a", "hospital-b")}
        for n, h in enumerate(hospitals.values()):
            submit(api, settlement_bundle(twin, "insurer-a", amount=f"77{n}.00", tag=f"T{n}"), h)
            submit(api, consent_bundle(twin, "insurer-a"), h)
        recipient(api, "insurer-a")
        insurer = {**api.credential("insurer", "insurer-a"), **PAY}
        params = {"patient.identifier": f"{twin[0]}|{twin[1]}"}
        found = api.client.get("/fhir/Claim", params=params, headers=insurer)
        assert found.status_code == 200 and len(found.json()["entry"]) == 2, found.text
        for org, h in hospitals.items():
            accounting = api.client.get(
                f"/v1/patients/{twin[1]}/disclosures", params={"system": twin[0]}, headers=h
            ).json()
            events = [e["resource"] for e in accounting["entry"]]
            assert [(e["subtype"][0]["code"], e["outcome"]) for e in events] == [
                ("search-type", "0")
            ], org


# --- one access entry per insurer request ----------------------------------------------------


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
    # Each search names one patient; export workers append nothing themselves.
    assert access_count(engine) == start_count + n
    assert world.api.log_size() == start_size + n
    assert {200, 400, 403} <= set(statuses)  # allowed and refused requests were both made


def test_the_regulators_recall_answer_is_counts_per_institution(probed: list[Seen]) -> None:
    """The hospitals' recall answer lists their entries; the regulator's counts them per
    institution (MOK's RWD Bundle at hospital-a), names no entry and appends no access entry."""
    asked = {s.actor: s for s in probed if s.route == ("/v1/trace", "get")}
    answer = asked[REGULATOR].response
    assert answer.status_code == 200, answer.text
    assert answer.json()["institutions"] == [{"institution": "hospital-a", "entries": 1}]
    assert "entries" not in answer.json() and b"/fhir/Bundle/" not in answer.content
    assert asked[REGULATOR].entries == []
    assert len(asked["hospital-a"].response.json()["entries"]) == 1
    assert asked["hospital-b"].response.json()["entries"] == []


def test_access_entries_hold_no_patient_data(world: World, probed: list[Seen]) -> None:
    entries = world.api.client.get("/v1/log/entries", params={"start": 0, "end": 1000}).text
    with world.api.services.engine.connect() as conn:
        stored = b"".join(bytes(r.data) for r in conn.execute(access_table.select()))
    assert stored
    for p in PATIENTS:
        for marker in p.markers():
            assert marker not in stored and marker.decode() not in entries
