"""ledger/untrusted.py, and every parser of untrusted input on the auditor's side built on it.

The property: whatever the bytes, each parser returns or raises its own typed error (which the
CLI maps to a documented exit code), never anything else: no ValueError from int() of a
5,000-digit literal, no RecursionError from deep nesting, no UnicodeEncodeError from a lone
surrogate or non-ASCII base64.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.audit import Evidence
from ledger.audit.state import StateError, parse_state
from ledger.checkpoint import CheckpointError, parse_checkpoint
from ledger.entry import EntryError, parse_entry
from ledger.note import NoteError
from ledger.note import split as split_note
from ledger.receipt import ReceiptError, parse_receipt
from ledger.untrusted import (
    MAX_DEPTH,
    InputRejected,
    read_json,
    read_stream,
    read_uint64,
)
from ledger.verify import MalformedInput

from ..audit_helpers import build_log, signer
from ..hostile_helpers import bodies, json_texts, mutated, mutated_member, run

MiB = 1 << 20


# --- the JSON reader -------------------------------------------------------------------------


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    "data,why",
    [
        (b"[" + b"9" * 5000 + b"]", "digits"),
        (b"[" + b"1" * 21 + b"]", "digits"),
        (b"[-" + b"1" * 21 + b"]", "digits"),
        (_nested(MAX_DEPTH + 1), "deeper"),
        (b"[" * 100_000, "deeper"),
        (b'{"a": ' * 17 + b"1" + b"}" * 17, "deeper"),
        (b"[1.5]", "not an integer"),
        (b"[1e3]", "not an integer"),
        (b"[NaN]", "not a JSON number"),
        (b"[-Infinity]", "not a JSON number"),
        (b'{"a": 1, "a": 1}', "repeats the key"),
        (b'["\\ud800"]', "surrogate"),
        (b'{"\\udfff": 1}', "surrogate"),
        (b'["\xff"]', "not UTF-8"),
        (b'\xef\xbb\xbf"x"', "byte order mark"),
        (b"", "not JSON"),
        (b"[1,]", "not JSON"),
        (b'"unterminated [[[[', "not JSON"),
        (b"x" * (MiB + 1), "more than"),
    ],
)
def test_refused(data: bytes, why: str) -> None:
    with pytest.raises(InputRejected, match=why):
        read_json(data, MiB)


@pytest.mark.parametrize(
    "data,value",
    [
        (_nested(MAX_DEPTH), json.loads(_nested(MAX_DEPTH))),
        (b"[" + b"9" * 20 + b"]", [99_999_999_999_999_999_999]),
        (b'"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\"[[["', "[" * 44 + '"[[['),
        (b'"\\ud83d\\ude00"', "\N{GRINNING FACE}"),
        (b'{"a": [true, false, null, -0, "x"]}', {"a": [True, False, None, 0, "x"]}),
    ],
)
def test_read(data: bytes, value: object) -> None:
    assert read_json(data, MiB) == value


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**19), 10**19)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"])), inner, max_size=4)
    ),
    max_leaves=30,
)


def _depth(v: object) -> int:
    if isinstance(v, list):
        return 1 + max(map(_depth, v), default=0)
    if isinstance(v, dict):
        return 1 + max(map(_depth, v.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(_values)
def test_strict_json_reads_as_json_does(value: object) -> None:
    data = json.dumps(value).encode()
    if _depth(value) <= MAX_DEPTH:
        assert read_json(data, len(data)) == value


@settings(max_examples=400, deadline=None)
@given(bodies)
def test_any_bytes_are_read_as_json_does_or_refused(data: bytes) -> None:
    try:
        value = read_json(data, MiB)
    except InputRejected:
        return
    assert value == json.loads(data)


def test_read_stream_stops_past_the_limit() -> None:
    stream = io.BytesIO(bytes(10 * MiB))
    with pytest.raises(InputRejected, match="more than"):
        read_stream(stream, MiB)
    assert stream.tell() == MiB + 1
    assert read_stream(io.BytesIO(b"abc"), 3) == b"abc"
    with open("/dev/zero", "rb") as endless, pytest.raises(InputRejected):
        read_stream(endless, MiB)


@pytest.mark.parametrize("text", ["0", "1", "18446744073709551615", "123"])
def test_uint64_read(text: str) -> None:
    assert read_uint64(text) == int(text)


@pytest.mark.parametrize(
    "text", ["", "01", "-1", "+1", "1.0", " 1", "\uff11", "18446744073709551616", "9" * 5000]
)
def test_uint64_refused(text: str) -> None:
    with pytest.raises(InputRejected):
        read_uint64(text)


# --- the text and JSON parsers on top of it ----------------------------------------------------


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("samples")
    s = signer()
    log = build_log(f"sqlite:///{d / 'l.db'}", 40, s)
    receipt = log.receipt(17)
    entry = log.entries(17, 18)[0]
    log.close()
    log.engine.dispose()
    state = d / "state.json"
    code, text = run(
        ["audit", "--db", str(d / "l.db"), "--key", s.verifier.vkey(), "--state", str(state)]
    )
    assert code == 0, text
    checkpoint = receipt.partition("\n\n")[2]
    return {
        "receipt": receipt.encode(),
        "checkpoint": checkpoint.encode(),
        "entry": entry,
        "state": state.read_bytes(),
        "vkey": s.verifier.vkey().encode(),
    }


_FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


@_FUZZ
@given(data=st.data())
def test_receipt_parser_raises_only_receipt_errors(samples: dict[str, bytes], data) -> None:
    text = _text(mutated(samples["receipt"], data))
    try:
        r = parse_receipt(text)
    except ReceiptError:
        return
    assert r.index >= 0 and all(len(h) == 32 for h in r.proof)


@_FUZZ
@given(data=st.data())
def test_checkpoint_and_note_parsers_raise_only_their_errors(
    samples: dict[str, bytes], data
) -> None:
    note = _text(mutated(samples["checkpoint"], data))
    try:
        body, _ = split_note(note)
    except NoteError:
        return
    try:
        cp = parse_checkpoint(body)
    except CheckpointError:
        return
    assert 0 <= cp.size < 2**64 and len(cp.root) == 32


def _mutated_entry(entry: bytes, data: st.DataObject) -> bytes:
    """`entry` with one of its fields (a line, once split at the commas) mutated."""
    return mutated(entry.replace(b",", b",\n"), data).replace(b",\n", b",")


@_FUZZ
@given(data=st.data())
def test_entry_parser_raises_only_entry_errors(samples: dict[str, bytes], data) -> None:
    how = data.draw(st.sampled_from(["mutated", "json", "bytes"]))
    if how == "mutated":
        raw = _mutated_entry(samples["entry"], data)
    else:
        raw = data.draw(json_texts.map(str.encode) if how == "json" else bodies)
    try:
        parse_entry(raw)
    except EntryError:
        pass


@_FUZZ
@given(data=st.data())
def test_state_parser_raises_only_state_errors(samples: dict[str, bytes], data) -> None:
    from ledger.note import Verifier

    key = Verifier.from_vkey(samples["vkey"].decode())
    try:
        how = data.draw(st.sampled_from([mutated, mutated_member]))
        parse_state(how(samples["state"], data), Path("state.json"), [key])
    except StateError:
        pass


def _as_evidence(text: str) -> bytes:
    """A JSON object's text made to claim it is evidence, so that the field checks run."""
    if text.startswith("{") and text != "{}":
        return b'{"format": "medledger-evidence/v1", ' + text[1:].encode()
    return text.encode()


@_FUZZ
@given(data=st.one_of(bodies, json_texts.map(_as_evidence)))
def test_evidence_parser_raises_only_malformed_input(data: bytes) -> None:
    try:
        Evidence.from_json(data)
    except MalformedInput:
        pass
