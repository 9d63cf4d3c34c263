"""GET /epcis/events: the EPCIS 2.0 REST query interface over real HTTP."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from adapters.epcis import dispensing_events, event_location, ledger_link
from adapters.epcis_query import parse_query
from exchange.privacy.access import access_count
from ledger.merkle import leaf_hash
from tests.adapters.test_epcis_query import EPCIS_DIR
from tests.api_helpers import open_api
from tests.indexes.test_trace_api import pack
from tests.indexes.test_trace_by_content import with_invoice

GTIN = "00312345678906"


@pytest.fixture(scope="module")
def validate() -> Any:
    """GS1's EPCIS 2.0 JSON Schema: the answer documents (EPCISQueryDocument) and the
    queries asked, as the EPCIS Query Language writes them."""
    if not (EPCIS_DIR / "JSON-Schema").is_dir():
        pytest.skip(f"public test vectors not present at {EPCIS_DIR}")
    from adapters.trace_schema import epcis_validator, query_validator

    documents, queries = epcis_validator(EPCIS_DIR, split=True), query_validator(EPCIS_DIR)

    def errors(answer: Any, params: Any) -> list[str]:
        written = parse_query(list(params.items()) if isinstance(params, dict) else params)
        return documents(answer.json()) + queries(written.query.as_json())

    return errors


def _events(answer: Any) -> list[dict[str, Any]]:
    doc = answer.json()
    return list(doc["epcisBody"]["queryResults"]["resultsBody"]["eventList"])


def _next(answer: Any) -> list[tuple[str, str]] | None:
    link = answer.headers.get("Link")
    if link is None:
        return None
    url = link.split(";")[0].strip("<>")
    assert urlsplit(url).path == "/epcis/events"
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def test_events_are_the_callers_schema_valid_and_paged(
    tmp_path: Path, db_url: str, validate: Any
) -> None:
    with open_api(tmp_path, db_url) as api:
        a = api.credential("hospital", "hospital-a")
        b = api.credential("hospital", "hospital-b")
        regulator = api.credential("regulator", "nmpa")
        posted: list[tuple[dict[str, str], bytes, int]] = []
        for n in range(5):
            body = pack("AB12C34", f"SER{n:06d}", n)
            if n == 2:  # filed as settlement: its dispensing is an event all the same
                body = json.dumps(with_invoice(json.loads(body)), ensure_ascii=False).encode()
            who = b if n == 4 else a
            r = api.post(body, who)
            assert r.status_code == 201, r.text
            posted.append((who, body, r.json()["index"]))

        # What each event must be: the adapter's, with the entry's leaf hash and time.
        def expected(index: int, body: bytes) -> dict[str, Any]:
            entry = api.services.log.entries(index, index + 1)[0]
            doc = json.loads(body)
            link = ledger_link(base64.b64encode(leaf_hash(entry)).decode())
            (event,) = dispensing_events(doc, location=event_location(doc), link=link)
            return event.as_json()

        before = access_count(api.services.engine)
        got = api.client.get("/epcis/events", headers=a)
        assert got.status_code == 200, got.text
        assert got.headers["content-type"].startswith("application/ld+json")
        assert got.headers["GS1-EPCIS-Version"] == "2.0.0"
        assert validate(got, []) == []
        events = _events(got)
        mine = [(body, index) for who, body, index in posted if who is a]
        assert [{k: v for k, v in e.items() if k != "recordTime"} for e in events] == [
            expected(index, body) for body, index in mine
        ]
        assert all(e["recordTime"].endswith("Z") or "+" in e["recordTime"] for e in events)
        everyone = _events(api.client.get("/epcis/events", headers=regulator))
        assert len(everyone) == 5
        assert access_count(api.services.engine) == before  # no patient data: no entry

        # The standard's filters.
        serial = api.client.get(
            "/epcis/events",
            params={"MATCH_epc": f"https://id.gs1.org/01/{GTIN}/21/SER000001"},
            headers=a,
        )
        assert [e["epcList"] for e in _events(serial)] == [
            [f"https://id.gs1.org/01/{GTIN}/21/SER000001"]
        ]
        step = api.client.get(
            "/epcis/events",
            params={"EQ_bizStep": "urn:epcglobal:cbv:bizstep:dispensing", "GE_eventTime":
                    "2026-11-20T00:00:00+08:00", "LT_eventTime": "2026-11-21T00:00:00+08:00"},
            headers=a,
        )  # fmt: skip
        assert len(_events(step)) == 4
        none = api.client.get(
            "/epcis/events", params={"GE_eventTime": "2027-01-01T00:00:00Z"}, headers=a
        )
        assert _events(none) == []
        assert validate(none, {"GE_eventTime": "2027-01-01T00:00:00Z"}) == []

        # Paging: a page of three, then the last two; a token opens for its asker only.
        params: list[tuple[str, str]] = [("EQ_bizStep", "dispensing"), ("perPage", "3")]
        seen: list[str] = []
        token = None
        while True:
            page = api.client.get("/epcis/events", params=params, headers=regulator)
            assert page.status_code == 200, page.text
            assert validate(page, params) == []
            seen += [e["eventID"] for e in _events(page)]
            following = _next(page)
            if following is None:
                break
            token = dict(following)["nextPageToken"]
            params = following
        assert seen == [e["eventID"] for e in everyone]
        assert token is not None
        stolen = api.client.get(
            "/epcis/events",
            params={"EQ_bizStep": "dispensing", "perPage": "3", "nextPageToken": token},
            headers=a,
        )
        assert stolen.status_code == 400
        assert stolen.headers["content-type"].startswith("application/problem+json")
        assert stolen.json()["type"] == "epcisException:QueryParameterException"


@pytest.mark.parametrize(
    "params",
    [
        {"EQ_bizStep": "dispensingg"},
        {"GE_eventTime": "yesterday"},
        {"perPage": "0"},
        {"nextPageToken": "forged.token"},
    ],
)
def test_bad_queries_are_query_parameter_exceptions(tmp_path: Path, params: dict[str, str]) -> None:
    with open_api(tmp_path) as api:
        r = api.client.get("/epcis/events", params=params, headers=api.credential())
        assert r.status_code == 400, r.text
        problem = r.json()
        assert problem["type"] == "epcisException:QueryParameterException"
        assert problem["status"] == 400


def test_unknown_parameters_and_other_roles_are_refused(tmp_path: Path) -> None:
    with open_api(tmp_path) as api:
        r = api.client.get("/epcis/events", params={"EQ_bizStepp": "x"}, headers=api.credential())
        assert r.status_code == 400
        for role, org in (("insurer", "insurer-a"), ("auditor", None), ("mediator", "m-1")):
            assert (
                api.client.get("/epcis/events", headers=api.credential(role, org)).status_code
                == 403
            )
        assert api.client.get("/epcis/events").status_code == 401


def _without_glns(body: bytes) -> bytes:
    doc = json.loads(body)
    for entry in doc["entry"]:
        res = entry["resource"]
        if res["resourceType"] in ("Location", "Organization"):
            kept = [i for i in res.get("identifier", []) if "gs1.org/gln" not in i["system"]]
            if kept:
                res["identifier"] = kept
            else:
                res.pop("identifier", None)
    return json.dumps(doc, ensure_ascii=False).encode()


def test_a_bundle_without_a_gln_is_placed_at_the_registry_gln(
    tmp_path: Path, validate: Any
) -> None:
    from dataclasses import replace
    from datetime import date, timedelta

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from exchange.registry import institutions as inst
    from tests.registry.test_institutions import BASE

    gln = "6901234567892"
    with open_api(tmp_path) as api:
        a = api.credential("hospital", "hospital-a")
        regulator = api.credential("regulator", "nmpa")
        assert api.post(_without_glns(pack("AB12C34", "SER000001", 0)), a).status_code == 201
        # Nowhere to place it: no event rather than a wrong one.
        assert _events(api.client.get("/epcis/events", headers=regulator)) == []
        key = Ed25519PrivateKey.generate()
        inst.register_admin_key(api.services.engine, "admin-1", key.public_key())
        today = date.today()
        record = replace(
            BASE,
            org="hospital-a",
            licence_valid_from=today - timedelta(days=1),
            licence_valid_to=today + timedelta(days=1),
            gln=gln,
        )
        inst.append_attestation(api.services.log, inst.sign_attestation(record, "admin-1", key))
        for who in (a, regulator):
            got = api.client.get("/epcis/events", headers=who)
            assert got.status_code == 200, got.text
            assert validate(got, []) == []
            (event,) = _events(got)
            site = f"https://id.gs1.org/414/{gln}"
            assert event["readPoint"] == {"id": site} and event["bizLocation"] == {"id": site}
