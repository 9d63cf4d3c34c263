"""EPCIS 2.0 queries: SimpleEventQuery parameters, EPC patterns, pages, tokens, documents.

The filters are checked on the events this project emits and on GS1's own EPCIS 2.0 example
events (``shared/vectors/epcis/examples``: EPC URNs, Digital Links, aggregation, association,
transformation and transaction events), whose answers are worked out by reading the files.
Every query result document is validated against GS1's JSON Schema, and every query written
in the EPCIS Query Language against GS1's query schema; those tests skip without the vectors.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.epcis import build_events
from adapters.epcis_query import (
    MAX_PER_PAGE,
    EpcisQueryError,
    EpcMatcher,
    EventQuery,
    PageTokens,
    QueryParameterError,
    answer,
    page,
    parse_query,
    query_document,
)
from adapters.tracecode import gtin_check_digit

HERE = Path(__file__).resolve().parents[1]
FIXTURES = HERE / "fixtures" / "trace"
EPCIS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "epcis"
NOW = datetime(2026, 11, 28, 10, 0, tzinfo=timezone(timedelta(hours=8)))
KEY = hashlib.sha256(b"page tokens of this test").digest()
BASE = "https://medledger.example/epcis/events"
PACK = "https://id.gs1.org/01/00312345678906/21/7TK2PQ9R4M1X"


def our_event(
    serial: str = "7TK2PQ9R4M1X", when: str = "2026-11-20T09:30:00+08:00"
) -> dict[str, Any]:
    doc = json.loads((FIXTURES / "lecheng-rwd-administration.json").read_text("utf-8"))
    med = doc["entry"][7]["resource"]
    med["extension"][1]["valueString"] = f"(01)00312345678906(17)270630(10)AB12C34(21){serial}"
    doc["entry"][8]["resource"]["effectiveDateTime"] = when
    leaf = base64.b64encode(hashlib.sha256(serial.encode()).digest()).decode()
    built = build_events(doc, entry_hash_b64=leaf, location_gln_sgln="6901234000023", now=NOW)
    event: dict[str, Any] = built["epcisBody"]["eventList"][0]
    return event


def gs1_events() -> list[tuple[str, dict[str, Any]]]:
    """(file:position, event) of every event in GS1's examples."""
    if not (EPCIS_DIR / "examples").is_dir():
        pytest.skip(f"public test vectors not present at {EPCIS_DIR}")
    out = []
    for path in sorted((EPCIS_DIR / "examples").glob("*.jsonld")):
        for n, event in enumerate(json.loads(path.read_text("utf-8"))["epcisBody"]["eventList"]):
            out.append((f"{path.stem}:{n}", event))
    return out


def select(params: list[tuple[str, str]]) -> list[str]:
    query = parse_query(params).query
    return [name for name, event in gs1_events() if query.matches(event)]


@pytest.fixture(scope="module")
def validate() -> Any:
    if not (EPCIS_DIR / "JSON-Schema").is_dir():
        pytest.skip(f"public test vectors not present at {EPCIS_DIR}")
    from adapters.trace_schema import epcis_validator

    return epcis_validator(EPCIS_DIR, split=True)


@pytest.fixture(scope="module")
def validate_query() -> Any:
    if not (EPCIS_DIR / "JSON-Schema").is_dir():
        pytest.skip(f"public test vectors not present at {EPCIS_DIR}")
    from adapters.trace_schema import query_validator

    return query_validator(EPCIS_DIR)


# -- the parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "dispensing",
        "urn:epcglobal:cbv:bizstep:dispensing",
        "https://ref.gs1.org/cbv/BizStep-dispensing",
    ],
)
def test_eq_bizstep_takes_every_spelling_of_a_cbv_value(spelling: str) -> None:
    query = parse_query([("EQ_bizStep", spelling)]).query
    assert query.biz_steps == ("dispensing",)
    assert query.matches(our_event())
    assert not parse_query([("EQ_bizStep", "shipping")]).query.matches(our_event())
    # The event's own spelling does not matter either.
    assert query.matches({**our_event(), "bizStep": "urn:epcglobal:cbv:bizstep:dispensing"})


def test_eq_bizstep_over_gs1_examples() -> None:
    assert select([("EQ_bizStep", "receiving|urn:epcglobal:cbv:bizstep:assembling")]) == [
        "AssociationEvent-a:0",
        "Example_9.6.1-ObjectEvent-with-error-declaration:1",
        "Example_9.6.1-ObjectEvent:1",
        "Example_9.6.1-ObjectEventWithDigitalLink:1",
        "Example_9.6.2-ObjectEvent:0",
        "Example_9.6.3-AggregationEvent:0",
        "object_event_all_possible_fields:0",
    ]
    # A business step of another vocabulary is its URI.
    own = "http://epcis.example.org/hc/bizstep/summarising_discharge"
    assert select([("EQ_bizStep", own)]) == ["Example-TransactionEvents-2020_07_03y:0"]


@pytest.mark.parametrize(
    ("params", "parameter", "message"),
    [
        ([("EQ_bizStep", "dispense")], "EQ_bizStep", "no CBV 2.0 business step"),
        ([("EQ_bizStep", "urn:epcglobal:cbv:bizstep:dispense")], "EQ_bizStep", "no CBV"),
        ([("EQ_disposition", "sold")], "EQ_disposition", "no CBV 2.0 disposition"),
        ([("EQ_bizStep", "dispensing|")], "EQ_bizStep", "empty"),
        ([("EQ_bizStep", "shipping"), ("EQ_bizStep", "receiving")], "EQ_bizStep", "twice"),
        ([("EQ_action", "observe")], "EQ_action", "ADD, OBSERVE or DELETE"),
        ([("eventType", "Event")], "eventType", "no EPCIS event type"),
        ([("EQ_readPoint", "Boao pharmacy")], "EQ_readPoint", "not a URI"),
        ([("GE_eventTime", "2026-11-20")], "GE_eventTime", "RFC 3339"),
        ([("LT_eventTime", "2026-11-20T09:30:00")], "LT_eventTime", "offset"),
        ([("GE_eventTime", "2026-02-30T09:30:00Z")], "GE_eventTime", "not a valid time"),
        ([("EQ_quantity", "1")], "EQ_quantity", "does not evaluate"),
        ([("orderBy", "eventTime")], "orderBy", "does not evaluate"),
        ([("gtin", "00312345678906")], "gtin", "not an EPCIS query parameter"),
        ([("perPage", "0")], "perPage", "positive integer"),
        ([("perPage", "ten")], "perPage", "positive integer"),
        ([("MATCH_epc", "urn:epc:idpat:sgtin:*.067890.*")], "MATCH_epc", "follows a *"),
        ([("MATCH_epc", "urn:epc:idpat:sgtin:0312345.06789.*")], "MATCH_epc", "13 digits"),
        ([("MATCH_epc", "urn:epc:idpat:sgtin:0312345..*")], "MATCH_epc", "none empty"),
        ([("MATCH_epc", "urn:epc:idpat:sgtin:031234.*")], "MATCH_epc", "3 components"),
        ([("MATCH_epc", "urn:epc:idpat:sgtn:031234.*.*")], "MATCH_epc", "no EPC scheme"),
        ([("MATCH_epc", "urn:epc:idpat:sgtin:12345.*.*")], "MATCH_epc", "6 to 12 digits"),
        (
            [("MATCH_epcClass", "urn:epc:idpat:sgtin:0312345.067890.a b")],
            "MATCH_epcClass",
            "set 82",
        ),
        ([("MATCH_epc", "7TK2PQ9R4M1X")], "MATCH_epc", "no EPC pattern, EPC or URI"),
    ],
)
def test_bad_parameters_are_query_parameter_exceptions(
    params: list[tuple[str, str]], parameter: str, message: str
) -> None:
    with pytest.raises(QueryParameterError, match=message) as raised:
        parse_query(params)
    assert raised.value.parameter == parameter
    problem = raised.value.problem()
    assert problem == {
        "type": "epcisException:QueryParameterException",
        "title": "Invalid query parameter",
        "status": 400,
        "detail": str(raised.value),
    }


def test_paging_parameters() -> None:
    assert parse_query([]).per_page == 30
    assert parse_query([("perPage", "7")]).per_page == 7
    assert parse_query([("perPage", "100000")]).per_page == MAX_PER_PAGE
    assert parse_query([("nextPageToken", "abc")]).next_page_token == "abc"


# -- times ---------------------------------------------------------------------------------------


def test_ge_is_inclusive_and_lt_exclusive_as_instants() -> None:
    event = our_event()  # 2026-11-20T09:30:00.000+08:00 = 01:30Z
    at = [("2026-11-20T01:30:00Z", True, False), ("2026-11-20T09:30:00.001+08:00", False, True)]
    for moment, ge, lt in at:
        assert parse_query([("GE_eventTime", moment)]).query.matches(event) is ge
        assert parse_query([("LT_eventTime", moment)]).query.matches(event) is lt
    # "+08:00" as a URL decoder leaves it when the client did not percent-encode the "+".
    assert parse_query([("GE_eventTime", "2026-11-20T09:30:00 08:00")]).query.matches(event)
    window = [("GE_eventTime", "2005-04-04T00:00:00Z"), ("LT_eventTime", "2005-04-05T00:00:00Z")]
    assert select(window) == [
        "Example_9.6.1-ObjectEvent-with-error-declaration:0",
        "Example_9.6.1-ObjectEvent:0",
        "Example_9.6.1-ObjectEventWithDigitalLink:0",
    ]  # 2005-04-03T20:33:31.116-06:00 is the 4th in UTC; the second events are on the 5th.


def test_record_time_filters_need_a_record_time() -> None:
    event = our_event()
    query = parse_query([("GE_recordTime", "2026-11-20T00:00:00Z")]).query
    assert not query.matches(event)
    assert query.matches({**event, "recordTime": "2026-11-20T17:00:00.000+08:00"})


# -- MATCH_ --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("urn:epc:idpat:sgtin:0312345.067890.*", True),
        ("urn:epc:idpat:sgtin:0312345.067890.7TK2PQ9R4M1X", True),
        ("urn:epc:idpat:sgtin:0312345.067890.7TK2PQ9R4M1Y", False),
        ("urn:epc:idpat:sgtin:0312345.*.*", True),
        ("urn:epc:idpat:sgtin:031234.0567890.*", True),  # the same GTIN, another prefix length
        ("urn:epc:idpat:sgtin:0312346.*.*", False),
        ("urn:epc:idpat:sgtin:*.*.*", True),
        ("urn:epc:idpat:sscc:*.*", False),
        ("urn:epc:id:sgtin:0312345.067890.7TK2PQ9R4M1X", True),  # the URN spelling of the pack
        (PACK, True),
        ("https://example.com/01/00312345678906/21/7TK2PQ9R4M1X", True),  # a Digital Link
        ("https://id.gs1.org/01/00312345678906/10/AB12C34", False),  # the lot, not the pack
        ("urn:example:pack:7TK2PQ9R4M1X", False),
    ],
)
def test_match_epc_on_our_events(value: str, expected: bool) -> None:
    assert parse_query([("MATCH_epc", value)]).query.matches(our_event()) is expected


def test_match_over_gs1_examples() -> None:
    pattern = "urn:epc:idpat:sgtin:0614141.107346.*"
    assert select([("MATCH_epc", pattern)]) == [
        "Example_9.6.1-ObjectEvent-with-error-declaration:0",
        "Example_9.6.1-ObjectEvent-with-error-declaration:1",
        "Example_9.6.1-ObjectEvent:0",
        "Example_9.6.1-ObjectEvent:1",
        "Example_9.6.3-AggregationEvent:0",  # childEPCs
        "object_event_all_possible_fields:0",
    ]
    # The Digital Link spelling of urn:epc:id:sgtin:0614141.107346.2018 finds the same packs.
    body = "1" + "0614141" + "07346"
    link = f"https://id.gs1.org/01/{body}{gtin_check_digit(body)}/21/2018"
    assert select([("MATCH_epc", link)]) == select(
        [("MATCH_epc", "urn:epc:id:sgtin:0614141.107346.2018")]
    )
    assert len(select([("MATCH_epc", link)])) == 6  # two files of two events, two more
    # GS1's Digital Link example: one prefix of GTIN 70614141123451 found by a pattern.
    assert select([("MATCH_epc", "urn:epc:idpat:sgtin:0614141.712345.2017")]) == [
        "Example_9.6.1-ObjectEventWithDigitalLink:0"
    ]
    # Other schemes, written as EPC URNs, component by component.
    assert select([("MATCH_epc", "urn:epc:idpat:giai:4000001.*")]) == ["AssociationEvent-a:0"]
    assert select([("MATCH_epc", "urn:epc:idpat:sscc:0614141.*")]) == []  # a parentID ...
    assert select([("MATCH_anyEPC", "urn:epc:idpat:sscc:0614141.*")]) == [
        "Example_9.6.3-AggregationEvent:0"  # ... which MATCH_anyEPC looks at
    ]
    assert select([("MATCH_anyEPC", "urn:epc:id:sgtin:4012345.077889.27")]) == [
        "Example_9.6.4-TransformationEvent:0"  # an output
    ]


def test_match_epc_class_over_gs1_examples_and_our_lots() -> None:
    lgtin = "urn:epc:class:lgtin:4012345.012345.998877"
    assert select([("MATCH_epcClass", lgtin)]) == [
        "Example_9.6.2-ObjectEvent:0",
        "Example_9.6.3-AggregationEvent:0",  # childQuantityList
        "object_event_all_possible_fields:0",
    ]
    assert select([("MATCH_epcClass", "urn:epc:idpat:sgtin:4012345.*.*")]) == [
        "Example_9.6.2-ObjectEvent:0",
        "Example_9.6.3-AggregationEvent:0",
        "object_event_all_possible_fields:0",
    ]
    assert select([("MATCH_epcClass", "urn:epc:idpat:sgtin:0614141.077777.*")]) == []
    assert select([("MATCH_anyEPCClass", "urn:epc:idpat:sgtin:0614141.077777.*")]) == [
        "Example_9.6.4-TransformationEvent:0"  # an input lot
    ]
    # Our lot-level dispensing names the class, not instances.
    lot_event = our_event()
    del lot_event["epcList"]
    lot = "https://id.gs1.org/01/00312345678906/10/AB12C34"
    lot_event["quantityList"] = [{"epcClass": lot, "quantity": 1}]
    for value, expected in [
        ("urn:epc:class:lgtin:0312345.067890.AB12C34", True),
        ("https://id.gs1.org/01/00312345678906/10/AB12C34", True),
        ("https://id.gs1.org/01/00312345678906/10/AB12C35", False),
        ("urn:epc:idpat:sgtin:0312345.067890.*", True),
        ("urn:epc:idpat:sgtin:0312345.067890.AB12C34", False),  # a serial is not a lot
    ]:
        assert parse_query([("MATCH_epcClass", value)]).query.matches(lot_event) is expected
        assert not parse_query([("MATCH_epc", value)]).query.matches(lot_event)


SGTIN = st.tuples(
    st.integers(6, 12).flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n)),
    st.text("0123456789", min_size=13, max_size=13),
    st.text("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-.", min_size=1, max_size=20),
)


@given(SGTIN, st.integers(0, 3))
def test_a_pattern_matches_both_spellings_of_its_epcs(
    sgtin: tuple[str, str, str], stars: int
) -> None:
    # Company prefix (6-12 digits) and item reference make 13 digits, whatever the split;
    # the pattern, with its last `stars` components starred, matches the EPC as a URN and as
    # the Digital Link whose GTIN the test computes on its own; a changed digit breaks it.
    company_len_digits, digits, serial = sgtin
    company, item = digits[: len(company_len_digits)], digits[len(company_len_digits) :]
    body = item[0] + company + item[1:]
    gtin = body + str(gtin_check_digit(body))
    parts = [company, item, serial]
    for i in range(3 - stars, 3):
        parts[i] = "*"
    if parts[0] == "*":
        parts = ["*", "*", "*"]
    matcher = EpcMatcher.parse("urn:epc:idpat:sgtin:" + ".".join(parts), "MATCH_epc")
    urn = f"urn:epc:id:sgtin:{company}.{item}.{serial}"
    link = f"https://id.gs1.org/01/{gtin}/21/{serial}"
    assert matcher.matches_epc(urn) and matcher.matches_epc(link)
    if parts[0] != "*":
        other = str((int(company[-1]) + 1) % 10)
        wrong_body = item[0] + company[:-1] + other + item[1:]
        wrong = f"https://id.gs1.org/01/{wrong_body}{gtin_check_digit(wrong_body)}/21/{serial}"
        assert not matcher.matches_epc(wrong)


# -- pages and tokens ----------------------------------------------------------------------------


def many(n: int) -> list[tuple[tuple[int, int], dict[str, Any]]]:
    """n of our events, one a ledger entry, a minute apart."""
    start = datetime(2026, 11, 20, 9, 0, tzinfo=timezone(timedelta(hours=8)))
    return [
        ((100 + i, 0), our_event(f"S{i:05d}", (start + timedelta(minutes=i)).isoformat()))
        for i in range(n)
    ]


def follow(link: str) -> list[tuple[str, str]]:
    """The query parameters of a Link header's URL, decoded as a server would."""
    url = link.split(";")[0].strip("<>")
    assert url.startswith(BASE + "?")
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def test_pages_follow_the_link_header_to_the_end(validate: Any, validate_query: Any) -> None:
    events = many(75)
    tokens = PageTokens(KEY, lifetime=timedelta(minutes=10))
    params: list[tuple[str, str]] = [("EQ_bizStep", "dispensing"), ("perPage", "30")]
    seen: list[str] = []
    sizes = []
    while True:
        result = answer(params, events, tokens=tokens, scope="org-a", now=NOW, base_url=BASE)
        assert validate(result.document) == []
        batch = result.document["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
        sizes.append(len(batch))
        seen += [e["eventID"] for e in batch]
        if "Link" not in result.headers:
            break
        assert result.headers["GS1-Next-Page-Token-Expires"] == "2026-11-28T02:10:00.000+00:00"
        params = follow(result.headers["Link"])
        assert ("EQ_bizStep", "dispensing") in params and ("perPage", "30") in params
    assert sizes == [30, 30, 15]
    assert seen == [e["eventID"] for _, e in events]
    assert validate_query(parse_query(params).query.as_json()) == []


def test_a_page_boundary_stays_put_when_events_are_added() -> None:
    events = many(40)
    tokens = PageTokens(KEY)
    first = answer(
        [("perPage", "25")], events[:30], tokens=tokens, scope="s", now=NOW, base_url=BASE
    )
    # Ten more events are appended to the log before the client asks for page two.
    second = answer(
        follow(first.headers["Link"]), events, tokens=tokens, scope="s", now=NOW, base_url=BASE
    )
    ids = [
        e["eventID"]
        for e in second.document["epcisBody"]["queryResults"]["resultsBody"]["eventList"]
    ]
    assert ids == [e["eventID"] for _, e in events[25:40]]
    assert "Link" not in second.headers


def test_a_token_is_bound_to_its_query_its_scope_and_its_time() -> None:
    events = many(5)
    tokens = PageTokens(KEY, lifetime=timedelta(minutes=10))
    query = [("MATCH_epc", "urn:epc:idpat:sgtin:0312345.067890.*"), ("perPage", "2")]
    first = answer(query, events, tokens=tokens, scope="org-a", now=NOW, base_url=BASE)
    params = follow(first.headers["Link"])
    token = dict(params)["nextPageToken"]

    def ask(p: list[tuple[str, str]], scope: str = "org-a", now: datetime = NOW) -> Any:
        return answer(p, events, tokens=tokens, scope=scope, now=now, base_url=BASE)

    assert len(ask(params).document["epcisBody"]["queryResults"]["resultsBody"]["eventList"]) == 2
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    later = NOW + timedelta(minutes=10)
    other_query = [("MATCH_epc", PACK), ("perPage", "2"), ("nextPageToken", token)]
    refusals = [
        ([*params[:-1], ("nextPageToken", flipped)], "org-a", NOW, "not a token"),
        ([*params[:-1], ("nextPageToken", token.replace(".", ""))], "org-a", NOW, "not a token"),
        (other_query, "org-a", NOW, "another query"),
        (params, "org-b", NOW, "another query"),
        (params, "org-a", later, "expired"),
    ]
    for p, scope, now, message in refusals:
        with pytest.raises(QueryParameterError, match=message) as raised:
            ask(p, scope, now)
        assert raised.value.parameter == "nextPageToken"
    # Another key cannot open it: the MAC is the only authority.
    with pytest.raises(EpcisQueryError, match="not a token"):
        answer(params, events, tokens=PageTokens(bytes(32)), scope="org-a", now=NOW, base_url=BASE)


def test_page_needs_keys_in_order_and_tokens_a_real_key() -> None:
    events = many(3)
    with pytest.raises(ValueError, match="out of key order"):
        page([events[1], events[0]], EventQuery())
    with pytest.raises(ValueError, match="32 bytes"):
        PageTokens(b"short")
    assert page(events, EventQuery(), per_page=3).after is None
    assert page(events, EventQuery(), per_page=2).after == (101, 0)


def test_an_empty_answer_is_a_valid_document(validate: Any) -> None:
    document = query_document([], now=NOW)
    assert document["epcisBody"]["queryResults"] == {
        "queryName": "SimpleEventQuery",
        "resultsBody": {"eventList": []},
    }
    assert validate(document) == []
    result = answer(
        [("EQ_bizStep", "shipping")],
        many(3),
        tokens=PageTokens(KEY),
        scope="s",
        now=NOW,
        base_url=BASE,
    )
    assert result.headers == {}
    assert validate(result.document) == []


def test_every_gs1_example_event_is_a_valid_query_result(validate: Any) -> None:
    # The document shape holds any event, not only ours.
    for name, event in gs1_events():
        context = json.loads((EPCIS_DIR / "examples" / f"{name.split(':')[0]}.jsonld").read_text())
        document = query_document([event], now=NOW)
        document["@context"] = context["@context"]
        assert validate(document) == [], name


def test_queries_are_written_as_the_query_language(validate_query: Any) -> None:
    query = parse_query(
        [
            ("eventType", "ObjectEvent|AggregationEvent"),
            ("GE_eventTime", "2026-11-20T00:00:00+08:00"),
            ("LT_eventTime", "2026-11-21T00:00:00Z"),
            ("EQ_action", "OBSERVE"),
            ("EQ_bizStep", "urn:epcglobal:cbv:bizstep:dispensing|https://example.org/step/x"),
            ("EQ_disposition", "https://ref.gs1.org/cbv/Disp-dispensed"),
            ("EQ_readPoint", "urn:epc:id:sgln:6901234.00002.0"),
            ("EQ_bizLocation", "https://id.gs1.org/414/6901234000023"),
            ("MATCH_epc", "urn:epc:idpat:sgtin:0312345.067890.*"),
            ("MATCH_epcClass", "urn:epc:class:lgtin:0312345.067890.AB12C34"),
            ("EQ_eventID", our_event()["eventID"]),
        ]
    ).query
    written = query.as_json()
    assert written["EQ_bizStep"] == ["dispensing", "https://example.org/step/x"]
    assert written["EQ_disposition"] == ["dispensed"]
    assert validate_query(written) == []
    # Every other conjunct holds for the administration; it names instances, not a class.
    assert not query.matches(our_event())
    assert dataclasses.replace(query, match_epc_class=()).matches(our_event())
    assert validate_query({"EQ_bizStep": ["urn:epcglobal:cbv:bizstep:dispensing"]}) != []
