"""The settlement index: byte spans that give back each resource exactly, and what it keys on.

The builders here (settlement and consent Bundles) are shared by the settlement search, export
and access-matrix tests.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.settlement import index as settlement
from exchange.vault import lookup_tag as pseudonym
from tests.api_helpers import open_api

HOSPITAL = "hospital-a"
PASSPORT = "urn:oid:2.16.840.1.113883.4.330.410"  # a passport-number system
_CLASS = "http://hl7.org/fhir/resource-types"
_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


def _uuid(seed: str) -> str:
    return "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, seed))


def _patient(patient: tuple[str, str], ref: str) -> str:
    return json.dumps(
        {"resourceType": "Patient", "identifier": [{"system": patient[0], "value": patient[1]}]}
    )


def settlement_resources(
    patient_ref: str,
    insurer: str,
    *,
    amount: str,
    tag: str,
    created: str,
    last_updated: str | None,
    types: tuple[str, ...],
) -> list[str]:
    """Raw JSON text of one settlement of each asked type; `amount` keeps its lexeme."""
    meta = f'"meta":{{"lastUpdated":"{last_updated}"}},' if last_updated else ""
    ins = f'{{"reference":"Organization/{insurer}"}}'
    prov = f'{{"reference":"Organization/{HOSPITAL}"}}'
    cov = '{"display":"policy"}'
    ident = f'"identifier":[{{"system":"urn:example:claim","value":"{tag}"}}],'
    claim_type = (
        '"type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/claim-type",'
        '"code":"institutional"}]},"use":"claim",'
    )
    money = f'{{"value":{amount},"currency":"CNY"}}'
    bodies = {
        "Claim": f'{{"resourceType":"Claim","id":"c-{tag}",{meta}{ident}"status":"active",'
        f'{claim_type}"patient":{{"reference":"{patient_ref}"}},"created":"{created}",'
        f'"insurer":{ins},"provider":{prov},"priority":{{"coding":[{{"code":"normal"}}]}},'
        f'"insurance":[{{"sequence":1,"focal":true,"coverage":{cov}}}],"total":{money}}}',
        "ClaimResponse": f'{{"resourceType":"ClaimResponse","id":"cr-{tag}",{meta}{ident}'
        f'"status":"active",{claim_type}"patient":{{"reference":"{patient_ref}"}},'
        f'"created":"{created}","insurer":{ins},"outcome":"complete"}}',
        "ExplanationOfBenefit": f'{{"resourceType":"ExplanationOfBenefit","id":"eob-{tag}",'
        f'{meta}{ident}"status":"active",{claim_type}"patient":{{"reference":"{patient_ref}"}},'
        f'"created":"{created}","insurer":{ins},"provider":{prov},"outcome":"complete",'
        f'"insurance":[{{"focal":true,"coverage":{cov}}}],"total":[{{"category":{{"coding":'
        f'[{{"code":"submitted"}}]}},"amount":{money}}}]}}',
        "Invoice": f'{{"resourceType":"Invoice","id":"inv-{tag}",{meta}{ident}"status":"issued",'
        f'"subject":{{"reference":"{patient_ref}"}},"date":"{created}","recipient":{ins},'
        f'"totalNet":{money},"totalGross":{money}}}',
        "Coverage": f'{{"resourceType":"Coverage","id":"cov-{tag}",{meta}{ident}'
        f'"status":"active","beneficiary":{{"reference":"{patient_ref}"}},"payor":[{ins}],'
        f'"period":{{"start":"{created[:10]}"}}}}',
        "DocumentReference": f'{{"resourceType":"DocumentReference","id":"doc-{tag}",{meta}'
        f'"masterIdentifier":{{"system":"urn:example:doc","value":"{tag}"}},'
        f'"status":"current","subject":{{"reference":"{patient_ref}"}},"date":"{created}",'
        f'"content":[{{"attachment":{{"contentType":"application/pdf","title":"discharge '
        f'summary {amount}"}}}}]}}',
    }
    return [bodies[t] for t in types]


def settlement_bundle(
    patient: tuple[str, str],
    insurer: str,
    *,
    amount: str = "1200.00",
    tag: str = "A1",
    created: str = "2026-03-03T16:00:00Z",
    last_updated: str | None = None,
    types: tuple[str, ...] = settlement.SEARCH_TYPES,
) -> bytes:
    """A settlement Bundle of one patient: Patient first, then one resource per type."""
    patient_ref = _uuid(f"patient:{patient}")
    raws = [_patient(patient, patient_ref)] + settlement_resources(
        patient_ref, insurer, amount=amount, tag=tag, created=created,
        last_updated=last_updated, types=types,
    )  # fmt: skip
    urls = [patient_ref] + [_uuid(f"{tag}:{i}:{patient}") for i in range(len(raws) - 1)]
    entries = ",".join(
        f'{{"fullUrl":"{u}","resource":{r}}}' for u, r in zip(urls, raws, strict=True)
    )
    return f'{{"resourceType":"Bundle","type":"collection","entry":[{entries}]}}'.encode()


def consent_resource(
    patient_ref: str,
    insurer: str,
    *,
    consent_id: str = "consent-1",
    status: str = "active",
    purpose: str = "HPAYMT",
    date_time: str = "2026-03-01T00:00:00Z",
    period: tuple[str, str] = ("2026-01-01", "2099-12-31"),
    classes: tuple[str, ...] = (),
) -> dict[str, Any]:
    provision: dict[str, Any] = {
        "type": "permit",
        "period": {"start": period[0], "end": period[1]},
        "actor": [
            {
                "role": {"coding": [{"code": "IRCP"}]},
                "reference": {"reference": f"Organization/{insurer}"},
            }
        ],
        "purpose": [{"system": _REASON, "code": purpose}],
    }
    if classes:
        provision["class"] = [{"system": _CLASS, "code": c} for c in classes]
    return {
        "resourceType": "Consent",
        "id": consent_id,
        "status": status,
        "scope": {"coding": [{"code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": patient_ref},
        "dateTime": date_time,
        "policyRule": {"coding": [{"code": "OPTIN"}]},
        "provision": provision,
    }


def consent_bundle(patient: tuple[str, str], insurer: str, **options: Any) -> bytes:
    """A consent Bundle: the patient and one Consent naming `insurer` (see consent_resource)."""
    patient_ref = _uuid(f"patient:{patient}")
    consent = consent_resource(patient_ref, insurer, **options)
    doc = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": patient_ref, "resource": json.loads(_patient(patient, patient_ref))},
            {"fullUrl": _uuid(f"consent:{patient}:{options}"), "resource": consent},
        ],
    }
    return json.dumps(doc).encode()


# --- spans ----------------------------------------------------------------------------------

_keys = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.decimals(
        allow_nan=False, allow_infinity=False, places=2, min_value=-(10**6), max_value=10**6
    ),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=12,
)
_ws = st.sampled_from(["", " ", "\n", "\t", "\r\n  "])


def _dump(value: Any, draw: Any) -> str:
    """JSON text of a value with random whitespace and `\\u` escapes, decimals as lexemes."""
    w = draw(_ws)
    if isinstance(value, dict):
        members = [
            f"{w}{_string(k, draw)}{draw(_ws)}:{draw(_ws)}{_dump(v, draw)}"
            for k, v in value.items()
        ]
        return "{" + ",".join(members) + draw(_ws) + "}"
    if isinstance(value, list):
        return "[" + ",".join(w + _dump(v, draw) for v in value) + draw(_ws) + "]"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, str):
        return _string(value, draw)
    return str(value)  # int or Decimal: the lexeme as written (1200.00)


def _string(text: str, draw: Any) -> str:
    return json.dumps(text, ensure_ascii=draw(st.booleans()))


@st.composite
def _bundles(draw: Any) -> tuple[bytes, dict[int, Any]]:
    n = draw(st.integers(0, 5))
    resources: dict[int, Any] = {}
    parts = []
    for pos in range(n):
        extra = draw(st.dictionaries(_keys.filter(lambda k: k != "resource"), _values, max_size=3))
        has_resource = draw(st.booleans())
        members = [f"{_string(k, draw)}:{_dump(v, draw)}" for k, v in extra.items()]
        if has_resource:
            body = draw(st.dictionaries(_keys, _values, max_size=4))
            body_text = _dump({"resourceType": "Claim", **body}, draw)
            resources[pos] = json.loads(body_text)
            key = draw(st.sampled_from(['"resource"', '"r\\u0065source"']))
            members.insert(draw(st.integers(0, len(members))), f"{key}{draw(_ws)}:{body_text}")
        parts.append("{" + ",".join(members) + "}")
    head = draw(st.dictionaries(_keys.filter(lambda k: k != "entry"), _values, max_size=3))
    members = [f"{_string(k, draw)}:{_dump(v, draw)}" for k, v in head.items()]
    members.append('"entry":' + draw(_ws) + "[" + ",".join(parts) + "]")
    text = draw(_ws) + "{" + ",".join(reversed(members)) + "}" + draw(_ws)
    return text.encode(), resources


@settings(max_examples=200, deadline=None)
@given(_bundles())
def test_each_span_parses_to_the_entrys_resource(case: tuple[bytes, dict[int, Any]]) -> None:
    data, resources = case
    spans = settlement.resource_spans(data)
    assert sorted(spans) == sorted(resources)
    for pos, (start, end) in spans.items():
        assert json.loads(data[start:end]) == resources[pos]


def test_a_span_keeps_the_decimal_lexeme_and_the_escapes() -> None:
    body = settlement_bundle(("urn:example:mrn", "M-1"), "insurer-a", amount="1200.00")
    spans = settlement.resource_spans(body)
    claim = body[spans[1][0] : spans[1][1]]
    assert b'"value":1200.00' in claim
    assert json.loads(claim)["resourceType"] == "Claim"
    escaped = b'{"entry":[{"resource":{"resourceType":"Claim","note":"\\"}{[\\\\"}}]}'
    (start, end) = settlement.resource_spans(escaped)[0]
    assert json.loads(escaped[start:end]) == {"resourceType": "Claim", "note": '"}{[\\'}


# --- what is indexed ------------------------------------------------------------------------


def test_each_resource_gets_its_patient_payer_and_dates() -> None:
    patient = (PASSPORT, "M12345678")
    body = settlement_bundle(
        patient, "insurer-a", tag="T9", created="2026-03-03T16:00:00+08:00",
        last_updated="2026-03-04T01:02:03.5+08:00",
    )  # fmt: skip
    found = settlement.indexed_resources(body, "2026-03-05T00:00:00.000Z")
    assert [r.resource_type for r in found] == list(settlement.SEARCH_TYPES)
    for r in found:
        assert r.patient == [patient]
        assert r.insurer == "insurer-a"  # the DocumentReference takes its claim's payer
        assert r.last_updated == "2026-03-03T17:02:03.500000Z"
        assert r.data_date == "2026-03-03"
        assert json.loads(body[r.start : r.start + r.length])["resourceType"] == r.resource_type
    claim = found[0]
    assert claim.identifiers == [("urn:example:claim", "T9")]
    assert found[-1].identifiers == [("urn:example:doc", "T9")]


def test_without_meta_the_received_time_is_last_updated() -> None:
    body = settlement_bundle(("urn:example:mrn", "M-2"), "insurer-b", types=("Invoice",))
    (invoice,) = settlement.indexed_resources(body, "2026-03-05T10:00:00.123Z")
    assert invoice.last_updated == "2026-03-05T10:00:00.123000Z"
    assert invoice.insurer == "insurer-b"


def test_a_payer_named_by_identifier_or_bundle_entry() -> None:
    view = settlement._BundleView.of(
        {
            "entry": [
                {
                    "fullUrl": "urn:uuid:org",
                    "resource": {
                        "resourceType": "Organization",
                        "id": "x",
                        "identifier": [{"system": "urn:example:payer", "value": "payer-9"}],
                    },
                }
            ]
        }
    )
    assert settlement.organization_of({"reference": "Organization/abc"}, view) == "abc"
    assert settlement.organization_of({"reference": "https://h/fhir/Organization/d"}, view) == "d"
    assert settlement.organization_of({"identifier": {"value": "payer-7"}}, view) == "payer-7"
    assert settlement.organization_of({"reference": "urn:uuid:org"}, view) == "payer-9"
    assert settlement.organization_of([{"reference": "Organization/p"}], view) == "p"
    assert settlement.organization_of(None, view) is None


def test_the_index_rows_and_keys_on_both_databases(tmp_path: Path, db_url: str) -> None:
    patient = (PASSPORT, "M-3")
    with open_api(tmp_path / "data", db_url) as api:
        hospital = api.credential()
        assert api.post(settlement_bundle(patient, "insurer-a"), hospital).status_code == 201
        assert api.post(consent_bundle(patient, "insurer-a"), hospital).status_code == 201
        engine, key = api.services.engine, api.services.pseudonym_key
        indexes = api.services.indexes
        indexes.fresh(settlement.settlement_index(engine, key))
        indexes.fresh(settlement.settlement_keys_index(key))
        subject = pseudonym(key, HOSPITAL, patient)
        rows = settlement.search_rows(
            engine,
            settlement.Query(settlement.SEARCH_TYPES, patient_keys=frozenset({subject})),
        )
        assert [r.resource_type for r in rows] == list(settlement.SEARCH_TYPES)
        assert {r.subject for r in rows} == {subject}
        reader = settlement.BundleBytes(api.services.vault)
        assert b"1200.00" in reader.resource(rows[0])
        (consent,) = settlement.consents_of(engine, HOSPITAL, subject)
        assert json.loads(reader.resource(consent))["resourceType"] == "Consent"
        by_ident = settlement.search_rows(
            engine,
            settlement.Query(
                ("Claim",),
                identifier_key=(
                    settlement.KEY_IDENT,
                    settlement.ident_key(key, "urn:example:claim", "A1"),
                ),
            ),
        )
        assert [r.resource_id for r in by_ident] == ["c-A1"]
        # A second catch-up indexes nothing twice.
        indexes.fresh(settlement.settlement_index(engine, key))
        again = settlement.search_rows(engine, settlement.Query(settlement.SEARCH_TYPES))
        assert len(again) == len(settlement.SEARCH_TYPES)


# --- lastUpdated as text -----------------------------------------------------------------------

_instants = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones()
)


@settings(max_examples=200, deadline=None)
@given(_instants, _instants)
def test_fixed_width_utc_text_sorts_as_time_does(a: datetime, b: datetime) -> None:
    ta, tb = (settlement.utc_instant(x.isoformat()) for x in (a, b))
    assert len(ta) == len(tb) == 27
    assert (ta < tb) == (a < b) and (ta == tb) == (a == b)


def test_an_instant_out_of_range_in_utc_is_a_value_error() -> None:
    for text in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        with pytest.raises(ValueError, match="outside years"):
            settlement.utc_instant(text)
