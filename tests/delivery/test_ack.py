"""ACKs: ours read back by our reader and by python-hl7; theirs read; MSH read from anything."""

from __future__ import annotations

from datetime import UTC, datetime

import hl7
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.delivery.ack import (
    ERROR_CODES,
    ErrorLocation,
    Header,
    MalformedAck,
    Problem,
    build_ack,
    parse_ack,
    read_header,
)
from exchange.delivery.result import Outcome

NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
MESSAGE = (
    b"MSH|^~\\&|LIS^1.2.3^ISO|BLIH|MEDLEDGER|CN-HUB|20261128100000+0800||ORU^R01^ORU_R01|"
    b"C-77|P|2.5.1|||AL|NE||UNICODE UTF-8\rPID|1||123\r"
)


def test_header_of_a_message() -> None:
    header = read_header(MESSAGE)
    assert header == Header(
        sending_application=("LIS", "1.2.3", "ISO"),
        sending_facility=("BLIH",),
        receiving_application=("MEDLEDGER",),
        receiving_facility=("CN-HUB",),
        message_code="ORU",
        trigger="R01",
        control_id="C-77",
        processing_id="P",
        version="2.5.1",
        charset="UNICODE UTF-8",
    )


def test_our_ack_answers_the_sender_and_python_hl7_reads_it() -> None:
    raw = build_ack(
        read_header(MESSAGE),
        "AE",
        control_id="ACK-1",
        now=NOW,
        text="OBX-5 is not a number",
        problems=(Problem(102, "OBX-5: 'x' is not a number", ErrorLocation("OBX", 2, 5, None, 1)),),
    )
    assert raw.endswith(b"\r") and b"\n" not in raw
    theirs = hl7.parse(raw.decode())
    msh = theirs.segment("MSH")
    # Addressed back: our MSH-3/4 are their MSH-5/6, their MSH-3/4 are our MSH-5/6.
    assert (str(msh(3)), str(msh(4)), str(msh(5)), str(msh(6))) == (
        "MEDLEDGER",
        "CN-HUB",
        "LIS^1.2.3^ISO",
        "BLIH",
    )
    assert (str(msh(7)), str(msh(9)), str(msh(10)), str(msh(12))) == (
        "20261128020000+0000",
        "ACK^R01^ACK",
        "ACK-1",
        "2.5.1",
    )
    err = theirs.segment("ERR")
    assert str(err(2)) == "OBX^2^5^^1" and str(err(3)) == "102^Data type error^HL70357"
    assert str(err(4)) == "E"
    ours = parse_ack(raw, control_id="C-77")
    assert (ours.code, ours.text, ours.outcome) == ("AE", "OBX-5 is not a number", Outcome.RETRY)
    assert ours.errors[0].location == "OBX^2^5^^1" and ours.errors[0].code == "102"


printable = st.text(
    st.characters(categories=("L", "N", "P", "S", "Zs"), max_codepoint=0x9FFF),
    min_size=1,
    max_size=100,
)
# Each example builds an hl7apy message: a few dozen cover the shapes.
few = settings(max_examples=40, deadline=None)


@few
@given(
    control_id=st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20
    ),
    text=printable,
    code=st.sampled_from(["AA", "AE", "AR", "CA", "CE", "CR"]),
    error=st.sampled_from(sorted(ERROR_CODES)),
)
def test_any_ack_we_build_reads_back(control_id: str, text: str, code: str, error: int) -> None:
    header = Header(
        sending_facility=("BLIH",),
        message_code="ADT",
        trigger="A08",
        control_id=control_id,
        processing_id="P",
    )
    raw = build_ack(
        header,
        code,
        control_id="A",
        now=NOW,
        text=text,
        problems=(Problem(error, text, ErrorLocation("PID", 1, 3)),),
    )
    ack = parse_ack(raw, control_id=control_id)
    assert ack.code == code and ack.control_id == control_id
    assert ack.text == text[:80].strip()  # MSA-3 holds 80 characters
    assert ack.errors[0].diagnostic == text.strip()
    assert ack.errors[0].code == str(error) and ack.errors[0].location == "PID^1^3"


@given(st.binary(max_size=400))
def test_reading_a_header_never_fails(data: bytes) -> None:
    read_header(data)
    read_header(b"MSH" + data)


@few
@given(st.binary(max_size=200))
def test_an_ack_to_anything_can_be_built(data: bytes) -> None:
    header = read_header(b"MSH|^~\\&|" + data)
    raw = build_ack(
        header,
        "AR",
        control_id="X",
        now=NOW,
        problems=(Problem(100, "unreadable", ErrorLocation("MSH")),),
    )
    assert _msa2(raw) == _msa2(build_ack(header, "AA", control_id="Y", now=NOW))
    assert parse_ack(raw, control_id=_msa2(raw)).code == "AR"


@given(st.binary(max_size=300), st.text(max_size=5))
def test_reading_an_answer_fails_only_as_malformed_ack(data: bytes, control_id: str) -> None:
    for raw in (data, b"MSH|^~\\&|" + data, b"MSH|^~\\&|\rMSA|AA|" + data):
        try:
            parse_ack(raw, control_id=control_id)
        except MalformedAck:
            pass


def _msa2(raw: bytes) -> str:
    line = next(s for s in raw.decode().split("\r") if s.startswith("MSA|"))
    fields = line.split("|")
    return fields[2] if len(fields) > 2 else ""


def test_a_long_control_id_is_still_repeated_exactly() -> None:
    """v2.5.1 gives MSH-10 20 characters; senders use more, and the ACK must echo them."""
    long_id = "2.16.840.1.114222.4.3.3.5.1.2-20120314235954.325"
    header = Header(
        sending_facility=("LAB",),
        message_code="ORU",
        trigger="R01",
        control_id=long_id,
        processing_id="T",
    )
    ack = parse_ack(build_ack(header, "AR", control_id="A", now=NOW), control_id=long_id)
    assert ack.control_id == long_id


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "does not start with MSH"),
        (b"HELLO", "does not start with MSH"),
        (b"MSH|^~\\&|A|B\r", "no MSA"),
        (b"MSH|^~\\&|A|B\rMSA|OK|C-77\r", "not an acknowledgement code"),
        (b"MSH|^~\\&|A|B\rMSA|AA|C-78\r", "acknowledges another message"),
    ],
)
def test_what_is_not_an_ack_of_ours(raw: bytes, why: str) -> None:
    with pytest.raises(MalformedAck, match=why) as caught:
        parse_ack(raw, control_id="C-77")
    assert caught.value.raw == raw


def test_their_ack_with_other_delimiters_and_lf_segments() -> None:
    raw = b"MSH#*~\\&#SYS#FAC\nMSA#CA#C-77#stored\nERR##PID*1*3#101*Required*HL70357#W\n"
    ack = parse_ack(raw, control_id="C-77")
    assert (ack.code, ack.text, ack.outcome) == ("CA", "stored", Outcome.DELIVERED)
    assert (ack.errors[0].location, ack.errors[0].severity) == ("PID^1^3", "W")


def test_codes_outside_the_tables_are_refused() -> None:
    with pytest.raises(ValueError, match="0357"):
        build_ack(Header(), "AE", control_id="A", problems=(Problem(999, "x"),))
    with pytest.raises(ValueError, match="ack code"):
        build_ack(Header(), "OK", control_id="A")
