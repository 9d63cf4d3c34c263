"""EPCIS 2.0 dispensing events: GS1 JSON Schema, offline JSON-LD, CBV 2.0 event hash, no PHI.

Schema and context are GS1's (``shared/vectors/epcis``); the tests that need them skip when
the public vectors are absent. The event hash is checked against the published reference
vector of the CBV 2.0 EPCIS Event Hash ID algorithm.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import json
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import adapters.epcis as epcis
from adapters.base import AdaptError, AdaptOptions
from adapters.epcis import (
    DispensingEvent,
    adapt,
    build_events,
    event_hash_id,
    event_location,
    ledger_link,
    location_uri,
    prehash,
)
from exchange.cli.main import main as cli_main
from tests.paths import FIXTURES as TEST_FIXTURES
from tests.paths import GOLDEN as TEST_GOLDEN
from tests.paths import VECTORS

FIXTURES = TEST_FIXTURES / "trace"
GOLDEN = TEST_GOLDEN / "trace"
EPCIS_DIR = VECTORS / "epcis"
NOW = datetime(2026, 11, 28, 10, 0, tzinfo=timezone(timedelta(hours=8)))
UPDATE_GOLDEN = os.environ.get("MEDLEDGER_UPDATE_GOLDEN") == "1"
ADMIN = FIXTURES / "lecheng-rwd-administration.json"
EVENT = FIXTURES / "lecheng-rwd-adverse-event.json"
SGLN = "urn:epc:id:sgln:6901234.00002.0"
LEAF = base64.b64encode(hashlib.sha256(b"\x00entry 41").digest()).decode()
ALLOWED_KEYS = {
    "type",
    "eventID",
    "eventTime",
    "eventTimeZoneOffset",
    "epcList",
    "quantityList",
    "action",
    "bizStep",
    "disposition",
    "readPoint",
    "bizLocation",
    "medledger:ledgerEntry",
}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def document() -> dict[str, Any]:
    return build_events(load(ADMIN), entry_hash_b64=LEAF, location_gln_sgln=SGLN, now=NOW)


@pytest.fixture(scope="module")
def schema_dir() -> Path:
    if not (EPCIS_DIR / "EPCIS-JSON-Schema.json").is_file():
        pytest.skip(f"public test vectors not present at {VECTORS}")
    return EPCIS_DIR


@pytest.fixture(scope="module", params=[False, True], ids=["self-contained", "split"])
def validate(request: pytest.FixtureRequest, schema_dir: Path) -> Any:
    from adapters.trace_schema import epcis_validator

    return epcis_validator(schema_dir, split=request.param)


def examples() -> list[Path]:
    return sorted((EPCIS_DIR / "examples").glob("*.jsonld")) if EPCIS_DIR.is_dir() else []


# -- the document ------------------------------------------------------------------------------


def test_one_dispensing_event_per_administration() -> None:
    doc = document()
    (event,) = doc["epcisBody"]["eventList"]
    assert event["type"] == "ObjectEvent"
    assert (event["action"], event["bizStep"], event["disposition"]) == (
        "OBSERVE",
        "dispensing",
        "dispensed",
    )
    assert event["epcList"] == ["https://id.gs1.org/01/00312345678906/21/7TK2PQ9R4M1X"]
    assert event["eventTime"] == "2026-11-20T09:30:00.000+08:00"
    assert event["eventTimeZoneOffset"] == "+08:00"
    assert event["readPoint"] == event["bizLocation"] == {"id": SGLN}
    assert event["medledger:ledgerEntry"] == ledger_link(LEAF)
    assert re.fullmatch(r"ni:///sha-256;[0-9a-f]{64}\?ver=CBV2\.0", event["eventID"])
    assert doc["creationDate"] == "2026-11-28T10:00:00.000+08:00"


def test_event_id_is_the_hash_of_the_event() -> None:
    (event,) = document()["epcisBody"]["eventList"]
    body = {k: v for k, v in event.items() if k != "eventID"}
    context = document()["@context"]
    assert event_hash_id(body, context) == event["eventID"]
    # Key order and the EPC URN / Digital Link spelling of the location do not matter.
    shuffled = dict(reversed(list(body.items())))
    shuffled["readPoint"] = {"id": "https://id.gs1.org/414/6901234000023"}
    shuffled["bizLocation"] = {"id": "https://id.gs1.org/414/6901234000023"}
    assert event_hash_id(shuffled, context) == event["eventID"]
    # Every field is in the hash.
    for key, value in (
        ("eventTime", "2026-11-20T09:30:00.001+08:00"),
        ("epcList", ["https://id.gs1.org/01/00312345678906/21/7TK2PQ9R4M1Y"]),
        ("disposition", "in_progress"),
        ("medledger:ledgerEntry", ledger_link(base64.b64encode(b"\x01" * 32).decode())),
    ):
        assert event_hash_id({**body, key: value}, context) != event["eventID"], key


def test_cbv_event_hash_reference_vector() -> None:
    """The single-event example of the CBV 2.0 reference implementation of the algorithm
    (RalphTro/epcis-event-hash-generator, tests/examples/epcisDocWithSingleEvent)."""
    event = {
        "type": "ObjectEvent",
        "action": "OBSERVE",
        "bizStep": "shipping",
        "disposition": "in_transit",
        "epcList": ["urn:epc:id:sgtin:0614141.107346.2017", "urn:epc:id:sgtin:0614141.107346.2018"],
        "eventTime": "2022-02-16T20:33:31.116000-06:00",
        "eventTimeZoneOffset": "-06:00",
        "readPoint": {"id": "urn:epc:id:sgln:0614141.07346.1234"},
        "bizTransactionList": [
            {"type": "po", "bizTransaction": "http://transaction.acme.com/po/12345678"}
        ],
    }
    context = [epcis.EPCIS_CONTEXT, {"gs1": "https://gs1.org/voc/"}]
    assert prehash(event, context) == (
        "eventType=ObjectEventeventTime=2022-02-17T02:33:31.116ZeventTimeZoneOffset=-06:00"
        "epcListepc=https://id.gs1.org/01/10614141073464/21/2017"
        "epc=https://id.gs1.org/01/10614141073464/21/2018action=OBSERVE"
        "bizStep=https://ref.gs1.org/cbv/BizStep-shipping"
        "disposition=https://ref.gs1.org/cbv/Disp-in_transit"
        "readPointid=https://id.gs1.org/414/0614141073467/254/1234"
        "bizTransactionListbizTransaction=http://transaction.acme.com/po/12345678"
        "type=https://ref.gs1.org/cbv/BTT-po"
    )
    assert event_hash_id(event, context) == (
        "ni:///sha-256;3e0f2437f4cb5e8a1b832b769c0eed1bf3e1421f14061132e9800ded03f10182?ver=CBV2.0"
    )


def test_example_event_ids_follow_the_draft_without_web_uri_normalisation(
    schema_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The eventIDs in GS1's EPCIS 2.0 JSON examples predate CBV 2.0 rules 14-17 (CBV Web
    URIs and Digital Link for EPC URNs): with those two normalisations switched off, the same
    pre-hash construction reproduces them."""
    kinds = {"BizStep-": "bizstep", "Disp-": "disp", "BTT-": "btt", "SDT-": "sdt"}

    def urn_vocab(value: Any, kind: str, prefixes: Any) -> str:
        text = str(value).strip()
        return f"urn:epcglobal:cbv:{kinds[kind]}:{text}" if re.fullmatch("[a-z_]+", text) else text

    monkeypatch.setattr(epcis, "_uri", lambda value: str(value).strip())
    monkeypatch.setattr(epcis, "_vocab", urn_vocab)
    for name, index in (("Example_9.6.1-ObjectEvent.jsonld", 0), ("AssociationEvent-a.jsonld", 0)):
        doc = load(schema_dir / "examples" / name)
        event = doc["epcisBody"]["eventList"][index]
        assert event_hash_id(event, doc["@context"]) == event["eventID"], name


def test_unsupported_fields_refuse_to_hash() -> None:
    with pytest.raises(AdaptError, match="sensorElementList"):
        event_hash_id({"type": "ObjectEvent", "sensorElementList": []})
    with pytest.raises(AdaptError, match="no namespace"):
        event_hash_id({"type": "ObjectEvent", "nope:field": "x"})


def test_lot_level_pack_and_dispensing(tmp_path: Path) -> None:
    doc = load(ADMIN)
    med = doc["entry"][7]["resource"]
    med["extension"] = med["extension"][:1]  # no serialised trace code: a lot-level pack
    dispense = {
        "resourceType": "MedicationDispense",
        "id": "md-1",
        "status": "completed",
        "medicationReference": {"reference": "Medication/med-exemplumab-pack"},
        "whenHandedOver": "2026-11-21T08:00:00+08:00",
    }
    not_done = {**doc["entry"][8]["resource"], "id": "ma-x", "status": "not-done"}
    doc["entry"] += [{"resource": dispense}, {"resource": not_done}]
    events = build_events(doc, entry_hash_b64=None, location_gln_sgln=SGLN, now=NOW)
    first, second = events["epcisBody"]["eventList"]
    assert first["quantityList"] == [
        {"epcClass": "https://id.gs1.org/01/00312345678906/10/AB12C34", "quantity": 1}
    ]
    assert "epcList" not in first and "medledger:ledgerEntry" not in first
    assert second["eventTime"] == "2026-11-21T08:00:00.000+08:00"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["entry"][8]["resource"].update(effectiveDateTime="2026-11-20"), "time of day"),
        (
            lambda d: d["entry"][8]["resource"].update(medicationReference={"reference": "#x"}),
            "no Medication",
        ),
        (lambda d: d["entry"][7]["resource"].update(code={"text": "x"}, extension=[]), "no GTIN"),
        (lambda d: d["entry"][7]["resource"].update(batch={}, extension=[]), "lot"),
    ],
)
def test_administrations_that_cannot_become_events(mutate: Any, message: str) -> None:
    doc = load(ADMIN)
    mutate(doc)
    with pytest.raises(AdaptError, match=message):
        build_events(doc, entry_hash_b64=None, location_gln_sgln=SGLN, now=NOW)


def test_locations_and_links() -> None:
    assert location_uri("6901234000023") == "https://id.gs1.org/414/6901234000023"
    assert location_uri("https://id.gs1.org/414/6901234000023/254/ward-3").endswith("ward-3")
    assert location_uri(SGLN) == SGLN
    for bad in (
        "6901234000024",
        "urn:epc:id:sgln:690123.00002.0",
        "Boao",
        "urn:epc:id:sgln:6901234.00002.a b",
    ):
        with pytest.raises(AdaptError):
            location_uri(bad)
    assert ledger_link(base64.b64encode(bytes(32)).decode()) == "ni:///sha-256;" + "A" * 43
    with pytest.raises(AdaptError):
        ledger_link(base64.b64encode(bytes(31)).decode())
    with pytest.raises(AdaptError):
        build_events(load(ADMIN), entry_hash_b64="!!", location_gln_sgln=SGLN, now=NOW)


# -- GS1 JSON Schema and JSON-LD ---------------------------------------------------------------


def test_emitted_documents_validate(validate: Any) -> None:
    assert validate(document()) == []
    offline = json.loads(adapt([ADMIN.read_bytes(), EVENT.read_bytes()], AdaptOptions(now=NOW)))
    assert validate(offline) == []


@pytest.mark.parametrize("example", examples(), ids=lambda p: p.name)
def test_gs1_examples_validate_with_the_same_code(validate: Any, example: Path) -> None:
    assert validate(load(example)) == []


def test_the_validator_rejects_what_the_schema_forbids(validate: Any) -> None:
    doc = document()
    event = doc["epcisBody"]["eventList"][0]
    event["action"] = "LOOK"
    event["eventTime"] = "2026-11-20 09:30"
    errors = validate(doc)
    assert any("action" in e for e in errors) and any("date-time" in e for e in errors)


def test_json_ld_expands_offline_with_every_term_defined(schema_dir: Path) -> None:
    from adapters.trace_schema import expand_offline

    (expanded,) = expand_offline(document(), schema_dir / "epcis-context.jsonld")
    (event,) = expanded["https://ref.gs1.org/epcis/epcisBody"][0][
        "https://ref.gs1.org/epcis/eventList"
    ]
    assert event["@type"] == ["https://ref.gs1.org/epcis/ObjectEvent"]
    assert event["@id"].startswith("ni:///sha-256;")
    assert event["https://ref.gs1.org/epcis/bizStep"] == [
        {"@id": "https://ref.gs1.org/cbv/BizStep-dispensing"}
    ]
    assert event["https://ref.gs1.org/epcis/disposition"] == [
        {"@id": "https://ref.gs1.org/cbv/Disp-dispensed"}
    ]
    assert event["https://ref.gs1.org/epcis/epcList"] == [
        {"@id": "https://id.gs1.org/01/00312345678906/21/7TK2PQ9R4M1X"}
    ]
    assert event["https://fhir.medledger.example/epcis/ledgerEntry"] == [
        {"@value": ledger_link(LEAF)}
    ]
    # JSON-LD drops terms it cannot map: every key of the compact event must survive.
    compact = document()["epcisBody"]["eventList"][0]
    assert len(event) == len(compact)


@pytest.mark.parametrize("example", examples(), ids=lambda p: p.name)
def test_gs1_examples_expand_offline(schema_dir: Path, example: Path) -> None:
    from adapters.trace_schema import expand_offline

    assert expand_offline(load(example), schema_dir / "epcis-context.jsonld")


def test_offline_expansion_fetches_nothing(schema_dir: Path) -> None:
    from pyld.jsonld import JsonLdError

    from adapters.trace_schema import expand_offline

    doc = {**document(), "@context": ["https://example.org/other-context.jsonld"]}
    with pytest.raises(JsonLdError):
        expand_offline(doc, schema_dir / "epcis-context.jsonld")


# -- no patient data ---------------------------------------------------------------------------


PHI = (
    "Ivanova",
    "Anna",
    "753108642",
    "BL2026110391",
    "1971-03-14",
    "+7 916",
    "Tverskaya",
    "王丽华",
    "陈静",
    "pt-ru-01",
    "female",
    "静脉滴注",
)


def test_no_patient_data_in_events() -> None:
    text = json.dumps(document(), ensure_ascii=False)
    for value in PHI:
        assert value not in text, value
    for event in document()["epcisBody"]["eventList"]:
        assert set(event) <= ALLOWED_KEYS


def test_an_event_has_no_field_that_could_hold_patient_data() -> None:
    assert [f.name for f in dataclasses.fields(DispensingEvent)] == [
        "event_time",
        "epcs",
        "epc_class",
        "location",
        "ledger_link",
    ]
    moment = datetime(2026, 11, 20, 9, 30, tzinfo=timezone(timedelta(hours=8)))
    with pytest.raises(AdaptError):  # a name is no GS1 Digital Link of a pack
        DispensingEvent(moment, ("Anna Ivanova",), None, SGLN, None)
    with pytest.raises(AdaptError):  # nor is free text in the serial position
        DispensingEvent(
            moment, ("https://id.gs1.org/01/00312345678906/21/Anna Ivanova",), None, SGLN, None
        )
    with pytest.raises(AdaptError):
        DispensingEvent(
            moment, (), "https://id.gs1.org/01/00312345678906/10/A", "Ward 3 bed 12", None
        )
    with pytest.raises(AdaptError):
        DispensingEvent(moment, (), "https://id.gs1.org/01/00312345678906/10/A", SGLN, "patient:x")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=30).map(lambda tail: "PHI-" + tail))
def test_no_text_from_the_bundle_reaches_an_event(secret: str) -> None:
    doc = load(ADMIN)
    resources = {e["resource"]["resourceType"]: e["resource"] for e in doc["entry"]}
    resources["Patient"]["name"] = [{"text": secret}]
    resources["Patient"]["identifier"][0]["value"] = secret
    resources["MedicationAdministration"]["note"] = [{"text": secret}]
    resources["MedicationAdministration"]["dosage"]["text"] = secret
    resources["Medication"]["code"]["text"] = secret
    resources["Practitioner"]["name"] = [{"text": secret}]
    out = build_events(doc, entry_hash_b64=LEAF, location_gln_sgln=SGLN, now=NOW)
    assert "PHI-" not in json.dumps(out, ensure_ascii=False)
    assert out == document()  # nothing outside the pack, time and place changes an event


# -- offline CLI and golden output -------------------------------------------------------------


def golden(name: str, data: bytes) -> None:
    path = GOLDEN / name
    if UPDATE_GOLDEN:
        path.write_bytes(data)
    assert data == path.read_bytes(), f"{name} differs; MEDLEDGER_UPDATE_GOLDEN=1 rewrites it"


def test_adapt_is_deterministic_and_matches_the_golden_file() -> None:
    out = adapt([ADMIN.read_bytes(), EVENT.read_bytes()], AdaptOptions(now=NOW))
    assert out == adapt([ADMIN.read_bytes(), EVENT.read_bytes()], AdaptOptions(now=NOW))
    # The adverse-event Bundle repeats the administration: one event, not two.
    assert len(json.loads(out)["epcisBody"]["eventList"]) == 1
    golden("lecheng-epcis.jsonld", out)


def test_cli_adapt_epcis(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonld"
    code = cli_main(
        [
            "adapt",
            "epcis",
            "--in",
            str(ADMIN),
            "--in",
            str(EVENT),
            "--now",
            "2026-11-28T10:00:00+08:00",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert out.read_bytes() == (GOLDEN / "lecheng-epcis.jsonld").read_bytes()


def without_gln(doc: dict[str, Any]) -> dict[str, Any]:
    """The Bundle with its GLN identifiers removed (a hospital that sends none)."""
    for e in doc["entry"]:
        if e["resource"]["resourceType"] in ("Location", "Organization"):
            e["resource"].pop("identifier", None)
    return doc


def test_a_bundle_without_a_gln_takes_the_site_location(validate: Any) -> None:
    # What --location GLN gives the adapter (and the registry's GLN gives the service).
    data = json.dumps(without_gln(load(ADMIN))).encode()
    with pytest.raises(AdaptError, match="no site location"):
        adapt([data], AdaptOptions(now=NOW))
    out = json.loads(adapt([data], AdaptOptions(now=NOW, location="6901234000030")))
    (event,) = out["epcisBody"]["eventList"]
    assert (
        event["readPoint"] == event["bizLocation"] == {"id": "https://id.gs1.org/414/6901234000030"}
    )
    assert validate(out) == []
    sgln = json.loads(adapt([data], AdaptOptions(now=NOW, location=SGLN)))
    assert sgln["epcisBody"]["eventList"][0]["readPoint"] == {"id": SGLN}


def test_the_bundles_own_gln_comes_before_the_site() -> None:
    doc = load(ADMIN)
    assert event_location(doc, "6901234000030") == "https://id.gs1.org/414/6901234000023"
    # Two Locations with a GLN: the Bundle cannot say which dispensed, the site can.
    second = copy.deepcopy(
        next(e for e in doc["entry"] if e["resource"]["resourceType"] == "Location")
    )
    second["resource"]["id"] = "loc-ward"
    second["resource"]["identifier"][0]["value"] = "6901234000047"
    doc["entry"].append(second)
    with pytest.raises(AdaptError, match="cannot tell which one"):
        event_location(doc)
    assert event_location(doc, "6901234000030") == "https://id.gs1.org/414/6901234000030"
    # A site that is no GLN is refused even when the Bundle would not need it.
    with pytest.raises(AdaptError, match="GLN"):
        adapt([ADMIN.read_bytes()], AdaptOptions(now=NOW, location="6901234000031"))


def test_cli_adapt_epcis_without_a_location(tmp_path: Path) -> None:
    doc = load(ADMIN)
    doc["entry"] = [
        e for e in doc["entry"] if e["resource"]["resourceType"] not in ("Location", "Organization")
    ]
    path = tmp_path / "no-location.json"
    path.write_text(json.dumps(copy.deepcopy(doc)), encoding="utf-8")
    assert (
        cli_main(["adapt", "epcis", "--in", str(path), "--now", "2026-11-28T10:00:00+08:00"]) == 3
    )


def test_cli_adapt_epcis_with_a_location(tmp_path: Path, validate: Any) -> None:
    doc = load(ADMIN)
    doc["entry"] = [
        e for e in doc["entry"] if e["resource"]["resourceType"] not in ("Location", "Organization")
    ]
    path, out = tmp_path / "no-location.json", tmp_path / "events.jsonld"
    path.write_text(json.dumps(doc), encoding="utf-8")
    argv = ["adapt", "epcis", "--in", str(path), "--now", "2026-11-28T10:00:00+08:00"]
    assert cli_main([*argv, "--location", "6901234000030", "--out", str(out)]) == 0
    written = json.loads(out.read_bytes())
    assert validate(written) == []
    (event,) = written["epcisBody"]["eventList"]
    assert event["bizLocation"] == {"id": "https://id.gs1.org/414/6901234000030"}
    assert cli_main([*argv, "--location", "6901234000031"]) == 3  # no GLN: bad check digit
