"""The cross-border transfer gate: legal basis, named consent, and the yearly threshold."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from exchange.cli.main import main
from exchange.consent.crossborder import (
    GateConfig,
    LegalBasis,
    Recipient,
    TransferLedger,
    decide,
    recipient_of,
    set_recipient,
)
from exchange.store import migrate
from ledger.store import make_engine

CONTRACT = LegalBasis("standard-contract", "粤网信备20260001")
THRESHOLD = 5


def patient(n: int) -> bytes:
    return hashlib.sha256(f"patient-{n}".encode()).digest()


@pytest.fixture
def gate(db_url: str) -> TransferLedger:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    return TransferLedger(engine, GateConfig(threshold=THRESHOLD))


def send(gate: TransferLedger, n: int, year: int = 2026, **kw: object) -> bool:
    args: dict[str, object] = {
        "year": year,
        "subject": patient(n),
        "recipient": "insurer-kr",
        "recipient_country": "KR",
        "basis": CONTRACT,
        "consent_names_recipient": True,
    }
    args.update(kw)
    return gate.admit(**args).allowed  # type: ignore[arg-type]


def test_threshold_boundary_and_year_reset(gate: TransferLedger) -> None:
    for n in range(THRESHOLD - 1):
        assert send(gate, n)
    assert gate.distinct_patients(2026) == THRESHOLD - 1
    assert send(gate, THRESHOLD - 1)  # the threshold-th patient still goes
    assert gate.distinct_patients(2026) == THRESHOLD
    refused = gate.admit(
        year=2026,
        subject=patient(THRESHOLD),
        recipient="insurer-kr",
        recipient_country="KR",
        basis=CONTRACT,
        consent_names_recipient=True,
    )
    assert not refused.allowed and "security assessment" in refused.reason
    assert gate.distinct_patients(2026) == THRESHOLD  # a refusal counts no one
    assert send(gate, 0)  # a patient already counted this year is not a new one
    assert send(gate, THRESHOLD, year=2027)  # 1 January starts a new count
    assert gate.distinct_patients(2027) == 1


def test_a_security_assessment_lifts_the_threshold(gate: TransferLedger) -> None:
    for n in range(THRESHOLD):
        assert send(gate, n)
    assert not send(gate, THRESHOLD)
    assert send(gate, THRESHOLD, basis=LegalBasis("security-assessment", "CAC-2026-77"))
    gate.config = GateConfig(threshold=THRESHOLD, security_assessment_id="CAC-2026-78")
    assert send(gate, THRESHOLD + 1)


@pytest.mark.parametrize(
    ("basis", "words"),
    [
        (None, "no legal basis"),
        (LegalBasis("standard-contract", " "), "filing or approval number"),
        (LegalBasis("certification"), "filing or approval number"),
        (LegalBasis("because"), "not one of"),
    ],
)
def test_a_missing_or_incomplete_basis_refuses(
    gate: TransferLedger, basis: LegalBasis | None, words: str
) -> None:
    d = gate.admit(
        year=2026,
        subject=patient(1),
        recipient="insurer-kr",
        recipient_country="KR",
        basis=basis,
        consent_names_recipient=True,
    )
    assert not d.allowed and words in d.reason
    assert gate.distinct_patients(2026) == 0


def test_consent_naming_another_recipient_refuses(gate: TransferLedger) -> None:
    assert not send(gate, 1, consent_names_recipient=False)
    assert send(gate, 1, basis=LegalBasis("emergency"))  # grounds without a number stand
    assert gate.distinct_patients(2026) == 1


def test_a_recipient_in_china_is_not_a_transfer(gate: TransferLedger) -> None:
    assert send(gate, 1, recipient_country="cn", basis=None, consent_names_recipient=False)
    assert gate.distinct_patients(2026) == 0


def test_concurrent_disclosures_do_not_overshoot(gate: TransferLedger) -> None:
    with ThreadPoolExecutor(8) as pool:
        allowed = list(pool.map(lambda n: send(gate, n), range(4 * THRESHOLD)))
    assert sum(allowed) == THRESHOLD
    assert gate.distinct_patients(2026) == THRESHOLD


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 8), st.sampled_from([2025, 2026])), max_size=40),
    st.integers(0, 4),
)
def test_rule_against_a_model(transfers: list[tuple[int, int]], threshold: int) -> None:
    counted: dict[int, set[int]] = {}
    config = GateConfig(threshold=threshold)
    for n, year in transfers:
        seen = counted.setdefault(year, set())
        d = decide(
            recipient_country="DE",
            basis=CONTRACT,
            consent_names_recipient=True,
            patient_counted_this_year=n in seen,
            distinct_patients_this_year=len(seen),
            config=config,
        )
        assert d.allowed == (n in seen or len(seen) < threshold)
        assert d.counted == (n not in seen and d.allowed)
        if d.counted:
            seen.add(n)
        assert len(seen) <= threshold


def test_recipients_are_recorded_and_checked(gate: TransferLedger) -> None:
    engine = gate.engine  # the gate made the tables
    assert recipient_of(engine, "insurer-kr") is None
    set_recipient(engine, Recipient("insurer-kr", "kr", CONTRACT))
    assert recipient_of(engine, "insurer-kr") == Recipient("insurer-kr", "KR", CONTRACT)
    set_recipient(engine, Recipient("insurer-kr", "KR", LegalBasis("emergency")))
    assert recipient_of(engine, "insurer-kr") == Recipient(
        "insurer-kr", "KR", LegalBasis("emergency")
    )
    with pytest.raises(ValueError, match="alpha-2"):
        set_recipient(engine, Recipient("insurer-x", "KOR", CONTRACT))
    with pytest.raises(ValueError, match="number"):
        set_recipient(engine, Recipient("insurer-x", "DE", LegalBasis("standard-contract")))


def test_recipients_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data", str(tmp_path)]
    assert main(["recipients", "show", "--org", "insurer-kr", *data]) == 3
    assert "recipients set" in capsys.readouterr().err
    assert (
        main(
            [
                "recipients",
                "set",
                "--org",
                "insurer-kr",
                "--country",
                "KR",
                "--basis",
                "standard-contract",
                "--reference",
                "琼网信备2026-0042",
                *data,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "recipients",
                "set",
                "--org",
                "x",
                "--country",
                "KR",
                "--basis",
                "certification",
                *data,
            ]
        )
        == 1
    )
    capsys.readouterr()
    assert main(["recipients", "show", "--org", "insurer-kr", "--json", *data]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "org": "insurer-kr",
        "country": "KR",
        "basis": "standard-contract",
        "reference": "琼网信备2026-0042",
        "endpoint": None,
    }


def test_a_patient_already_counted_is_admitted_without_the_write_lock(
    gate: TransferLedger,
) -> None:
    # Most deliveries are of patients counted earlier this year: deciding them takes no
    # write transaction (on SQLite, BEGIN IMMEDIATE; on PostgreSQL, the year's advisory lock).
    locks: list[str] = []

    def note(conn: object, cursor: object, statement: str, *rest: object) -> None:
        if "BEGIN IMMEDIATE" in statement or "pg_advisory_xact_lock" in statement:
            locks.append(statement)

    event.listen(gate.engine, "before_cursor_execute", note)
    assert send(gate, 1)
    assert len(locks) == 1  # the first disclosure counts the patient, under the lock
    assert send(gate, 1) and send(gate, 1, recipient="insurer-jp", recipient_country="JP")
    assert len(locks) == 1
    assert gate.distinct_patients(2026) == 1
    # Refusals still come first: an already-counted patient without a basis is refused.
    assert not send(gate, 1, basis=None)
    assert send(gate, 2) and len(locks) == 2
