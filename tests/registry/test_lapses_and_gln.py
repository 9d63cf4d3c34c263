"""Accreditation lapses (JCI: three years after the last (re)assessment) and institution GLNs."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from exchange.http.routes import verification as vr
from exchange.registry import institutions as inst
from tests.api_helpers import open_api
from tests.registry.test_institutions import BASE

OVERDUE = inst.Accreditation(
    "JCI", "hospital", date(2022, 1, 1), date(2027, 12, 31), date(2023, 1, 10)
)


def test_a_jci_accreditation_lapses_three_years_after_its_last_survey() -> None:
    assert inst.lapse_of(OVERDUE) == inst.Lapse(date(2026, 1, 10), "reassessment-overdue")
    assert inst.accreditation_status(OVERDUE, date(2026, 1, 9)) == "accredited"
    assert inst.accreditation_status(OVERDUE, date(2026, 1, 10)) == "lapsed"
    never_resurveyed = replace(OVERDUE, last_reassessment=None)
    assert inst.lapse_of(never_resurveyed) == inst.Lapse(date(2025, 1, 1), "reassessment-overdue")
    iso = replace(OVERDUE, body="ISO 9001")  # no reassessment cycle: its stated end decides
    assert inst.lapse_of(iso) == inst.Lapse(date(2028, 1, 1), "expired")
    resurveyed = replace(OVERDUE, last_reassessment=date(2025, 6, 1))
    assert inst.lapse_of(resurveyed) == inst.Lapse(date(2028, 1, 1), "expired")
    record = replace(BASE, accreditations=(OVERDUE,))
    verdict = inst.check_sender(record, date(2026, 6, 1), strict=True)
    assert verdict.flags == ("accreditation-lapsed:JCI:2026-01-09",)


@given(
    st.dates(date(2000, 1, 1), date(2080, 1, 1)),
    st.integers(0, 3000),
    st.integers(0, 3000) | st.none(),
    st.integers(-10, 4000),
)
def test_lapse_is_never_later_than_its_end_nor_the_cycle(
    start: date, length: int, surveyed: int | None, probe: int
) -> None:
    last = None if surveyed is None else start + timedelta(days=min(surveyed, length))
    acc = inst.Accreditation("JCI", "s", start, start + timedelta(days=length), last)
    lapse = inst.lapse_of(acc)
    assert lapse.on <= acc.valid_to + timedelta(days=1)
    assert lapse.on <= inst._years_after(last or start, 3)
    day = start + timedelta(days=probe)
    expected = "not-yet" if day < start else ("accredited" if day < lapse.on else "lapsed")
    assert inst.accreditation_status(acc, day) == expected


def test_the_verification_result_shows_the_lapse(tmp_path: Path) -> None:
    today = date.today()
    acc = inst.Accreditation(
        "JCI", "hospital", today - timedelta(days=1500), today + timedelta(days=300),
        today - timedelta(days=1200),
    )  # fmt: skip
    record = replace(
        BASE,
        licence_valid_from=today - timedelta(days=10),
        licence_valid_to=today + timedelta(days=10),
        accreditations=(acc,),
    )
    with open_api(tmp_path) as api:
        key = Ed25519PrivateKey.generate()
        inst.register_admin_key(api.services.engine, "admin-1", key.public_key())
        inst.append_attestation(api.services.log, inst.sign_attestation(record, "admin-1", key))
        answer = api.client.get(
            "/fhir/VerificationResult",
            params={"target": f"Organization/{BASE.org}"},
            headers=api.credential("regulator", "reg-1"),
        )
        assert answer.status_code == 200, answer.text
        accreditation = answer.json()["entry"][1]["resource"]
        assert accreditation["status"] == "req-revalid"
        lapse = inst.lapse_of(acc)
        assert lapse.reason == "reassessment-overdue"
        assert accreditation["nextScheduled"] == lapse.on.isoformat()
        assert accreditation["extension"][1] == {
            "url": vr.LAPSE_EXTENSION,
            "extension": [
                {"url": "date", "valueDate": lapse.on.isoformat()},
                {"url": "reason", "valueCode": "reassessment-overdue"},
            ],
        }


def test_a_gln_is_recorded_only_with_its_check_digit() -> None:
    record = replace(BASE, gln="6901234567892")
    assert inst.Institution.from_json(record.to_json()) == record
    assert "gln" not in BASE.to_json()  # records without one keep their earlier bytes
    for bad in ("6901234567891", "690123456789", "69012345678921", "690123456789X"):
        with pytest.raises(inst.RegistryError, match="not a GLN"):
            replace(BASE, gln=bad)
        with pytest.raises(inst.RegistryError):
            inst.Institution.from_json({**BASE.to_json(), "gln": bad})
