"""Deciding a submission's deliveries from what the queue keeps, made exact in the transaction.

Every record submission asks the outbox which deliveries it queues. The queue answers from its
last look at the store when it holds the patient's Consents at that look's generation, with no
read; the row writer then compares the look with the store inside the ledger's transaction, and
a Consent or endpoint that came or went in between makes the submission plan again. On SQLite
and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from exchange.bootstrap import Services, open_services
from exchange.bundles.submit import Replan, Stored, SubmitRequest, submit_blocking
from exchange.config import Settings
from exchange.consent.crossborder import Recipient, set_recipient
from exchange.delivery.endpoints import parse_endpoint
from exchange.errors import Unavailable
from exchange.identity.clients import Client
from exchange.intake import IntakeLimits
from exchange.intake.worker import Checked, check
from exchange.outbox.endpoints import set_endpoint
from exchange.store.tables import bundles_table, deliveries_table
from tests.delivery.fixtures import boao_kr
from tests.outbox.helpers import BASIS, HOME, PASSPORT, TOKEN
from tests.settlement.test_settlement_index import consent_bundle

HOSPITAL = Client("cl-plan", "plan", "hospital", "hospital-a")
OTHER_PATIENT = ("http://hl7.org/fhir/sid/passport-KOR", "M87654321")


@contextmanager
def services(tmp_path: Path, db_url: str) -> Iterator[Services]:
    s = open_services(Settings(data_dir=tmp_path, db_url=db_url))
    try:
        set_recipient(s.engine, Recipient(HOME, "KR", BASIS))
        set_endpoint(
            s.engine, s.vault, HOME, parse_endpoint("http://127.0.0.1:9/fhir", token=TOKEN)
        )
        yield s
    finally:
        s.close()


def checked(body: bytes) -> Checked:
    return check(body, "application/fhir+json", IntakeLimits())


def record(n: int, patient: tuple[str, str] = PASSPORT) -> bytes:
    body = boao_kr()[0].replace(b"SUB-20261120-0001", f"SUB-PLAN-{n:04d}".encode())
    return body.replace(PASSPORT[1].encode(), patient[1].encode())


def submit(s: Services, body: bytes, planned: bool = False) -> Stored:
    """Submitted as the server does, deciding from what the queue keeps if asked to."""
    c = checked(body)
    queue = s.outbox.queue
    writer = queue.planned(HOSPITAL, c) if planned else queue.plan(HOSPITAL, c)
    return submit_blocking(s.log, s.vault, SubmitRequest(HOSPITAL, body, c, also_write=writer))


def queued_for(s: Services, stored: Stored) -> list[str]:
    t = deliveries_table.c
    with s.engine.connect() as conn:
        return list(conn.execute(select(t.recipient).where(t.bundle_idx == stored.index)).scalars())


def test_kept_answers_need_a_look_and_the_patient_at_its_generation(
    tmp_path: Path, db_url: str
) -> None:
    with services(tmp_path, db_url) as s:
        queue = s.outbox.queue
        assert queue.planned(HOSPITAL, checked(record(1))) is None  # no look yet
        submit(s, consent_bundle(PASSPORT, HOME, purpose="TREAT"))
        assert queued_for(s, submit(s, record(1))) == [HOME]
        # Kept now: decided with no read, and the same decision.
        assert queued_for(s, submit(s, record(2), planned=True)) == [HOME]
        # A patient not kept, or a bill (never delivered), gets no answer from what is kept.
        assert queue.planned(HOSPITAL, checked(record(3, OTHER_PATIENT))) is None
        # A new Consent, of anyone, is a new generation: nobody's answer is kept at it.
        submit(s, consent_bundle(OTHER_PATIENT, HOME, purpose="TREAT"))
        submit(s, record(4, OTHER_PATIENT))
        assert queue.planned(HOSPITAL, checked(record(5))) is None


def test_a_consent_given_after_deciding_is_not_missed(tmp_path: Path, db_url: str) -> None:
    with services(tmp_path, db_url) as s:
        assert queued_for(s, submit(s, record(1))) == []  # no consent: nothing queued
        c = checked(record(2))
        stale = s.outbox.queue.planned(HOSPITAL, c)  # decided: nothing to queue
        assert stale is not None
        submit(s, consent_bundle(PASSPORT, HOME, purpose="TREAT"))
        req = SubmitRequest(HOSPITAL, record(2), c, also_write=stale)
        stored = submit_blocking(s.log, s.vault, req)
        assert queued_for(s, stored) == [HOME]


def test_a_consent_withdrawn_after_deciding_queues_nothing(tmp_path: Path, db_url: str) -> None:
    with services(tmp_path, db_url) as s:
        submit(s, consent_bundle(PASSPORT, HOME, purpose="TREAT"))
        submit(s, record(1))
        c = checked(record(2))
        stale = s.outbox.queue.planned(HOSPITAL, c)  # decided: one delivery
        assert stale is not None
        withdrawn = consent_bundle(
            PASSPORT, HOME, purpose="TREAT", status="inactive", date_time="2026-06-01T00:00:00Z"
        )
        submit(s, withdrawn)
        req = SubmitRequest(HOSPITAL, record(2), c, also_write=stale)
        assert queued_for(s, submit_blocking(s.log, s.vault, req)) == []


def test_an_endpoint_recorded_after_deciding_is_not_missed(tmp_path: Path, db_url: str) -> None:
    with services(tmp_path, db_url) as s:
        other = "home-kr-2"
        set_recipient(s.engine, Recipient(other, "KR", BASIS))
        submit(s, consent_bundle(PASSPORT, other, purpose="TREAT"))
        submit(s, record(1))
        c = checked(record(2))
        stale = s.outbox.queue.planned(HOSPITAL, c)  # the consented recipient has no endpoint
        assert stale is not None
        set_endpoint(s.engine, s.vault, other, parse_endpoint("mllp://127.0.0.1:9"))
        req = SubmitRequest(HOSPITAL, record(2), c, also_write=stale)
        assert queued_for(s, submit_blocking(s.log, s.vault, req)) == [other]


def test_decided_again_once_from_a_read_after_the_record_came(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What changes after the second decision comes as the record does: it may count or not,
    # so the second decision is not made sure again.
    with services(tmp_path, db_url) as s:
        submit(s, consent_bundle(PASSPORT, HOME, purpose="TREAT"))
        submit(s, record(1))
        looks = []

        def never(conn: object, look: object) -> bool:
            looks.append(look)
            return False

        monkeypatch.setattr("exchange.outbox.queue.still", never)
        stored = submit(s, record(2), planned=True)
        assert len(looks) == 1 and queued_for(s, stored) == [HOME]


def test_a_writer_that_asks_twice_is_answered_503_and_nothing_is_kept(
    tmp_path: Path, db_url: str
) -> None:
    with services(tmp_path, db_url) as s:
        before = s.log.size()
        asked = []

        def restless(conn: object, entry: object, bundle_id: str, version: int) -> None:
            asked.append(bundle_id)
            raise Replan("the store changed", lambda: restless)

        req = SubmitRequest(HOSPITAL, record(1), checked(record(1)), also_write=restless)
        with pytest.raises(Unavailable) as raised:
            submit_blocking(s.log, s.vault, req)
        assert raised.value.retry_after == 1 and len(asked) == 2
        assert s.log.size() == before
        with s.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(bundles_table)).scalar() == 0
            assert conn.execute(select(func.count()).select_from(deliveries_table)).scalar() == 0
