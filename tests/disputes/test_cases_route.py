"""`POST /v1/cases`: a mediator gets a patient's case package only while the patient's
current consent names it for legal purposes (HLEGAL); each answer, refusals included, is in
the patient's accounting; the package verifies offline."""

from __future__ import annotations

from pathlib import Path

from exchange.cases import verify_package
from exchange.privacy.access import disclosures_of
from tests.api_helpers import HOSPITAL_ORG, Api, is_outcome, open_api, patient_bundle
from tests.settlement.test_settlement_index import consent_bundle

MRN = "urn:example:mrn"
PATIENT = (MRN, "MRN-7")
MEDIATOR = "hainan-mediation"
ASK = {"patient": f"{MRN}|MRN-7", "org": HOSPITAL_ORG}


def _actions(api: Api) -> list[tuple[str, str | None]]:
    subjects = api.services.vault.subjects_of(HOSPITAL_ORG, PATIENT)
    rows = disclosures_of(api.services.engine, subjects)
    return [(r.action, r.purpose) for r in rows if r.role == "mediator"]


def test_a_mediator_under_consent(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        hospital = api.credential()
        mediator = api.credential(role="mediator", org=MEDIATOR)
        assert api.post(patient_bundle("MRN-7", name="Novak"), hospital).status_code == 201

        # No consent naming the mediator: refused, and the refusal is in the accounting.
        refused = api.client.post("/v1/cases", json=ASK, headers=mediator)
        assert refused.status_code == 403, refused.text
        assert "consent" in is_outcome(refused)["issue"][0]["diagnostics"]
        assert _actions(api) == [("denied", "HLEGAL")]

        # A consent naming it for payment is not one for legal purposes.
        paying = consent_bundle(PATIENT, MEDIATOR, purpose="HPAYMT", consent_id="c-pay")
        assert api.post(paying, hospital).status_code == 201
        assert api.client.post("/v1/cases", json=ASK, headers=mediator).status_code == 403

        legal = consent_bundle(
            PATIENT, MEDIATOR, purpose="HLEGAL", consent_id="c-legal",
            date_time="2026-04-01T00:00:00Z",
        )  # fmt: skip
        assert api.post(legal, hospital).status_code == 201
        answer = api.client.post("/v1/cases", json=ASK, headers=mediator)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/zip"
        vkey = api.client.get("/v1/log/key").text.strip()
        report = verify_package(answer.content, [vkey])
        assert any(f.member.startswith("bundles/") for f in report.findings)
        assert _actions(api)[-1] == ("export", "HLEGAL")

        # Withdrawn by a newer consent: refused on the next request.
        withdrawn = consent_bundle(
            PATIENT, MEDIATOR, purpose="HLEGAL", consent_id="c-withdrawn", status="inactive",
            date_time="2026-05-01T00:00:00Z",
        )  # fmt: skip
        assert api.post(withdrawn, hospital).status_code == 201
        assert api.client.post("/v1/cases", json=ASK, headers=mediator).status_code == 403
        assert _actions(api)[-1] == ("denied", "HLEGAL")


def test_only_mediators_and_clear_errors(tmp_path: Path) -> None:
    with open_api(tmp_path / "data") as api:
        mediator = api.credential(role="mediator", org=MEDIATOR)
        insurer = api.credential(role="insurer", org="insurer-a")
        assert api.client.post("/v1/cases", json=ASK, headers=insurer).status_code == 403
        assert api.client.post("/v1/cases", json=ASK).status_code == 401
        for body, status in [
            ({**ASK, "patient": "no-bar"}, 400),
            ({**ASK, "from": "2026-13-01"}, 400),
            ({**ASK, "extra": 1}, 400),
            ({"org": HOSPITAL_ORG}, 400),
        ]:
            bad = api.client.post("/v1/cases", json=body, headers=mediator)
            assert bad.status_code == status, (body, bad.text)
            is_outcome(bad)
