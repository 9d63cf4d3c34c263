"""Settlement search over HTTP: roles, consent at request time, the gate, paging, parameters."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fhir.resources.R4B.bundle import Bundle as FhirBundle
from jwt.algorithms import ECAlgorithm

from exchange.consent import crossborder
from exchange.consent.crossborder import LegalBasis, Recipient
from exchange.identity.clients import register_client
from exchange.privacy.access import access_count, disclosures_of
from exchange.vault import lookup_tag as pseudonym
from tests.api_helpers import Api, is_outcome, open_api
from tests.settlement.test_settlement_index import (
    HOSPITAL,
    PASSPORT,
    consent_bundle,
    settlement_bundle,
)

KIM = (PASSPORT, "M10000001")
LEE = (PASSPORT, "M10000002")
PAY = {"X-Purpose-Of-Use": "HPAYMT"}


def recipient(api: Api, org: str, country: str = "CN", basis: LegalBasis | None = None) -> None:
    crossborder.set_recipient(api.services.engine, Recipient(org, country, basis))


def insurer(api: Api, org: str = "insurer-a", country: str = "CN") -> dict[str, str]:
    recipient(api, org, country)
    return {**api.credential("insurer", org), **PAY}


def submit(api: Api, body: bytes, headers: dict[str, str], **extra: str) -> dict[str, Any]:
    answer = api.post(body, {**headers, **extra})
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


def search(api: Api, rtype: str, headers: dict[str, str], **params: Any) -> Any:
    return api.client.get(f"/fhir/{rtype}", params=params, headers=headers)


def resources(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    doc = response.json()
    FhirBundle.model_validate(doc)  # a valid R4 searchset
    assert doc["type"] == "searchset" and "total" not in doc
    return [e["resource"] for e in doc.get("entry", [])]


def pid(patient: tuple[str, str]) -> str:
    return f"{patient[0]}|{patient[1]}"


def test_an_insurer_reads_its_consented_claim_exactly_as_submitted(
    tmp_path: Path, db_url: str
) -> None:
    with open_api(tmp_path / "data", db_url) as api:
        hospital = api.credential()
        body = settlement_bundle(KIM, "insurer-a", amount="1200.00")
        submit(api, body, hospital)
        submit(api, consent_bundle(KIM, "insurer-a"), hospital)
        ins = insurer(api)
        for rtype in ("Claim", "Invoice", "Coverage", "DocumentReference"):
            answer = search(api, rtype, ins, **{"patient.identifier": pid(KIM)})
            (found,) = resources(answer)
            assert found["resourceType"] == rtype
            # The bytes of the answer hold the resource as submitted, lexemes and all.
            start = answer.content.index(b'"resource":') + len(b'"resource":')
            raw = answer.content[start:]
            raw = raw[: raw.index(b',"search":{"mode":"match"}')]
            assert raw in body
        claim_answer = search(api, "Claim", ins, **{"patient.identifier": pid(KIM)})
        assert b'"value":1200.00' in claim_answer.content
        # Access entries name the patient as the Bundle entries do (the vault's pseudonym,
        # which an erasure unlinks), never by the lookup tag anyone with the DB can recompute.
        (subject,) = api.services.vault.subjects_of(HOSPITAL, KIM)
        rows = disclosures_of(api.services.engine, subject)
        assert [(r.action, r.outcome) for r in rows] == [("search", "0")] * 5
        tag = pseudonym(api.services.pseudonym_key, HOSPITAL, KIM)
        assert tag != subject and disclosures_of(api.services.engine, tag) == []
        assert KIM[1].encode() not in b"".join(r.data for r in rows)


def test_a_hospital_sees_only_its_own_submissions(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        submit(api, settlement_bundle(KIM, "insurer-a"), api.credential())
        own = search(api, "Claim", api.credential(), **{"patient.identifier": pid(KIM)})
        assert [r["id"] for r in resources(own)] == ["c-A1"]
        assert len(resources(search(api, "Claim", api.credential()))) == 1
        other = api.credential("hospital", "hospital-b")
        assert resources(search(api, "Claim", other)) == []
        assert resources(search(api, "Claim", other, **{"patient.identifier": pid(KIM)})) == []
        assert access_count(api.services.engine) == 0  # a hospital reading its own: no disclosure


def test_without_consent_or_for_another_payer_nothing_is_disclosed(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        submit(api, settlement_bundle(KIM, "insurer-a"), hospital)
        submit(api, settlement_bundle(LEE, "insurer-a", tag="L1"), hospital)
        submit(api, consent_bundle(LEE, "insurer-b"), hospital)  # Lee consented to B only
        a, b = insurer(api, "insurer-a"), insurer(api, "insurer-b")
        assert resources(search(api, "Claim", a, **{"patient.identifier": pid(KIM)})) == []
        assert resources(search(api, "Claim", a, **{"patient.identifier": pid(LEE)})) == []
        # B has Lee's consent but the claims are addressed to A.
        assert resources(search(api, "Claim", b, **{"patient.identifier": pid(LEE)})) == []
        denied = [(r.action, r.outcome) for r in _all_access(api)]
        assert denied == [("denied", "4"), ("denied", "4"), ("search", "0")]


def _all_access(api: Api) -> list[Any]:
    from sqlalchemy import select

    from exchange.privacy.access import _row
    from exchange.store.tables import access_table

    with api.services.engine.connect() as conn:
        return [_row(r) for r in conn.execute(select(access_table).order_by(access_table.c.idx))]


def test_a_withdrawal_takes_effect_on_the_next_search(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        submit(api, settlement_bundle(KIM, "insurer-a"), hospital)
        submit(api, consent_bundle(KIM, "insurer-a", consent_id="k1"), hospital)
        ins = insurer(api)
        query = {"patient.identifier": pid(KIM)}
        assert len(resources(search(api, "Claim", ins, **query))) == 1
        withdrawal = consent_bundle(
            KIM, "insurer-a", consent_id="k1", status="inactive", date_time="2026-03-09T00:00:00Z"
        )
        submit(api, withdrawal, hospital)
        assert resources(search(api, "Claim", ins, **query)) == []
        # A newer consent again permits, but only the resource types it names.
        renewed = consent_bundle(
            KIM, "insurer-a", consent_id="k2", date_time="2026-03-10T00:00:00Z",
            classes=("Invoice",),
        )  # fmt: skip
        submit(api, renewed, hospital)
        assert resources(search(api, "Claim", ins, **query)) == []
        assert len(resources(search(api, "Invoice", ins, **query))) == 1


def test_purpose_of_use_is_required_and_must_be_a_payment_purpose(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        submit(api, settlement_bundle(KIM, "insurer-a"), api.credential())
        recipient(api, "insurer-a")
        bare = api.credential("insurer", "insurer-a")
        query = {"patient.identifier": pid(KIM)}
        for headers, says in (
            (bare, "X-Purpose-Of-Use"),
            ({**bare, "X-Purpose-Of-Use": "TREAT"}, "not a payment purpose"),
            ({**bare, "X-Purpose-Of-Use": "<script>"}, "not a payment purpose"),
        ):
            refused = search(api, "Claim", headers, **query)
            assert refused.status_code == 403
            assert says in is_outcome(refused)["issue"][0]["diagnostics"]
        rows = _all_access(api)
        assert [(r.action, r.outcome, r.purpose) for r in rows] == [
            ("denied", "4", None), ("denied", "4", "TREAT"), ("denied", "4", None),
        ]  # fmt: skip


def test_auditors_and_admins_get_no_settlement_data(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        submit(api, settlement_bundle(KIM, "insurer-a"), api.credential())
        for role in ("auditor", "admin"):
            refused = search(api, "Claim", api.credential(role, None))
            assert refused.status_code == 403
            is_outcome(refused)
        assert search(api, "Claim", {}).status_code == 401


def test_the_cross_border_gate_applies_to_a_foreign_insurer(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        submit(api, settlement_bundle(KIM, "insurer-kr"), hospital)
        submit(api, consent_bundle(KIM, "insurer-kr"), hospital)
        ins = {**api.credential("insurer", "insurer-kr"), **PAY}
        query = {"patient.identifier": pid(KIM)}
        # Not recorded as a recipient: no known legal basis, nothing leaves.
        assert resources(search(api, "Claim", ins, **query)) == []
        recipient(api, "insurer-kr", "KR", None)
        assert resources(search(api, "Claim", ins, **query)) == []
        recipient(api, "insurer-kr", "KR", LegalBasis("standard-contract", "2026-0042"))
        assert len(resources(search(api, "Claim", ins, **query))) == 1
        gate = crossborder.TransferLedger(api.services.engine)
        assert gate.distinct_patients(_this_year()) == 1


def _this_year() -> int:
    from datetime import UTC, datetime

    return datetime.now(UTC).year


def test_paging_with_a_signed_cursor(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        for n in range(5):
            submit(
                api, settlement_bundle(KIM, "insurer-a", tag=f"P{n}", types=("Claim",)), hospital
            )
        submit(api, consent_bundle(KIM, "insurer-a"), hospital)
        ins = insurer(api)
        params: dict[str, Any] = {"patient.identifier": pid(KIM), "_count": 2}
        seen: list[str] = []
        answer = search(api, "Claim", ins, **params)
        next_url = None
        while True:
            seen += [r["id"] for r in resources(answer)]
            links = {link["relation"]: link["url"] for link in answer.json()["link"]}
            assert "self" in links
            next_url = links.get("next")
            if next_url is None:
                break
            answer = api.client.get(
                urlsplit(next_url).path, params=parse_qsl(urlsplit(next_url).query), headers=ins
            )
        assert seen == [f"c-P{n}" for n in range(5)]
        first = search(api, "Claim", ins, **params).json()
        cursor = dict(parse_qsl(urlsplit(first["link"][1]["url"]).query))["_cursor"]
        tampered = cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")
        for bad in (tampered, "x", cursor + "x"):
            refused = search(api, "Claim", ins, **params, _cursor=bad)
            assert refused.status_code == 400 and "_cursor" in refused.text
        other = {**api.credential("insurer", "insurer-a"), **PAY}
        assert search(api, "Claim", other, **params, _cursor=cursor).status_code == 400
        changed = {**params, "_count": 3}
        assert search(api, "Claim", ins, **changed, _cursor=cursor).status_code == 400
        huge = search(api, "Claim", ins, **{**params, "_count": 10_000})
        assert len(resources(huge)) == 5


def test_identifier_insurer_and_last_updated(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        for tag, when in (("E1", "2026-01-15T10:00:00Z"), ("E2", "2026-02-15T10:00:00+08:00")):
            body = settlement_bundle(KIM, "insurer-a", tag=tag, last_updated=when, types=("Claim",))
            submit(api, body, hospital)
        submit(api, settlement_bundle(KIM, "insurer-b", tag="E3", types=("Claim",)), hospital)

        def ids(**params: Any) -> list[str]:
            return [r["id"] for r in resources(search(api, "Claim", hospital, **params))]

        assert ids(_id="c-E2") == ["c-E2"]
        assert ids(_id="c-E3,c-E1,nobody") == ["c-E1", "c-E3"]
        assert ids(identifier="urn:example:claim|E2") == ["c-E2"]
        assert ids(identifier="E1") == ["c-E1"]
        assert ids(identifier="urn:other|E1") == []
        assert ids(insurer="Organization/insurer-b") == ["c-E3"]
        assert ids(insurer="insurer-a") == ["c-E1", "c-E2"]
        assert ids(_lastUpdated="2026-01") == ["c-E1"]
        assert ids(_lastUpdated=["ge2026-01-15", "lt2026-02-15T02:00:00Z"]) == ["c-E1"]
        assert ids(_lastUpdated="gt2026-01-15") == ["c-E2", "c-E3"]
        assert ids(_lastUpdated="le2026-02-15T02:00:00Z") == ["c-E1", "c-E2"]
        assert ids(_lastUpdated="2026-02-15T02:00:00Z") == ["c-E2"]
        for bad in ({"_lastUpdated": "ne2026"}, {"_lastUpdated": "2026-13"},
                    {"_lastUpdated": "2026-01-01T10:00"}, {"identifier": "sys|"},
                    {"insurer": "Organization/<x>"}, {"patient.identifier": "nobar"},
                    {"patient": "Patient/1"}, {"_count": "0"}, {"pateint": "x"},
                    {"_id": "c E1"}, {"patient:identifier": "nobar"}):  # fmt: skip
            refused = search(api, "Claim", hospital, **bad)
            assert refused.status_code == 400, (bad, refused.text)
            doc = is_outcome(refused)
            assert list(bad)[0] in json.dumps(doc), doc


def test_an_insurer_names_one_patient_and_only_its_own_payer(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        ins = insurer(api)
        unnamed = search(api, "Claim", ins)
        assert unnamed.status_code == 400
        assert "patient.identifier" in is_outcome(unnamed)["issue"][0]["expression"][0]
        other = search(api, "Claim", ins, insurer="insurer-b", **{"patient.identifier": pid(KIM)})
        assert other.status_code == 403
        assert access_count(api.services.engine) == 2  # each refusal is one access entry


@pytest.mark.parametrize(
    ("patient_param", "form"),
    [
        ("patient", "{}"),  # R4 reference search: a logical id ...
        ("patient", "Patient/{}"),  # ... or Type/id; the id is the patient's pseudonym
        ("patient.identifier", "system|value"),
        ("patient:identifier", "system|value"),  # R4's identifier modifier
    ],
)
def test_a_patient_by_reference_or_identifier(
    tmp_path: Path, patient_param: str, form: str
) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        submit(api, settlement_bundle(KIM, "insurer-a"), hospital)
        submit(api, settlement_bundle(LEE, "insurer-a", tag="L1"), hospital)
        if form == "system|value":
            value = pid(KIM)
        else:
            value = form.format(pseudonym(api.services.pseudonym_key, HOSPITAL, KIM).hex())
        found = resources(search(api, "Claim", hospital, **{patient_param: value}))
        assert [r["id"] for r in found] == ["c-A1"]


def test_the_two_spellings_of_patient_identifier_must_agree(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        submit(api, settlement_bundle(KIM, "insurer-a"), hospital)
        both = {"patient.identifier": pid(KIM), "patient:identifier": pid(KIM)}
        assert len(resources(search(api, "Claim", hospital, **both))) == 1
        other = {"patient.identifier": pid(KIM), "patient:identifier": pid(LEE)}
        refused = search(api, "Claim", hospital, **other)
        assert refused.status_code == 400
        assert is_outcome(refused)["issue"][0]["expression"] == ["patient:identifier"]


def test_lenient_handling_ignores_unknown_parameters_and_says_so(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        submit(api, settlement_bundle(KIM, "insurer-a"), hospital)
        params = {"pateint": "x", "identifier": "urn:example:claim|A1"}
        assert search(api, "Claim", hospital, **params).status_code == 400  # strict by default
        lenient = {**hospital, "Prefer": "handling=lenient"}
        answer = search(api, "Claim", lenient, **params)
        assert [r["id"] for r in resources(answer)] == ["c-A1"]
        (link,) = answer.json()["link"]
        assert link["relation"] == "self"
        assert parse_qsl(urlsplit(link["url"]).query) == [("identifier", "urn:example:claim|A1")]


# --- SMART Backend Services tokens --------------------------------------------------------------


def _smart_token(api: Api, org: str, scope: str, purpose: str | None) -> str:
    """A real access token: a registered ES384 key signs the client assertion."""
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = {**json.loads(ECAlgorithm.to_jwk(key.public_key())), "kid": "k1"}
    client, _ = register_client(
        api.services.engine, "payer gateway", "insurer", org, json.dumps({"keys": [jwk]})
    )
    now = int(time.time())
    claims = {
        "iss": client.client_id, "sub": client.client_id, "aud": "http://testserver/auth/token",
        "exp": now + 240, "iat": now, "jti": str(uuid.uuid4()),
    }  # fmt: skip
    if purpose is not None:
        claims["purpose_of_use"] = purpose
    assertion = jwt.encode(claims, key, algorithm="ES384", headers={"kid": "k1"})
    answer = api.client.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
            "scope": scope,
        },
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def test_a_smart_token_carries_purpose_and_scopes(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        submit(api, settlement_bundle(KIM, "insurer-a"), hospital)
        submit(api, consent_bundle(KIM, "insurer-a"), hospital)
        recipient(api, "insurer-a")
        token = _smart_token(api, "insurer-a", "system/Claim.rs", "HPAYMT")
        bearer = {"Authorization": f"Bearer {token}"}
        query = {"patient.identifier": pid(KIM)}
        assert len(resources(search(api, "Claim", bearer, **query))) == 1
        same = {**bearer, "X-Purpose-Of-Use": "HPAYMT"}
        assert len(resources(search(api, "Claim", same, **query))) == 1
        mismatch = search(api, "Claim", {**bearer, "X-Purpose-Of-Use": "COVERAGE"}, **query)
        assert mismatch.status_code == 403 and "differs" in mismatch.text
        unscoped = search(api, "Coverage", bearer, **query)
        assert unscoped.status_code == 403 and "system/Coverage.s" in unscoped.text
        rows = _all_access(api)
        assert [(r.action, r.outcome) for r in rows] == [
            ("search", "0"), ("search", "0"), ("denied", "4"), ("denied", "4"),
        ]  # fmt: skip
        unbound = _smart_token(api, "insurer-a", "system/Claim.rs", None)
        headerless = search(api, "Claim", {"Authorization": f"Bearer {unbound}"}, **query)
        assert headerless.status_code == 403


def test_the_capability_statement_lists_what_the_search_takes(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        statement = api.client.get("/fhir/metadata").json()
        document = api.client.get("/openapi.json").json()
    (rest,) = statement["rest"]
    listed = {r["type"]: r for r in rest["resource"]}
    for rtype in ("Claim", "ClaimResponse", "Invoice", "ExplanationOfBenefit", "Coverage",
                  "DocumentReference"):  # fmt: skip
        # A modifier (patient:identifier) is a form of its parameter, not one of its own.
        declared = {
            p["name"].split(":")[0]
            for p in document["paths"][f"/fhir/{rtype}"]["get"]["parameters"]
            if p["in"] == "query"
        }  # fmt: skip
        assert {p["name"] for p in listed[rtype]["searchParam"]} == declared
        assert listed[rtype]["interaction"] == [{"code": "search-type"}]
    (export,) = [op for op in rest["operation"] if op["name"] == "export"]
    assert export["definition"].endswith("/OperationDefinition/export")
    assert "/fhir/$export" in document["paths"]


def test_a_new_version_of_a_bundle_replaces_its_resources(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()

        def versioned(amount: str) -> bytes:
            body = settlement_bundle(KIM, "insurer-a", amount=amount, types=("Claim",))
            ident = b'"identifier":{"system":"urn:ietf:rfc:3986","value":"urn:uuid:v-1"},'
            return body.replace(b'"type":"collection"', ident + b'"type":"collection"', 1)

        submit(api, versioned("100.10"), hospital)
        submit(api, versioned("200.20"), hospital, **{"If-Match": 'W/"1"'})
        answer = search(api, "Claim", hospital, **{"patient.identifier": pid(KIM)})
        (claim,) = resources(answer)
        assert b"200.20" in answer.content and b"100.10" not in answer.content
