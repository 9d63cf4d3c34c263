"""No PHI on the log (issue 9, done-when 1).

Bundles generated with random marker strings in patient names, identifiers, addresses,
narratives, free text and base64 attachments are submitted, read, transformed (an access entry)
and refused (a bad variant); then the markers, raw, base64 (at every alignment) or hex, appear
nowhere in the entries, checkpoints, receipts, access entries, server logs, or any column of
any table of the database (nor in the SQLite file's raw pages) — the Bundle bytes exist only
as vault ciphertext.
"""

from __future__ import annotations

import base64
import json
import logging
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api_helpers import Api, open_api, stored_values_by_table

markers = st.text(string.ascii_letters, min_size=14, max_size=24).map(lambda s: "Zq" + s)


def encodings(marker: str) -> list[bytes]:
    """The marker raw, in hex, and the stable middle of its base64 at each of the 3 alignments
    it can have inside a longer base64 text."""
    raw = marker.encode()
    found = [raw, raw.hex().encode(), raw.hex().upper().encode()]
    for pad in range(3):
        b64 = base64.b64encode(b"\0" * pad + raw)
        start = 4 if pad else 0
        found.append(b64[start:-4])
    return found


def bundle_with(m: list[str]) -> bytes:
    """A record Bundle carrying each marker somewhere a patient's data can be."""
    attachment = base64.b64encode(f"Discharge letter for {m[8]}, bed 4".encode()).decode()
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "text": {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml">Patient {m[0]}</div>',
        },
        "identifier": [
            {"system": "urn:example:mrn", "value": m[1]},
            {"system": "urn:example:passport", "value": m[2]},
        ],
        "name": [{"family": m[3], "given": [m[4]]}],
        "telecom": [{"system": "email", "value": f"{m[5]}@example.org"}],
        "address": [{"line": [m[6]], "city": "Boao"}],
    }
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": m[7]},
        "subject": {"reference": "urn:uuid:00000000-0000-0000-0000-000000000001"},
        "valueString": m[9],
        "note": [{"text": m[10]}],
    }
    document = {
        "resourceType": "DocumentReference",
        "status": "current",
        "description": m[11],
        "content": [
            {
                "attachment": {
                    "contentType": "text/plain",
                    "data": attachment,
                    "title": m[12],
                }
            }
        ],
    }
    doc = {
        "resourceType": "Bundle",
        "identifier": {"system": "urn:example:letters", "value": m[13]},
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:uuid:00000000-0000-0000-0000-00000000000{i + 1}", "resource": r}
            for i, r in enumerate((patient, observation, document))
        ],
    }
    return json.dumps(doc).encode()


def stored_values(api: Api) -> list[bytes]:
    """Every value of every column of every table of the log's database, as bytes."""
    by_table = stored_values_by_table(api)
    assert "exchange_bundles" in by_table and "ledger_entries" in by_table, list(by_table)
    return [v for values in by_table.values() for v in values]


def log_texts(api: Api, answers: list[dict[str, object]]) -> list[bytes]:
    """What the log publishes: entries, the checkpoint, every receipt (stored and answered)."""
    size = api.log_size()
    out = [api.client.get("/v1/log/checkpoint").content]
    out.append(api.client.get("/v1/log/entries", params={"start": 0, "end": size}).content)
    for b64 in api.client.get("/v1/log/entries", params={"start": 0, "end": size}).json():
        out.append(base64.b64decode(b64))
    for i in range(size):
        out.append(api.client.get(f"/v1/log/entries/{i}/receipt").content)
    out.extend(str(a["receipt"]).encode() for a in answers)
    return out


def test_markers_appear_nowhere_but_in_the_vault(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    data = tmp_path / "data"
    used: list[str] = []
    answers: list[dict[str, object]] = []
    with open_api(data, db_url) as api:
        hospital = api.credential()
        admin = api.credential("admin")

        @settings(
            max_examples=8,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(st.lists(markers, min_size=14, max_size=14, unique=True))
        def submit(m: list[str]) -> None:
            body = bundle_with(m)
            # The needles do find each marker where the Bundle has it (raw, or in base64).
            assert all(any(n in body for n in encodings(x)) for x in m)
            answer = api.post(body, hospital)
            assert answer.status_code == 201, answer.text
            doc = answer.json()
            answers.append(doc)
            used.extend(m)
            # Authorised reads see the data; they leave only an access entry behind.
            assert api.client.get(f"/fhir/Binary/{doc['id']}", headers=hospital).content == body
            hl7 = api.client.get(f"/fhir/Bundle/{doc['id']}/$hl7v2", headers=admin)
            assert hl7.status_code == 200, hl7.text
            assert m[3].encode() in hl7.content
            # A refused variant (same identifier, other bytes) leaves nothing either.
            other = body.replace(m[9].encode(), m[9].encode() + b"X")
            assert api.post(other, hospital).status_code == 409

        submit()
        assert len(answers) >= 2 and api.log_size() >= 2 * len(answers)
        haystacks = stored_values(api) + log_texts(api, answers)
        haystacks.append("\n".join(r.getMessage() for r in caplog.records).encode())
        if db_url.startswith("sqlite"):
            path = Path(db_url.removeprefix("sqlite:///"))
            haystacks.extend(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        hay = b"\x00".join(haystacks)
        for marker in used:
            for needle in encodings(marker):
                assert needle not in hay, (marker, needle)
