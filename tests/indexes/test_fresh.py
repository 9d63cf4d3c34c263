"""Catching the derived indexes up: what an index covers after each call, and what it reads."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event, update

from exchange.bootstrap import open_services
from exchange.bundles.submit import SubmitRequest, submit_blocking
from exchange.config import Settings
from exchange.identity.clients import Client
from exchange.intake import IntakeLimits
from exchange.intake.worker import check
from exchange.settlement.index import consents_of, settlement_index, settlement_keys_index
from exchange.store.tables import state_table
from exchange.vault import lookup_tag
from ledger import store
from tests.delivery.fixtures import boao_kr
from tests.outbox.helpers import HOME, PASSPORT
from tests.settlement.test_settlement_index import consent_bundle

HOSPITAL = Client("cl-a", "a", "hospital", "hospital-a")


def test_records_between_consents_are_looked_at_once(tmp_path: Path) -> None:
    services = open_services(Settings(data_dir=tmp_path))
    try:
        statements: list[str] = []
        event.listen(services.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))

        def submit(body: bytes) -> None:
            checked = check(body, "application/fhir+json", IntakeLimits())
            submit_blocking(services.log, services.vault, SubmitRequest(HOSPITAL, body, checked))

        def fresh() -> list[str]:
            statements.clear()
            services.indexes.fresh(indexes[0], indexes[1])
            return [s for s in statements if "exchange_bundles" in s]

        key = services.pseudonym_key
        indexes = (settlement_index(services.engine, key), settlement_keys_index(key))
        tag = lookup_tag(key, "hospital-a", PASSPORT)
        submit(consent_bundle(PASSPORT, HOME, purpose="TREAT"))
        fresh()
        assert len(consents_of(services.engine, "hospital-a", tag)) == 1
        record = boao_kr()[0]
        for n in range(3):
            submit(record.replace(b"SUB-20261120-0001", f"SUB-{n}".encode()))
            # The newest entry, and the range since the last look: no rescan of the records.
            assert len(fresh()) == 2
            assert len(fresh()) == 1  # nothing new: the newest entry alone says so
        submit(consent_bundle(PASSPORT, "other-org", purpose="TREAT"))
        fresh()
        assert len(consents_of(services.engine, "hospital-a", tag)) == 2
        # An index reset (its rows kept out of date) moves the mark back: rebuilt in full.
        with store.write_transaction(services.engine) as conn:
            conn.execute(update(state_table).values(last_index=-1))
            conn.exec_driver_sql("DELETE FROM exchange_settlement")
            conn.exec_driver_sql("DELETE FROM exchange_settlement_keys")
        fresh()
        assert len(consents_of(services.engine, "hospital-a", tag)) == 2
    finally:
        services.close()
