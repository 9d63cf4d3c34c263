"""Consent decision table (FHIR R4 Consent rules) against a small reference model."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.consent.rules import (
    TREATMENT,
    TREATMENT_PURPOSES,
    ConsentError,
    Request,
    evaluate,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ORGS = ("insurer-a", "insurer-b")
PURPOSES = ("HPAYMT", "CLMATTCH", "COVAUTH", "TREAT")
TYPES = ("Claim", "Invoice")
EXCEPTIONS = ("none", "deny-claim", "permit-claim", "deny-claim-but-clmattch")


def _consent(
    cid: str, status: str, when: str, expired: bool, root: str, actor: str, purpose: str,
    exception: str,
) -> dict[str, Any]:  # fmt: skip
    claim = [{"system": "http://hl7.org/fhir/resource-types", "code": "Claim"}]
    nested: list[dict[str, Any]] = []
    if exception == "deny-claim":
        nested = [{"type": "deny", "class": claim}]
    elif exception == "permit-claim":
        nested = [{"type": "permit", "class": claim}]
    elif exception == "deny-claim-but-clmattch":
        inner = {"type": "permit", "purpose": [{"code": "CLMATTCH"}]}
        nested = [{"type": "deny", "class": claim, "provision": [inner]}]
    period = {"start": "2025-01-01", "end": "2026-01-01" if expired else "2027-01-01"}
    provision: dict[str, Any] = {
        "type": root,
        "period": period,
        "actor": [{"reference": {"reference": f"Organization/{actor}"}}],
        "purpose": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": purpose}
        ],
    }
    if nested:
        provision["provision"] = nested
    return {"resourceType": "Consent", "id": cid, "status": status, "dateTime": when,
            "provision": provision}  # fmt: skip


def _reference(p: tuple[Any, ...], org: str, purpose: str, rtype: str) -> bool:
    """The expected decision of one consent of the restricted shape above, as a flat table."""
    status, expired, root, actor, cpurpose, exception = p
    if purpose == "TREAT" or status != "active" or expired or actor != org:
        return False
    covered = purpose == cpurpose or (cpurpose == "HPAYMT" and purpose in ("CLMATTCH", "COVAUTH"))
    if not covered:
        return False
    claim = rtype == "Claim"
    if exception == "deny-claim" and claim:
        return False
    if exception == "permit-claim" and claim:
        return True
    if exception == "deny-claim-but-clmattch" and claim:
        return purpose == "CLMATTCH"
    return root == "permit"


params = st.tuples(
    st.sampled_from(("active", "inactive", "rejected")),
    st.booleans(),
    st.sampled_from(("permit", "deny")),
    st.sampled_from(ORGS),
    st.sampled_from(("HPAYMT", "CLMATTCH", "COVAUTH")),
    st.sampled_from(EXCEPTIONS),
)


@settings(max_examples=400, deadline=None)
@given(
    first=params,
    newer=st.none() | params,
    withdrawn=st.booleans(),
    org=st.sampled_from(ORGS),
    purpose=st.sampled_from(PURPOSES),
    rtype=st.sampled_from(TYPES),
)
def test_decision_matches_reference_model(
    first: tuple[Any, ...], newer: tuple[Any, ...] | None, withdrawn: bool, org: str,
    purpose: str, rtype: str,
) -> None:  # fmt: skip
    consents = [_consent("c1", *_with_when(first, "2025-02-01"))]
    if withdrawn:  # a new version of c1, withdrawn: it takes effect on the next request
        consents.append(_consent("c1", "inactive", *_with_when(first, "2025-02-01")[1:]))
    if newer is not None:  # a newer consent supersedes whatever came before
        consents.append(_consent("c2", *_with_when(newer, "2025-03-01")))
    if newer is not None:
        expected = _reference(newer, org, purpose, rtype)
    elif withdrawn:
        expected = False
    else:
        expected = _reference(first, org, purpose, rtype)
    got = evaluate(consents, Request(org, purpose, rtype, NOW))
    assert got.permit is expected, (consents, org, purpose, rtype, got)


def _with_when(p: tuple[Any, ...], when: str) -> tuple[Any, ...]:
    status, expired, root, actor, purpose, exception = p
    return (status, when, expired, root, actor, purpose, exception)


def _permit_a(**extra: Any) -> dict[str, Any]:
    c = _consent("c", "active", "2025-02-01", False, "permit", "insurer-a", "HPAYMT", "none")
    c["provision"].update(extra)
    return c


@pytest.mark.parametrize(
    ("consents", "req", "permit", "reason"),
    [
        ([_permit_a()], Request("insurer-a", "HPAYMT", "Claim", NOW), True, "permitted"),
        ([_permit_a()], Request("insurer-b", "HPAYMT", "Claim", NOW), False, "does not cover"),
        ([_permit_a()], Request("insurer-a", "TREAT", "Claim", NOW), False, "not a payment"),
        ([], Request("insurer-a", "HPAYMT", "Claim", NOW), False, "no consent"),
        (
            [_permit_a(dataPeriod={"start": "2025-01-01", "end": "2025-12-31"})],
            Request("insurer-a", "HPAYMT", "Claim", NOW, date(2026, 2, 1)),
            False,
            "does not cover",
        ),
        (
            [_permit_a(dataPeriod={"start": "2025-01-01", "end": "2025-12-31"})],
            Request("insurer-a", "HPAYMT", "Claim", NOW, date(2025, 7, 1)),
            True,
            "permitted",
        ),
        (
            [
                _permit_a(),
                {**_permit_a(), "id": "e", "status": "entered-in-error", "dateTime": "2026-01-01"},
            ],
            Request("insurer-a", "HPAYMT", "Invoice", NOW),
            True,
            "permitted",
        ),
    ],
)
def test_named_cases(
    consents: list[dict[str, Any]], req: Request, permit: bool, reason: str
) -> None:
    got = evaluate(consents, req)
    assert got.permit is permit
    assert reason in got.reason


def test_a_non_consent_is_refused_with_its_type() -> None:
    with pytest.raises(ConsentError, match="Patient"):
        evaluate([{"resourceType": "Patient"}], Request("insurer-a", "HPAYMT", "Claim", NOW))


def _treat(purpose: str, actor: str = "home-kr", **extra: Any) -> dict[str, Any]:
    c = _consent("t", "active", "2025-02-01", False, "permit", actor, purpose, "none")
    c["provision"].update(extra)
    return c


@pytest.mark.parametrize(
    ("consents", "purpose", "permit", "reason"),
    [
        ([_treat("TREAT")], "TREAT", True, "permitted"),
        ([_treat("TREAT")], "ETREAT", True, "permitted"),  # TREAT covers its specialisations
        ([_treat("ETREAT")], "TREAT", False, "does not cover"),  # not the other way round
        ([_treat("ETREAT")], "BTG", True, "permitted"),
        ([_treat("COC")], "COC", True, "permitted"),
        ([_treat("HPAYMT")], "TREAT", False, "does not cover"),  # payment is not treatment
        ([_treat("TREAT", actor="insurer-a")], "TREAT", False, "does not cover"),
        ([_treat("TREAT")], "HPAYMT", False, "not a treatment purpose"),
        ([], "TREAT", False, "no consent"),
        ([{**_treat("TREAT"), "status": "inactive"}], "TREAT", False, "inactive"),
    ],
)
def test_treatment_cases(
    consents: list[dict[str, Any]], purpose: str, permit: bool, reason: str
) -> None:
    got = evaluate(consents, Request("home-kr", purpose, "Bundle", NOW), TREATMENT)
    assert got.permit is permit
    assert reason in got.reason


@settings(max_examples=60, deadline=None)
@given(stated=st.sampled_from(sorted(TREATMENT_PURPOSES)), asked=st.sampled_from(
    sorted(TREATMENT_PURPOSES)))  # fmt: skip
def test_treatment_purpose_is_covered_exactly_by_its_hierarchy(stated: str, asked: str) -> None:
    # A consent for the treatment purpose `stated` covers exactly what v3-ActReason puts under it.
    got = evaluate([_treat(stated)], Request("home-kr", asked, "Bundle", NOW), TREATMENT)
    assert got.permit is (asked in TREATMENT_PURPOSES[stated])
    # and never a payer's request
    assert not evaluate([_treat(stated)], Request("home-kr", "HPAYMT", "Claim", NOW)).permit
