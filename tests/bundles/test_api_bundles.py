"""POST and GET /fhir/Bundle, GET /fhir/Binary: receipts, the server's identity on reads, the
exact bytes, retries, versions, roles, Prefer."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from exchange.intake.samples import sample_bundles
from tests.api_helpers import (
    BASE,
    FHIR_JSON,
    FHIR_JSON_UTF8,
    HOSPITAL_ORG,
    Api,
    is_outcome,
    lexemes,
    observation_bundle,
    open_api,
    patient_bundle,
)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with open_api(tmp_path / "data") as a:
        yield a


def test_submit_answers_with_a_receipt_that_verifies_offline(api: Api) -> None:
    body = sample_bundles()[6]  # settlement: a Claim and an Invoice of 1200.00
    r = api.post(body, api.credential())
    assert r.status_code == 201
    answer = r.json()
    assert set(answer) == {"id", "index", "kind", "receipt", "salt"}
    assert answer["kind"] == "settlement" and answer["index"] == 0
    assert r.headers["location"] == f"{BASE}/fhir/Bundle/{answer['id']}/_history/1"
    assert r.headers["etag"] == 'W/"1"' and r.headers["last-modified"].endswith(" GMT")
    # Not a FHIR resource, so not labelled as one.
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-ledger-index"] == "0"
    assert base64.b64decode(r.headers["x-ledger-salt"]) == base64.b64decode(answer["salt"])
    entry = api.check_receipt(answer, body)
    assert (entry.kind, entry.sender, entry.media) == ("settlement", HOSPITAL_ORG, FHIR_JSON)
    assert entry.subject is not None and len(entry.subject) == 32


def test_read_has_the_server_identity_and_binary_the_submitted_bytes(api: Api) -> None:
    headers = api.credential()
    body = sample_bundles()[6]
    assert b"1200.00" in body and b".000Z" in body
    answer = api.post(body, headers)
    read = api.read_back(answer.headers["location"], headers, body)
    assert b"1200.00" in read.content and read.headers["x-ledger-index"] == "0"
    bundle_id = answer.json()["id"]
    latest = api.client.get(f"/fhir/Bundle/{bundle_id}", headers=headers)
    assert latest.content == read.content
    assert latest.headers["last-modified"] == answer.headers["last-modified"]
    original = api.client.get(f"/fhir/Binary/{bundle_id}", headers=headers)
    assert original.content == body
    assert original.headers["content-type"] == FHIR_JSON_UTF8
    assert original.headers["etag"] == 'W/"1"' and original.headers["x-ledger-index"] == "0"


def test_client_chosen_id_and_version_are_replaced_on_read(api: Api) -> None:
    """FHIR R4 http.html#create: the server ignores a supplied id and sets meta itself."""
    headers = api.credential()
    body = (
        b'{"resourceType":"Bundle","id":"client-chosen","meta":{"versionId":"7",'
        b'"lastUpdated":"2001-01-01T00:00:00Z","tag":[{"code":"kept"}]},"type":"collection",'
        b'"entry":[{"fullUrl":"urn:uuid:00000000-0000-4000-8000-000000000001","resource":'
        b'{"resourceType":"Basic","code":{"text":"x"}}}]}'
    )
    answer = api.post(body, headers)
    assert answer.status_code == 201
    read = api.read_back(answer.headers["location"], headers, body)
    doc = read.json()
    assert doc["id"] == answer.json()["id"] != "client-chosen"
    assert doc["meta"]["versionId"] == "1" and doc["meta"]["tag"] == [{"code": "kept"}]
    assert doc["meta"]["lastUpdated"] != "2001-01-01T00:00:00Z"
    # The receipt commits to what was submitted, which the Binary serves; not to the read.
    api.check_receipt(answer.json(), body)


def test_application_json_is_accepted_and_kept(api: Api) -> None:
    headers = api.credential()
    body = observation_bundle("0.80")
    r = api.post(body, headers, content_type="application/json; charset=utf-8")
    assert r.status_code == 201
    assert api.entry(0).media == "application/json"
    read = api.read_back(r.headers["location"], headers, body)
    assert read.headers["content-type"] == FHIR_JSON_UTF8
    binary = api.client.get(f"/fhir/Binary/{r.json()['id']}", headers=headers)
    assert binary.headers["content-type"] == "application/json; charset=utf-8"


def test_each_kind_is_derived_from_the_contents(api: Api) -> None:
    headers = api.credential()
    kinds = [api.post(b, headers).json()["kind"] for b in sample_bundles()]
    assert kinds == [
        "record",
        "record",
        "consent",
        "consent",
        "rwd",
        "rwd",
        "settlement",
        "settlement",
    ]
    assert [api.entry(i).kind for i in range(8)] == kinds


# --- retries ------------------------------------------------------------------------------


def test_same_identifier_and_bytes_is_answered_with_the_original(api: Api) -> None:
    headers = api.credential()
    body = observation_bundle(identifier="urn:uuid:0b7c1d52-0000-4000-8000-000000000001")
    first = api.post(body, headers)
    again = api.post(body, headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["etag"] == first.headers["etag"]
    assert again.json() == first.json()  # the same index, salt and receipt
    assert api.log_size() == 1 and api.bundle_rows() == 1


def test_idempotency_key_makes_a_retry_safe(api: Api) -> None:
    headers = {**api.credential(), "Idempotency-Key": "msg-0001"}
    body = observation_bundle()  # no Bundle.identifier
    first = api.post(body, headers)
    again = api.post(body, headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["location"] == first.headers["location"]
    assert api.log_size() == 1


def test_without_identifier_or_key_each_post_is_new(api: Api) -> None:
    headers = api.credential()
    body = observation_bundle()
    answers = [api.post(body, headers) for _ in range(2)]
    assert [a.status_code for a in answers] == [201, 201]
    assert answers[0].headers["location"] != answers[1].headers["location"]
    assert api.log_size() == 2


def test_idempotency_key_with_other_bytes_is_422(api: Api) -> None:
    headers = {**api.credential(), "Idempotency-Key": "msg-0002"}
    assert api.post(observation_bundle("1.0"), headers).status_code == 201
    r = api.post(observation_bundle("2.0"), headers)
    assert r.status_code == 422
    assert is_outcome(r)["issue"][0]["code"] == "duplicate"
    assert api.log_size() == 1


def test_keys_are_per_sender(api: Api) -> None:
    a = {**api.credential(org="hospital-a"), "Idempotency-Key": "k"}
    b = {**api.credential(org="hospital-b"), "Idempotency-Key": "k"}
    assert api.post(observation_bundle("1.0"), a).status_code == 201
    assert api.post(observation_bundle("2.0"), b).status_code == 201
    ident = "urn:uuid:0b7c1d52-0000-4000-8000-000000000009"
    del a["Idempotency-Key"], b["Idempotency-Key"]
    assert api.post(observation_bundle("1.0", ident), a).status_code == 201
    assert api.post(observation_bundle("2.0", ident), b).status_code == 201
    assert api.log_size() == 4


def test_same_identifier_with_other_bytes_is_409(api: Api) -> None:
    headers = api.credential()
    ident = "urn:uuid:0b7c1d52-0000-4000-8000-000000000002"
    assert api.post(observation_bundle("1.0", ident), headers).status_code == 201
    r = api.post(observation_bundle("2.0", ident), headers)
    assert r.status_code == 409
    issue = is_outcome(r)["issue"][0]
    assert issue["expression"] == ["Bundle.identifier"] and "If-Match" in issue["diagnostics"]
    assert api.log_size() == 1


# --- versions -----------------------------------------------------------------------------


def test_if_match_submits_a_new_version(api: Api) -> None:
    headers = api.credential()
    ident = "urn:uuid:0b7c1d52-0000-4000-8000-000000000003"
    v1, v2 = observation_bundle("1.0", ident), observation_bundle("2.0", ident)
    first = api.post(v1, headers)
    second = api.post(v2, {**headers, "If-Match": first.headers["etag"]})
    assert second.status_code == 201
    assert second.headers["etag"] == 'W/"2"'
    location = first.headers["location"]
    assert second.headers["location"] == location.replace("/_history/1", "/_history/2")
    api.read_back(location, headers, v1)
    api.read_back(second.headers["location"], headers, v2)
    bundle = location.removesuffix("/_history/1")
    assert lexemes(api.client.get(bundle, headers=headers).content)["meta"]["versionId"] == "2"
    assert api.client.get(f"{bundle}/_history/3", headers=headers).status_code == 404
    binary = bundle.replace("/Bundle/", "/Binary/")
    assert api.client.get(binary, headers=headers).content == v2
    assert api.client.get(f"{binary}/_history/3", headers=headers).status_code == 404
    retry = api.post(v2, {**headers, "If-Match": 'W/"1"'})
    assert retry.status_code == 200 and retry.json() == second.json()
    assert api.post(v1, headers).status_code == 200  # v1's own retry still matches v1
    assert api.log_size() == 2


def test_if_match_of_a_superseded_version_is_412(api: Api) -> None:
    headers = api.credential()
    ident = "urn:uuid:0b7c1d52-0000-4000-8000-000000000004"
    api.post(observation_bundle("1.0", ident), headers)
    api.post(observation_bundle("2.0", ident), {**headers, "If-Match": 'W/"1"'})
    r = api.post(observation_bundle("3.0", ident), {**headers, "If-Match": 'W/"1"'})
    assert r.status_code == 412
    assert is_outcome(r)["issue"][0]["expression"] == ["Bundle.identifier"]
    assert api.log_size() == 2


def test_if_match_of_a_version_that_does_not_exist_is_412(api: Api) -> None:
    headers = api.credential()
    ident = "urn:uuid:0b7c1d52-0000-4000-8000-000000000005"
    api.post(observation_bundle("1.0", ident), headers)
    r = api.post(observation_bundle("2.0", ident), {**headers, "If-Match": 'W/"4"'})
    assert r.status_code == 412
    other = observation_bundle("2.0", "urn:uuid:0b7c1d52-0000-4000-8000-00000000000f")
    assert api.post(other, {**headers, "If-Match": 'W/"1"'}).status_code == 412
    assert api.log_size() == 1 and api.bundle_rows() == 1


def test_if_match_needs_an_identifier(api: Api) -> None:
    r = api.post(observation_bundle(), {**api.credential(), "If-Match": 'W/"1"'})
    assert r.status_code == 422
    assert is_outcome(r)["issue"][0]["expression"] == ["Bundle.identifier"]


@pytest.mark.parametrize("value", ["1", "W/1", 'W/"x"', 'W/"0"', "*", 'W/"1", W/"2"'])
def test_malformed_if_match_is_400(api: Api, value: str) -> None:
    r = api.post(observation_bundle(identifier="urn:x:1"), {**api.credential(), "If-Match": value})
    assert r.status_code == 400
    is_outcome(r)
    assert api.log_size() == 0


# --- Prefer -------------------------------------------------------------------------------


def test_prefer_representation_returns_the_bundle_as_read(api: Api) -> None:
    headers = api.credential()
    body = observation_bundle(identifier="urn:uuid:0b7c1d52-0000-4000-8000-0000000000a1")
    prefer = {**headers, "Prefer": "return=representation"}
    r = api.post(body, prefer)
    assert r.status_code == 201 and r.headers["content-type"] == FHIR_JSON_UTF8
    assert r.headers["location"] and r.headers["x-ledger-salt"]
    assert r.content == api.read_back(r.headers["location"], headers, body).content
    again = api.post(body, prefer)  # a retry: the original, as read
    assert again.status_code == 200 and again.content == r.content


def test_prefer_minimal_and_operation_outcome(api: Api) -> None:
    headers = api.credential()
    minimal = api.post(observation_bundle(), {**headers, "Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["location"].startswith(f"{BASE}/fhir/Bundle/")
    body = observation_bundle()
    oo = api.post(body, {**headers, "Prefer": "return=OperationOutcome"})
    assert oo.status_code == 201 and oo.headers["content-type"] == FHIR_JSON_UTF8
    outcome = is_outcome(oo)
    assert outcome["issue"][0]["severity"] == "information"
    ext = {e["url"]: e for e in outcome["extension"]}
    receipt = ext["urn:medledger:extension:receipt"]["valueString"]
    salt = ext["urn:medledger:extension:salt"]["valueBase64Binary"]
    assert salt == oo.headers["x-ledger-salt"]
    entry = api.check_receipt({"receipt": receipt, "salt": salt, "index": 1}, body)
    assert entry.kind == "record"


# --- credentials and roles ----------------------------------------------------------------


def test_missing_credential_is_401_with_a_challenge(api: Api) -> None:
    r = api.post(observation_bundle())
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert is_outcome(r)["issue"][0]["code"] == "login"


@pytest.mark.parametrize("value", ["Bearer mlt_nope", "Basic dXNlcjpwYXNz", "Bearer", "x" * 300])
def test_invalid_credential_is_401(api: Api, value: str) -> None:
    r = api.post(observation_bundle(), {"Authorization": value})
    assert r.status_code == 401
    assert "Bearer" in r.headers["www-authenticate"]
    is_outcome(r)
    assert api.log_size() == 0


@pytest.mark.parametrize("role", ["insurer", "auditor", "admin"])
def test_only_hospitals_submit(api: Api, role: str) -> None:
    headers = api.credential(role, "global-insurer" if role == "insurer" else None)
    r = api.post(observation_bundle(), headers)
    assert r.status_code == 403
    assert is_outcome(r)["issue"][0]["code"] == "forbidden"
    assert api.log_size() == 0


def test_a_hospital_reads_only_what_its_org_submitted(api: Api) -> None:
    mine = api.credential(org="hospital-a")
    colleague = api.credential(org="hospital-a")
    other = api.credential(org="hospital-b")
    body = observation_bundle()
    location = api.post(body, mine).headers["location"]
    binary = location.replace("/Bundle/", "/Binary/")
    api.read_back(location, colleague, body)
    for url in (location, binary):
        r = api.client.get(url, headers=other)
        assert r.status_code == 404
        is_outcome(r)
        assert api.client.get(url, headers=api.credential("auditor")).status_code == 403
        assert api.client.get(url).status_code == 401
    api.read_back(location, api.credential("admin"), body)


def test_unknown_and_malformed_ids(api: Api) -> None:
    headers = api.credential()
    assert api.client.get("/fhir/Bundle/no-such-id", headers=headers).status_code == 404
    r = api.client.get("/fhir/Bundle/not%20an%20id", headers=headers)
    assert r.status_code == 400
    is_outcome(r)


# --- what the entry holds -----------------------------------------------------------------


def test_the_entry_holds_no_personal_data(api: Api) -> None:
    body = patient_bundle("MRN-12345", name="Ivanova")
    api.post(body, api.credential())
    data = api.services.log.entries(0, 1)[0]
    assert b"MRN-12345" not in data and b"Ivanova" not in data and b"urn:example" not in data


def test_the_patient_pseudonym_is_stable_within_an_org(api: Api) -> None:
    a1, a2 = api.credential(org="hospital-a"), api.credential(org="hospital-a")
    b = api.credential(org="hospital-b")
    api.post(patient_bundle("MRN-1", name="One"), a1)
    api.post(patient_bundle("MRN-1", name="Two"), a2)
    api.post(patient_bundle("MRN-1", name="One"), b)
    api.post(patient_bundle("MRN-2"), a1)
    api.post(observation_bundle(), a1)
    s = [api.entry(i).subject for i in range(5)]
    assert s[0] == s[1]
    assert s[2] != s[0] and s[3] != s[0]
    assert s[4] is None


# --- overload and a log that must not be appended to --------------------------------------


def test_too_many_submissions_in_flight_is_429(tmp_path: Path) -> None:
    with open_api(tmp_path / "data", max_in_flight=0) as api:
        r = api.post(observation_bundle(), api.credential())
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        is_outcome(r)
        assert api.log_size() == 0


def test_a_read_only_log_answers_503_and_stores_nothing(api: Api) -> None:
    api.services.log.read_only_reason = "the database was restored from an older copy"
    r = api.post(observation_bundle(), api.credential())
    assert r.status_code == 503
    assert "read-only" in is_outcome(r)["issue"][0]["diagnostics"]
    assert api.log_size() == 0 and api.bundle_rows() == 0


def test_stored_bundles_are_append_only(api: Api) -> None:
    api.post(observation_bundle(), api.credential())
    for statement in ("UPDATE exchange_bundles SET kind = 'x'", "DELETE FROM exchange_bundles"):
        with pytest.raises(DBAPIError), api.services.engine.begin() as conn:
            conn.execute(text(statement))
    assert api.bundle_rows() == 1


def test_intake_in_worker_processes(tmp_path: Path) -> None:
    with open_api(tmp_path / "data", intake_workers=1) as api:
        headers = api.credential()
        body = sample_bundles()[2]
        r = api.post(body, headers)
        assert r.status_code == 201 and r.json()["kind"] == "consent"
        bad = api.post(body.replace(b'"status": "active"', b'"status": "bogus"', 1), headers)
        assert bad.status_code == 422
        assert is_outcome(bad)["issue"][0]["expression"] == ["Bundle.entry[1].resource.status"]
        assert api.log_size() == 1
