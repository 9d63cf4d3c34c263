"""What recipients receive: built by the adapters, the same bytes for the same inputs."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fhir.resources.R4B.bundle import Bundle

from adapters.base import AdaptError
from adapters.hl7v2.read import read_message
from exchange.delivery.messages import ips_document, v2_message
from tests.delivery.fixtures import NOW, boao_kr, shanghai_ru


def test_the_ips_document_and_its_identifier() -> None:
    doc = ips_document(boao_kr(), now=NOW, document_id="dlv-17")
    parsed = json.loads(doc.body)
    assert parsed["type"] == "document" and parsed["id"] == "dlv-17"
    assert doc.identifier == (parsed["identifier"]["system"], parsed["identifier"]["value"])
    assert doc.identifier[1].startswith("urn:uuid:")
    assert (
        Bundle.model_validate_json(doc.body).entry[0].resource.get_resource_type() == "Composition"
    )
    assert b"\n" not in doc.body  # compact canonical JSON
    again = ips_document(boao_kr(), now=NOW, document_id="dlv-17")
    assert again == doc and again.body == doc.body
    other = ips_document(boao_kr(), now=NOW, document_id="dlv-18")
    assert other.identifier != doc.identifier


@pytest.mark.parametrize("kind", ["ORU_R01", "MDM_T02", "ADT_A08", "ADT^A08"])
def test_v2_messages_carry_the_callers_control_id_and_repeat_exactly(kind: str) -> None:
    data = v2_message(shanghai_ru(), kind, now=NOW, control_id="DLV-42")
    assert data.endswith(b"\r") and b"\n" not in data
    read = read_message(data.decode("utf-8"), strict=True)  # hl7apy STRICT validation
    assert read.control_id == "DLV-42" and read.version == "2.5.1"
    assert data == v2_message(shanghai_ru(), kind, now=NOW, control_id="DLV-42")
    later = v2_message(shanghai_ru(), kind, now=NOW + timedelta(seconds=1), control_id="DLV-42")
    assert later != data  # the clock is an input: the outbox keeps the bytes it first built


def test_receiving_application_and_facility_go_in_msh_5_and_6() -> None:
    data = v2_message(
        boao_kr(),
        "ORU_R01",
        now=NOW,
        control_id="D1",
        receiving_application="EPIC",
        receiving_facility="SNUH",
    )
    assert data.split(b"|")[4:6] == [b"EPIC", b"SNUH"]


def test_only_the_messages_an_mllp_recipient_takes() -> None:
    with pytest.raises(ValueError, match="ORU_R01, MDM_T02, ADT_A08"):
        v2_message(boao_kr(), "RDS_O13", now=NOW, control_id="D1")
    with pytest.raises(AdaptError, match="control id"):
        v2_message(boao_kr(), "ORU_R01", now=NOW, control_id="x" * 21)
