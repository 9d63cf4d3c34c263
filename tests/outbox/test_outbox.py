"""The outbox against real peers: a FHIR receiver (FastAPI, fhir.resources, conditional
create) and an HL7 v2 receiver (python-hl7's MLLP server), on SQLite and PostgreSQL.

Delivered exactly once from the receiver's point of view however often it is retried; refused
without consent, at queueing and at sending; AR final, AE retried with the same bytes; every
final outcome a `delivery` entry that commits to the bytes the receiver got, and an access
entry in the patient's accounting.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from exchange.cli.main import main
from exchange.privacy.access import disclosures_of
from ledger.entry import commitment
from tests.api_helpers import Api, is_outcome
from tests.delivery.fixtures import boao_kr
from tests.delivery.peers import ReceiverState, bound_socket, fhir_receiver
from tests.outbox.helpers import (
    HOME,
    TOKEN,
    consent,
    deliveries,
    exchange,
    hl7_receiver,
    recipient,
    record,
    record_of,
    row,
    settled,
    sha256,
)


def _proved(api: Api, delivery: dict[str, Any], received: bytes) -> dict[str, Any]:
    """The delivery's entry commits to its record, and the record to the bytes received;
    the patient's accounting holds the delivery. Returns the record."""
    deadline = time.monotonic() + 10
    # The access entry follows the delivery entry (the worker's next step).
    while (stored := row(api, delivery["id"])).access_index is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    entry = api.entry(delivery["ledger_index"])
    assert entry.kind == "delivery" and entry.sender == "hospital-a"
    assert entry.commit == commitment(bytes(stored.salt), bytes(stored.record))
    assert entry.subject == bytes(stored.subject)
    # The subject is the patient's pseudonym, the same as the record Bundle's own entry's.
    bundle_entry = api.entry(int(stored.bundle_idx))
    assert entry.subject == bundle_entry.subject
    doc = record_of(api, delivery["id"])
    assert doc["sent"]["sha256"] == sha256(received)
    assert doc["sent"]["length"] == len(received)
    assert doc["recipient"] == f"Organization/{HOME}"
    # No PHI in what the entry commits to: neither the patient's name nor their passport.
    assert b"M12345678" not in stored.record and b"Kim" not in stored.record
    accounting = disclosures_of(api.services.engine, entry.subject)
    mine = [a for a in accounting if a.org == HOME and delivery["id"].encode() in a.data]
    assert stored.access_index in [a.index for a in mine]
    return doc


@pytest.mark.parametrize("lost", [False, True], ids=["503-then-201", "answer-lost"])
def test_delivered_once_across_retries(tmp_path: Path, db_url: str, lost: bool) -> None:
    with fhir_receiver() as peer, exchange(tmp_path, db_url) as api:
        peer.bearer_tokens.add(TOKEN)
        peer.retry_after = None
        peer.fail_next = 1  # 503 first
        peer.lose_answers = 1 if lost else 0  # then stored, but the answer lost (503)
        recipient(api, f"{peer.base}/fhir", token=TOKEN)
        hospital = api.credential()
        consent(api, hospital)
        submitted = record(api, hospital)
        [done] = settled(api, hospital)
        assert done["status"] == "delivered", done
        assert done["bundle"] == submitted["id"] and done["version"] == 1
        assert done["transport"] == "fhir" and done["attempts"] == (3 if lost else 2)
        # Exactly one copy, however many attempts; every attempt the same conditional create.
        assert len(peer.stored) == 1
        assert len({p["if-none-exist"] for p in peer.posts}) == 1
        [received] = peer.stored.values()
        doc = _proved(api, done, received)
        assert doc["answer"]["status"] == (200 if lost else 201)
        assert doc["answer"]["location"].startswith(f"{peer.base}/fhir/Bundle/1")
        # A retried submission of the same Bundle queues nothing more.
        again = api.post(boao_kr()[0], hospital)
        assert again.status_code == 200 and again.json()["index"] == submitted["index"]
        assert len(deliveries(api, hospital)) == 1


def test_no_consent_no_delivery(tmp_path: Path, db_url: str) -> None:
    with fhir_receiver() as peer, exchange(tmp_path, db_url) as api:
        peer.bearer_tokens.add(TOKEN)
        recipient(api, f"{peer.base}/fhir", token=TOKEN)
        hospital = api.credential()
        consent(api, hospital, org="another-hospital")  # names someone else
        consent(api, hospital, consent_id="pay", purpose="HPAYMT")  # not for treatment
        submitted = record(api, hospital)
        assert deliveries(api, hospital) == []
        refused = api.client.post(
            f"/fhir/Bundle/{submitted['id']}/$deliver",
            params={"recipient": f"Organization/{HOME}"},
            headers=hospital,
        )
        assert refused.status_code == 403
        assert "no consent" in is_outcome(refused)["issue"][0]["diagnostics"]
        assert deliveries(api, hospital) == [] and peer.posts == []


def test_by_hand_and_consent_withdrawn_before_sending(tmp_path: Path) -> None:
    # The receiver is down: the delivery waits; the consent is withdrawn; at the next attempt
    # the delivery is refused and nothing reaches the receiver.
    closed = bound_socket()
    port = closed.getsockname()[1]
    with exchange(tmp_path) as api:
        recipient(api, f"http://127.0.0.1:{port}/fhir", token=TOKEN)
        hospital = api.credential()
        submitted = record(api, hospital)
        assert deliveries(api, hospital) == []  # no consent yet
        consent(api, hospital)
        url = f"/fhir/Bundle/{submitted['id']}/$deliver"
        first = api.client.post(url, params={"recipient": f"Organization/{HOME}"}, headers=hospital)
        assert first.status_code == 201, first.text
        again = api.client.post(url, params={"recipient": f"Organization/{HOME}"}, headers=hospital)
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        assert first.json()["status"] == "pending"
        # Another hospital neither sees nor queues it.
        other = api.credential(org="hospital-b")
        assert deliveries(api, other) == []
        stranger = api.client.post(url, params={"recipient": f"Organization/{HOME}"}, headers=other)
        assert stranger.status_code == 404
        # Withdrawn: the same Consent id, inactive, newer.
        consent(api, hospital, status="inactive", date_time="2026-06-01T00:00:00Z")
        [done] = settled(api, hospital)
        closed.close()
    assert done["status"] == "failed", done
    assert "refused at sending" in done["last_error"] and "inactive" in done["last_error"]
    assert done["ledger_index"] is not None


def test_mllp_ae_is_retried_with_the_same_message(tmp_path: Path, db_url: str) -> None:
    with hl7_receiver("AE", "AA") as peer, exchange(tmp_path, db_url) as api:
        recipient(api, f"mllp://127.0.0.1:{peer.port}", message="ADT_A08")
        hospital = api.credential()
        consent(api, hospital)
        record(api, hospital)
        [done] = settled(api, hospital)
        assert done["status"] == "delivered" and done["attempts"] == 2, done
        assert done["transport"] == "mllp"
        first, second = peer.received
        assert first == second and b"ADT^A08" in first  # the same bytes, the same MSH-10
        doc = _proved(api, done, second)
        assert doc["answer"]["ack_code"] == "AA"


def test_mllp_ar_is_final(tmp_path: Path, db_url: str) -> None:
    with hl7_receiver(default="AR") as peer, exchange(tmp_path, db_url) as api:
        recipient(api, f"mllp://127.0.0.1:{peer.port}")
        hospital = api.credential()
        consent(api, hospital)
        record(api, hospital)
        [done] = settled(api, hospital)
        assert done["status"] == "failed" and done["attempts"] == 1, done
        assert done["last_error"].startswith("AR")
        assert len(peer.received) == 1
        doc = _proved(api, done, peer.received[0])
        assert doc["answer"]["ack_code"] == "AR" and doc["outcome"] == "failed"


def test_the_outbox_survives_a_restart(tmp_path: Path) -> None:
    # Queued and tried while the receiver is down; the server stops; the next one, on the
    # same store, delivers it with the same identifier.
    sock = bound_socket()
    port = sock.getsockname()[1]
    with exchange(tmp_path, first_wait=timedelta(seconds=2)) as api:
        recipient(api, f"http://127.0.0.1:{port}/fhir", token=TOKEN)
        hospital = api.credential()
        consent(api, hospital)
        record(api, hospital)
        deadline = time.monotonic() + 20
        while (pending := deliveries(api, hospital))[0]["attempts"] == 0:
            assert time.monotonic() < deadline
        assert pending[0]["status"] == "pending" and "no answer" in pending[0]["last_error"]
        digest = bytes(row(api, pending[0]["id"]).sent_digest)
    with fhir_receiver(sock) as peer, exchange(tmp_path) as api:
        peer.bearer_tokens.add(TOKEN)
        [done] = settled(api, api.credential())
        assert done["id"] == pending[0]["id"] and done["status"] == "delivered"
        [received] = peer.stored.values()
        assert hashlib.sha256(received).digest() == digest  # the bytes of the first attempt
        _proved(api, done, received)


def test_listing_and_cli_retry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with fhir_receiver() as peer, exchange(tmp_path) as api:
        peer.bearer_tokens.add(TOKEN)
        peer.fail_next, peer.fail_status = 1, 422  # a permanent refusal, then accepted
        recipient(api, f"{peer.base}/fhir", token=TOKEN)
        hospital = api.credential()
        consent(api, hospital)
        record(api, hospital)
        [failed] = settled(api, hospital)
        assert failed["status"] == "failed" and failed["attempts"] == 1
        admin = api.credential("admin")
        assert deliveries(api, admin, status="failed") == [failed]
        assert deliveries(api, admin, status="delivered") == []
        assert deliveries(api, api.credential(org="hospital-b")) == []
        data = ["--data", str(tmp_path)]
        assert main(["deliveries", "list", "--json", *data]) == 0
        assert '"failed"' in capsys.readouterr().out
        assert main(["deliveries", "retry", failed["id"], *data]) == 0
        [done] = settled(api, hospital)
        assert done["status"] == "delivered" and done["ledger_index"] > failed["ledger_index"]
        assert main(["deliveries", "retry", failed["id"], *data]) == 1  # not failed now
        assert main(["deliveries", "retry", "no-such-id", *data]) == 3
        [received] = peer.stored.values()
        _proved(api, done, received)


@contextmanager
def consented_home(
    tmp_path: Path, **options: Any
) -> Iterator[tuple[Api, ReceiverState, dict[str, str]]]:
    """The exchange (`options`: exchange's), the home hospital's FHIR receiver as recipient,
    and a hospital's credential whose patient consented to it."""
    with fhir_receiver() as peer, exchange(tmp_path, **options) as api:
        peer.bearer_tokens.add(TOKEN)
        recipient(api, f"{peer.base}/fhir", token=TOKEN)
        hospital = api.credential()
        consent(api, hospital)
        yield api, peer, hospital


def test_a_queued_delivery_wakes_the_worker_once_committed(tmp_path: Path) -> None:
    # The worker looks by itself only every minute here: the commit of the record's
    # transaction is what wakes it.
    with consented_home(tmp_path, poll=60.0) as (api, peer, hospital):
        record(api, hospital)
        [done] = settled(api, hospital, within=10)
        assert done["status"] == "delivered" and len(peer.stored) == 1


def test_deliveries_wait_out_a_burst_of_intake(tmp_path: Path) -> None:
    with consented_home(tmp_path) as (api, peer, hospital):
        idle = [0.0]  # seconds since the server's last submission, as its process tells
        api.services.outbox.yields_to(lambda: idle[0])
        record(api, hospital)
        time.sleep(1.0)  # many looks (every 50 ms, or 250 ms while yielding)
        assert [d["status"] for d in deliveries(api, hospital)] == ["pending"]
        assert peer.posts == []
        idle[0] = 10.0  # the burst is over
        [done] = settled(api, hospital, within=10)
        assert done["status"] == "delivered" and done["attempts"] == 1


def test_an_overdue_delivery_is_sent_during_a_burst(tmp_path: Path) -> None:
    with consented_home(tmp_path) as (api, _, hospital):
        outbox = api.services.outbox
        outbox.config = replace(outbox.config, yield_at_most=timedelta(milliseconds=500))
        outbox.yields_to(lambda: 0.0)  # intake never pauses
        start = time.monotonic()
        record(api, hospital)
        [done] = settled(api, hospital, within=10)
        assert done["status"] == "delivered"
        assert time.monotonic() - start >= 0.5
