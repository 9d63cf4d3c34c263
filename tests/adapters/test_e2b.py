"""E2B(R3) ICSRs for the foreign marketing-authorisation holder.

Well-formed, deterministic (golden file), the reaction verbatim in Chinese with its English
translation, China as the country of the reaction, the drug as obtained abroad with its
authorisation and batch, and MedDRA only when the Bundle gave it. The ICH XSDs are not public
test data here: set MEDLEDGER_E2B_XSD_DIR to the ICH ``4_ICH_ICSR_Schema_Files`` directory (the
one holding ``multicacheschemas/``) to validate against them too.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from adapters.base import AdaptError, AdaptOptions
from adapters.e2b import adapt, batch_number, build_icsr, icsr_for_bundle
from exchange.cli.main import main as cli_main
from tests.paths import FIXTURES as TEST_FIXTURES
from tests.paths import GOLDEN as TEST_GOLDEN

FIXTURES = TEST_FIXTURES / "trace"
GOLDEN = TEST_GOLDEN / "trace"
EVENT = FIXTURES / "lecheng-rwd-adverse-event.json"
ADMIN = FIXTURES / "lecheng-rwd-administration.json"
NOW = datetime(2026, 11, 28, 10, 0, tzinfo=timezone(timedelta(hours=8)))
UPDATE_GOLDEN = os.environ.get("MEDLEDGER_UPDATE_GOLDEN") == "1"
NS = {"v3": "urn:hl7-org:v3", "xsi": "http://www.w3.org/2001/XMLSchema-instance"}
ICH = "2.16.840.1.113883.3.989.2.1"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


def load() -> dict[str, Any]:
    return json.loads(EVENT.read_text(encoding="utf-8"))


def icsr(doc: dict[str, Any] | None = None) -> bytes:
    return build_icsr(
        doc or load(),
        now=NOW,
        message_id="MEDLEDGER-B-000042",
        sender_id="6901234000016",
        receiver_id="081234567",
    )


def tree(data: bytes) -> Any:
    # lxml for XPath 1.0 (nested predicates); the adapter itself writes with the standard library.
    return etree.fromstring(data)


def one(root: Any, path: str) -> Any:
    found = root.xpath(path, namespaces=NS)
    assert len(found) == 1, (path, len(found))
    return found[0]


def observation(root: Any, code: str) -> Any:
    """The reaction's E.i sub-observation with the given ICH observation code."""
    reaction = one(root, ".//v3:primaryRole/v3:subjectOf2/v3:observation[v3:code[@code='29']]")
    return one(reaction, f"v3:outboundRelationship2/v3:observation[v3:code[@code='{code}']]")


def ae(doc: dict[str, Any]) -> dict[str, Any]:
    return next(
        e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "AdverseEvent"
    )


# -- structure ---------------------------------------------------------------------------------


def test_well_formed_batch_with_one_message() -> None:
    data = icsr()
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    root = tree(data)
    assert root.tag == "{urn:hl7-org:v3}MCCI_IN200100UV01"
    assert one(root, f"v3:id[@root='{ICH}.3.22']").get("extension") == "MEDLEDGER-B-000042"  # N.1.2
    assert one(root, f"v3:name[@codeSystem='{ICH}.1.1']").get("code") == "1"  # N.1.1
    assert (
        one(root, f"v3:sender/v3:device/v3:id[@root='{ICH}.3.13']").get("extension")
        == "6901234000016"
    )
    assert (
        one(root, f"v3:receiver/v3:device/v3:id[@root='{ICH}.3.14']").get("extension")
        == "081234567"
    )
    message = one(root, "v3:PORR_IN049016UV")
    case_id = one(message, f".//v3:investigationEvent/v3:id[@root='{ICH}.3.1']").get("extension")
    assert case_id == "CN-6901234000016-AE20260042"  # C.1.1: country-sender-report number
    assert one(message, f"v3:id[@root='{ICH}.3.1']").get("extension") == case_id  # N.2.r.1 = C.1.1
    stamp = "20261128100000+0800"
    assert one(root, "v3:creationTime").get("value") == stamp  # N.1.5
    assert one(message, "v3:creationTime").get("value") == stamp  # N.2.r.4
    assert one(message, "v3:controlActProcess/v3:effectiveTime").get("value") == stamp  # C.1.2


def test_deterministic_and_golden() -> None:
    first = adapt([EVENT.read_bytes()], AdaptOptions(now=NOW, control_id="MEDLEDGER-B-000042"))
    assert first == adapt(
        [EVENT.read_bytes()], AdaptOptions(now=NOW, control_id="MEDLEDGER-B-000042")
    )
    assert first == icsr()  # the CLI path finds the same sender and receiver
    path = GOLDEN / "lecheng-icsr.xml"
    if UPDATE_GOLDEN:
        path.write_bytes(first)
    assert first == path.read_bytes(), "MEDLEDGER_UPDATE_GOLDEN=1 rewrites the golden file"


# -- content -----------------------------------------------------------------------------------


def test_reaction_in_chinese_with_its_english_translation() -> None:
    root = tree(icsr())
    reaction = one(root, ".//v3:primaryRole/v3:subjectOf2/v3:observation[v3:code[@code='29']]")
    native = one(reaction, "v3:value/v3:originalText")
    assert native.text == "输注开始后约30分钟出现全身荨麻疹伴呼吸困难"  # E.i.1.1a
    assert native.get("language") == "zho"  # E.i.1.1b, ISO 639-2
    english = one(observation(root, "30"), "v3:value")  # E.i.1.2
    assert english.text and english.text.startswith("Generalised urticaria")
    country = one(reaction, "v3:location/v3:locatedEntity/v3:locatedPlace/v3:code")
    assert (country.get("code"), country.get("codeSystem")) == ("CN", "1.0.3166.1.2.2")  # E.i.9
    assert one(reaction, "v3:effectiveTime/v3:low").get("value") == "20261120100500+0800"  # E.i.4


def test_no_meddra_code_unless_given() -> None:
    root = tree(icsr())
    value = one(root, ".//v3:observation[v3:code[@code='29']]/v3:value")
    assert value.get("code") is None and value.get("codeSystem") is None
    assert b"2.16.840.1.113883.6.163" not in icsr()
    doc = load()
    ae(doc)["event"]["coding"] = [
        {
            "system": "http://terminology.hl7.org/CodeSystem/mdr",
            "version": "27.1",
            "code": "10046735",
        }
    ]
    value = one(tree(icsr(doc)), ".//v3:observation[v3:code[@code='29']]/v3:value")
    assert (value.get("code"), value.get("codeSystem"), value.get("codeSystemVersion")) == (
        "10046735",
        "2.16.840.1.113883.6.163",
        "27.1",
    )


def test_seriousness_and_outcome() -> None:
    root = tree(icsr())
    assert one(observation(root, "33"), "v3:value").get("value") == "true"  # hospitalisation
    for code in ("34", "21", "35", "12", "26"):
        assert one(observation(root, code), "v3:value").get("nullFlavor") == "NI"
    outcome = one(observation(root, "27"), "v3:value")
    assert (outcome.get("code"), outcome.get("codeSystem")) == ("2", f"{ICH}.1.11")  # recovering
    expedited = one(root, ".//v3:observationEvent[v3:code[@code='23']]/v3:value")
    assert expedited.get("value") == "true"  # C.1.7

    doc = load()
    ae(doc)["seriousness"]["coding"] = [
        {
            "system": "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness",
            "code": "Non-serious",
        }
    ]
    expedited = one(tree(icsr(doc)), ".//v3:observationEvent[v3:code[@code='23']]/v3:value")
    assert expedited.get("value") == "false"

    doc = load()
    ae(doc)["outcome"]["coding"][0]["code"] = "fatal"
    ae(doc)["seriousness"]["coding"] = []
    root = tree(icsr(doc))
    assert one(observation(root, "34"), "v3:value").get("value") == "true"  # results in death
    assert one(observation(root, "27"), "v3:value").get("code") == "5"


def test_drug_as_obtained_abroad_with_authorisation_and_batch() -> None:
    root = tree(icsr())
    drug = one(root, ".//v3:organizer[v3:code[@code='4']]/v3:component/v3:substanceAdministration")
    kind = one(drug, "v3:consumable/v3:instanceOfKind/v3:kindOfProduct")
    assert one(kind, "v3:name").text.startswith("Exemplumab")  # G.k.2.2
    approval = one(kind, "v3:asManufacturedProduct/v3:subjectOf/v3:approval")
    assert one(approval, f"v3:id[@root='{ICH}.3.4']").get("extension") == "BLA 761234"  # G.k.3.1
    assert one(approval, ".//v3:territory/v3:code").get("code") == "US"  # G.k.3.2
    assert one(approval, ".//v3:playingOrganization/v3:name").text == "Northwind Biologics, Inc."
    obtained = one(drug, "v3:consumable/v3:instanceOfKind/v3:subjectOf/v3:productEvent")
    assert one(obtained, ".//v3:addr/v3:country").text == "US"  # G.k.2.4
    dosing = one(drug, "v3:outboundRelationship2[@typeCode='COMP']/v3:substanceAdministration")
    assert one(dosing, ".//v3:lotNumberText").text == "AB12C34"  # G.k.4.r.7
    assert one(dosing, "v3:routeCode").get("code") == "042"  # intravenous
    assert (
        one(dosing, "v3:doseQuantity").get("value"),
        one(dosing, "v3:doseQuantity").get("unit"),
    ) == ("200", "mg")
    info = one(drug, "v3:outboundRelationship2[@typeCode='REFR']/v3:observation/v3:value").text
    assert "(01)00312345678906(17)270630(10)AB12C34(21)7TK2PQ9R4M1X" in info  # G.k.11
    assert "83741290012345678901" in info and "琼特药审〔2026〕0158号" in info
    role = one(root, ".//v3:causalityAssessment[v3:code[@code='20']]/v3:value")
    assert role.get("code") == "1"  # G.k.1 suspect
    ref = one(root, ".//v3:causalityAssessment/v3:subject2/v3:productUseReference/v3:id").get(
        "root"
    )
    assert ref == one(drug, "v3:id").get("root")


def test_sex_and_age_sent_names_masked() -> None:
    data = icsr()
    root = tree(data)
    player = one(root, ".//v3:primaryRole/v3:player1")
    assert one(player, "v3:name").get("nullFlavor") == "MSK"  # D.1
    assert one(player, "v3:administrativeGenderCode").get("code") == "2"  # D.5
    age = one(root, ".//v3:primaryRole/v3:subjectOf2/v3:observation[v3:code[@code='3']]/v3:value")
    assert (age.get("value"), age.get("unit"), age.get(XSI_TYPE)) == ("55", "a", "PQ")  # D.2.2
    for value in (
        "Ivanova",
        "Anna",
        "753108642",
        "BL2026110391",
        "1971-03-14",
        "王丽华",
        "Tverskaya",
    ):
        assert value.encode() not in data, value
    reporter = one(root, ".//v3:assignedPerson[v3:asQualifiedEntity]")
    assert one(reporter, "v3:asQualifiedEntity/v3:code").get("code") == "1"  # physician
    assert one(reporter, "v3:asLocatedEntity/v3:location/v3:code").get("code") == "CN"  # C.2.r.3


# -- as the service renders it ---------------------------------------------------------------


def test_the_service_needs_only_the_bytes_and_the_clock() -> None:
    # GET /fhir/Bundle/{id}/$e2b has the stored bytes and its clock: the parties come from the
    # Bundle, the batch number from the bytes and the time.
    data = EVENT.read_bytes()
    rendered = icsr_for_bundle(data, now=NOW)
    assert (rendered.sender, rendered.receiver, rendered.cases) == ("6901234000016", "081234567", 1)
    assert rendered.batch_number == batch_number([data], NOW)
    assert rendered == icsr_for_bundle(data, now=NOW)  # deterministic
    assert rendered.xml == adapt([data], AdaptOptions(now=NOW, control_id=rendered.batch_number))
    root = tree(rendered.xml)
    assert one(root, "v3:id").get("extension") == rendered.batch_number  # N.1.2
    later = icsr_for_bundle(data, now=NOW + timedelta(minutes=1))
    assert later.batch_number != rendered.batch_number  # a new transmission, a new batch
    # The fixed batch number of the golden file gives the golden bytes.
    fixed = icsr_for_bundle(data, now=NOW, batch="MEDLEDGER-B-000042")
    assert fixed.xml == (GOLDEN / "lecheng-icsr.xml").read_bytes()


def test_the_served_bundle_with_its_id_and_meta_gives_the_same_report() -> None:
    # GET /fhir/Bundle/{id} serves the stored bytes with the server's id and meta spliced in.
    doc = load()
    del doc["id"]
    data = json.dumps(doc, ensure_ascii=False).encode()
    meta = b'"id": "b-41", "meta": {"versionId": "1", "lastUpdated": "2026-11-20T17:00:00Z"}, '
    served = data.replace(b"{", b"{" + meta, 1)
    a = icsr_for_bundle(data, now=NOW, batch="B-1")
    b = icsr_for_bundle(served, now=NOW, batch="B-1")
    assert a.xml == b.xml


def test_batch_numbers() -> None:
    one_input = batch_number([b"a", b"b"])
    assert one_input == batch_number([b"a", b"b"]) != batch_number([b"ab"])  # length-prefixed
    assert len(one_input) <= 100 and one_input.startswith("MEDLEDGER-")
    assert batch_number([b"a"], NOW) != batch_number([b"a"])


def test_the_service_refuses_what_is_no_adverse_event_report() -> None:
    with pytest.raises(AdaptError, match="no AdverseEvent"):
        icsr_for_bundle(ADMIN.read_bytes(), now=NOW)
    with pytest.raises(AdaptError, match="not JSON"):
        icsr_for_bundle(b"{", now=NOW)
    doc = load()
    doc["entry"] = [e for e in doc["entry"] if e["resource"].get("id") != "org-mah-northwind"]
    with pytest.raises(AdaptError, match="holder"):
        icsr_for_bundle(json.dumps(doc).encode(), now=NOW)


# -- refusals and the CLI ----------------------------------------------------------------------


def test_refusals() -> None:
    with pytest.raises(AdaptError, match="no AdverseEvent"):
        build_icsr(
            json.loads(ADMIN.read_text()), now=NOW, message_id="B1", sender_id="S", receiver_id="R"
        )
    doc = load()
    del ae(doc)["event"]["text"]
    with pytest.raises(AdaptError, match="E.i.1.1a"):
        icsr(doc)
    doc = load()
    ae(doc)["suspectEntity"] = [{"instance": {"reference": "Device/none"}}]
    with pytest.raises(AdaptError, match="suspect Medication"):
        icsr(doc)
    with pytest.raises(AdaptError, match="sender identifier"):
        build_icsr(load(), now=NOW, message_id="B1", sender_id="x" * 61, receiver_id="R")
    with pytest.raises(AdaptError, match="UTC offset"):
        build_icsr(
            load(), now=datetime(2026, 11, 28), message_id="B1", sender_id="S", receiver_id="R"
        )


def test_cli_adapt_e2b(tmp_path: Path) -> None:
    out = tmp_path / "icsr.xml"
    args = ["adapt", "e2b", "--in", str(EVENT), "--now", "2026-11-28T10:00:00+08:00"]
    assert cli_main([*args, "--control-id", "MEDLEDGER-B-000042", "--out", str(out)]) == 0
    assert out.read_bytes() == (GOLDEN / "lecheng-icsr.xml").read_bytes()
    assert cli_main(["adapt", "e2b", "--in", str(ADMIN), "--now", "2026-11-28T10:00:00+08:00"]) == 3


def test_validates_against_the_ich_schemas_when_available() -> None:
    root = os.environ.get("MEDLEDGER_E2B_XSD_DIR")
    if not root:
        pytest.skip("MEDLEDGER_E2B_XSD_DIR not set: the ICH E2B(R3) XSDs are not public test data")
    schema = etree.XMLSchema(
        etree.parse(str(Path(root) / "multicacheschemas" / "MCCI_IN200100UV01.xsd"))
    )
    document = etree.fromstring(icsr())
    assert schema.validate(document), schema.error_log


@pytest.mark.parametrize("target", ["e2b", "epcis", "ips", "hl7v2"])
def test_cli_adapt_refuses_a_number_python_cannot_read(
    tmp_path: Path, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Valid JSON, but an integer longer than Python converts: every adapter reads Bundle files
    # with the one strict reader, which refuses it as malformed input, not with a traceback.
    path = tmp_path / "long-number.json"
    path.write_bytes(b'{"resourceType": "Bundle", "total": ' + b"1" * 5000 + b"}")
    args = ["adapt", target, "--in", str(path), "--now", "2026-11-28T10:00:00+08:00"]
    assert cli_main(args) == 3
    assert "input 1: not JSON" in capsys.readouterr().err
