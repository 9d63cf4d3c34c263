"""Only the latest version of a consent Bundle counts (issue 19, item 1).

A consent Bundle replaced with If-Match by a version whose Consent is inactive, entered in
error, or gone, no longer permits anything on the next request: not the insurer's search, not
its export, not the regulator's RWD export, not the cross-border gate. Hospitals regenerate
resource ids with each version, and a withdrawal may state the consent's date with day
precision only, so none of this may hang on ids or on the superseded dateTime. A Consent
without dateTime is refused at intake.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exchange.consent import rules as consent_rules
from exchange.consent.crossborder import LegalBasis
from tests.api_helpers import Api, is_outcome, open_api
from tests.indexes.test_trace_api import GTIN
from tests.settlement.test_rwd_export_api import PASSPORT as RWD_PASSPORT
from tests.settlement.test_rwd_export_api import REGULATOR, patient_pack
from tests.settlement.test_settlement_index import (
    PASSPORT,
    _uuid,
    consent_resource,
    settlement_bundle,
)
from tests.settlement.test_settlement_search import (
    PAY,
    insurer,
    pid,
    recipient,
    resources,
    search,
    submit,
)

KIM = (PASSPORT, "M40000001")
FORM = {"system": "urn:example:consent-form", "value": "CF-2026-0001"}
# The consent as first given (with its time of day), and the same day without a time.
GIVEN = "2026-03-01T09:30:00+08:00"
SAME_DAY = "2026-03-01"


def consent_version(patient: tuple[str, str], *consents: dict[str, Any]) -> bytes:
    """One version of the hospital's consent form Bundle (Bundle.identifier FORM): the patient
    and the given Consents, each made to point at the patient."""
    ref = _uuid(f"patient:{patient}")
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": ref,
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": patient[0], "value": patient[1]}],
            },
        }
    ]
    for n, c in enumerate(consents):
        entries.append({"fullUrl": _uuid(f"{patient}:{n}:{json.dumps(c)}"), "resource": c})
    for entry in entries[1:]:
        entry["resource"]["patient"] = {"reference": ref}
    doc = {"resourceType": "Bundle", "identifier": FORM, "type": "collection", "entry": entries}
    return json.dumps(doc).encode()


def consent(recipient_org: str, **options: Any) -> dict[str, Any]:
    """A Consent naming `recipient_org` (see consent_resource); `consent_id=None`: no id."""
    no_id = options.get("consent_id", "") is None
    if no_id:
        options.pop("consent_id")
    found = consent_resource("", recipient_org, **{"date_time": GIVEN, **options})
    if no_id:
        del found["id"]
    return found


# Each case: the first version's Consents and the replacement's (for a recipient), the
# replacement's Consents no longer permitting that recipient.
Case = tuple[Callable[[str, str], list[dict]], Callable[[str, str], list[dict]]]
CASES: dict[str, Case] = {
    "inactive-replacement": (
        lambda org, purpose: [consent(org, purpose=purpose, consent_id="form-v1")],
        lambda org, purpose: [
            consent(
                org, purpose=purpose, consent_id="form-v2", status="inactive", date_time=SAME_DAY
            )
        ],
    ),  # fmt: skip
    "entered-in-error-replacement": (
        lambda org, purpose: [consent(org, purpose=purpose, consent_id="form-v1")],
        lambda org, purpose: [
            consent(org, purpose=purpose, consent_id="form-v2", status="entered-in-error")
        ],
    ),
    "replacement-without-the-consent": (
        lambda org, purpose: [consent(org, purpose=purpose, consent_id="form-v1")],
        lambda org, purpose: [],
    ),
    "id-less-consent-followed-by-a-newer-one": (
        lambda org, purpose: [consent(org, purpose=purpose, consent_id=None)],
        lambda org, purpose: [
            consent("another-recipient", purpose=purpose, consent_id=None, date_time=SAME_DAY)
        ],
    ),
}


def replace_consent(
    api: Api, case: Case, patient: tuple[str, str], org: str, purpose: str,
    permitted: Callable[[], bool],
) -> None:  # fmt: skip
    """Submits the first version (which permits), then the replacement (which must not)."""
    first, second = case
    hospital = api.credential()
    submit(api, consent_version(patient, *first(org, purpose)), hospital)
    assert permitted(), "the first version's consent should permit"
    replacement = consent_version(patient, *second(org, purpose))
    replaced = api.post(replacement, {**hospital, "If-Match": 'W/"1"'})
    assert replaced.status_code == 201, replaced.text
    assert not permitted(), "a replaced consent still permits"


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_replaced_consent_no_longer_permits_the_insurer_search(tmp_path: Path, case: str) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        submit(api, settlement_bundle(KIM, "insurer-a"), hospital)
        ins = insurer(api)

        def permitted() -> bool:
            answer = search(api, "Claim", ins, **{"patient.identifier": pid(KIM)})
            return bool(resources(answer))

        replace_consent(api, CASES[case], KIM, "insurer-a", "HPAYMT", permitted)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_replaced_consent_no_longer_permits_the_insurer_export(tmp_path: Path, case: str) -> None:
    from tests.settlement.test_bulk_export import exported

    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        submit(api, settlement_bundle(KIM, "insurer-a"), hospital)
        ins = insurer(api)

        def permitted() -> bool:
            return bool(exported(api, ins, _type="Claim")[1])

        replace_consent(api, CASES[case], KIM, "insurer-a", "HPAYMT", permitted)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_replaced_consent_no_longer_permits_the_regulator_export(
    tmp_path: Path, case: str
) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        passport = "444444444"
        assert api.post(patient_pack(1, passport), hospital).status_code == 201
        regulator = {**api.credential("regulator", REGULATOR), "X-Purpose-Of-Use": "HRESCH"}

        def permitted() -> bool:
            got = api.client.get("/v1/trace/rwd-export", params={"gtin": GTIN}, headers=regulator)
            assert got.status_code == 200, got.text
            return bool(got.content)

        patient = (RWD_PASSPORT, passport)
        replace_consent(api, CASES[case], patient, REGULATOR, "HRESCH", permitted)


def test_the_cross_border_gate_reads_the_latest_version(tmp_path: Path) -> None:
    """The replacement permits any payer but no longer names the foreign insurer: the
    separate consent PIPL art. 39 asks for is gone, so the gate refuses."""
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        submit(api, settlement_bundle(KIM, "insurer-kr"), hospital)
        recipient(api, "insurer-kr", "KR", LegalBasis("standard-contract", "2026-0042"))
        ins = {**api.credential("insurer", "insurer-kr"), **PAY}
        submit(api, consent_version(KIM, consent("insurer-kr", consent_id="form-v1")), hospital)
        query = {"patient.identifier": pid(KIM)}
        assert len(resources(search(api, "Claim", ins, **query))) == 1
        anyone = consent("insurer-kr", consent_id="form-v2", date_time=SAME_DAY)
        del anyone["provision"]["actor"]
        replaced = api.post(consent_version(KIM, anyone), {**hospital, "If-Match": 'W/"1"'})
        assert replaced.status_code == 201, replaced.text
        assert resources(search(api, "Claim", ins, **query)) == []


def test_a_consent_without_datetime_is_refused_at_intake(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        undated = consent("insurer-a")
        del undated["dateTime"]
        refused = api.post(consent_version(KIM, consent("insurer-a"), undated), api.credential())
        assert refused.status_code == 422, refused.text
        (issue,) = is_outcome(refused)["issue"]
        assert issue["expression"] == ["Bundle.entry[2].resource.dateTime"]
        assert "Consent.dateTime" in issue["diagnostics"]
        assert api.log_size() == 0


def test_an_undated_consent_stored_before_the_rule_permits_nothing() -> None:
    undated = consent("insurer-a", consent_id="old")
    del undated["dateTime"]
    req = consent_rules.Request("insurer-a", "HPAYMT", "Claim", consent_rules._instant(GIVEN))
    decision = consent_rules.evaluate([undated], req)
    assert not decision.permit and "dateTime" in decision.reason
    assert consent_rules.evaluate([consent("insurer-a")], req).permit
