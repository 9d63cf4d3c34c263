"""Institution registry: signed attestations on the ledger, replay, sender checks."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from exchange.registry import institutions as inst
from exchange.store import migrate
from tests.ledger_helpers import new_signer, open_log

JCI = inst.Accreditation("JCI", "hospital", date(2024, 1, 1), date(2026, 12, 31), date(2025, 6, 1))
BASE = inst.Institution(
    org="boao-hosp-1",
    name_zh="博鳌一院",
    name_en="Boao Hospital One",
    licence_number="PDY-0001",
    licence_valid_from=date(2024, 1, 1),
    licence_valid_to=date(2027, 12, 31),
    region="Boao Lecheng pilot zone",
    accreditations=(JCI,),
)


@pytest.fixture
def log(db_url: str):
    lg = open_log(db_url, new_signer())
    migrate.upgrade(lg.engine)
    yield lg
    lg.close()


def test_signed_changes_replay_to_the_registry(log) -> None:
    key = Ed25519PrivateKey.generate()
    inst.register_admin_key(log.engine, "admin-1", key.public_key())
    i0 = inst.append_attestation(log, inst.sign_attestation(BASE, "admin-1", key))
    other = replace(BASE, org="hosp-2", licence_number="PDY-0002")
    inst.append_attestation(log, inst.sign_attestation(other, "admin-1", key))
    banned = replace(BASE, blacklisted=True, blacklist_reason="fraudulent claims")
    i2 = inst.append_attestation(log, inst.sign_attestation(banned, "admin-1", key))
    assert i2 > i0
    assert inst.replay_registry(log) == inst.current_registry(log.engine)
    assert inst.current_registry(log.engine)["boao-hosp-1"].blacklisted
    assert inst.registry_as_of(log, date(2000, 1, 1)) == {}


def test_unregistered_or_wrong_key_appends_nothing(log) -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    with pytest.raises(inst.RegistryError, match="no registered key"):
        inst.append_attestation(log, inst.sign_attestation(BASE, "admin-1", key))
    inst.register_admin_key(log.engine, "admin-1", key.public_key())
    with pytest.raises(inst.RegistryError, match="not the registered key"):
        inst.append_attestation(log, inst.sign_attestation(BASE, "admin-1", other))
    assert log.size() == 0


def test_tampered_attestation_fails_signature() -> None:
    key = Ed25519PrivateKey.generate()
    data = inst.sign_attestation(BASE, "admin-1", key)
    bad = data.replace(b"PDY-0001", b"PDY-0009")
    with pytest.raises(inst.RegistryError, match="bad signature"):
        inst.verify_attestation(bad)
    assert inst.verify_attestation(data).record == BASE


def test_tampered_stored_row_is_caught_on_replay(log) -> None:
    key = Ed25519PrivateKey.generate()
    inst.register_admin_key(log.engine, "admin-1", key.public_key())
    idx = inst.append_attestation(log, inst.sign_attestation(BASE, "admin-1", key))
    forged = inst.sign_attestation(replace(BASE, licence_valid_to=date(2099, 1, 1)), "admin-1", key)
    with log.engine.begin() as conn:
        conn.execute(
            inst.attestations_table.update()
            .where(inst.attestations_table.c.idx == idx)
            .values(data=forged)
        )
    with pytest.raises(inst.RegistryError, match="commitment"):
        inst.replay_registry(log)


def test_sender_verdicts() -> None:
    today = date(2027, 6, 1)
    assert inst.check_sender(None, today, strict=True).refused
    assert inst.check_sender(None, today, strict=False).flags == ("unregistered",)
    v = inst.check_sender(BASE, today, strict=True)
    assert v.refused is None and v.flags == ("accreditation-lapsed:JCI:2026-12-31",)
    assert inst.check_sender(BASE, date(2026, 6, 1), strict=True) == inst.SenderVerdict(None)
    expired = inst.check_sender(BASE, date(2028, 1, 1), strict=False)
    assert expired.refused and "expired on 2027-12-31" in expired.refused
    banned = replace(BASE, blacklisted=True, blacklist_reason="fraud")
    assert "blacklisted: fraud" in (inst.check_sender(banned, today, strict=False).refused or "")


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)))
def test_licence_rule_holds_for_every_day(day: date) -> None:
    verdict = inst.check_sender(BASE, day, strict=True)
    inside = BASE.licence_valid_from <= day <= BASE.licence_valid_to
    assert (verdict.refused is None) == inside
    assert inst.check_sender(BASE, day + timedelta(0), strict=False) == verdict
