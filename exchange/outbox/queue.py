"""What is delivered to whom: the rule, the outbox rows it writes, and what they say.

A delivery is one (Bundle version, recipient). It is queued when

- the Bundle is a ``record`` (clinical) Bundle naming a patient;
- the recipient has an endpoint (:mod:`exchange.outbox.endpoints`);
- the patient's *current* consent from the submitting hospital permits disclosure to the
  recipient's Organization for treatment (``TREAT`` or a specialisation,
  :func:`exchange.consent.rules.evaluate` (TREATMENT), on the Consents of the settlement index,
  :func:`exchange.settlement.index.consents_of`);
- for a recipient outside China, a legal basis is recorded and the consent names the
  recipient (PIPL arts. 38-39; the gate's count is taken when the bytes leave, not here).

:meth:`Queue.plan` applies the rule before a submission and returns the row writer that adds
the rows in the submission's own transaction (exchange.bundles.submit), so a Bundle and its
deliveries exist together or not at all; :meth:`Queue.by_hand` queues one for a stored Bundle
(``$deliver``). The same rule is applied again at the moment of sending (exchange.outbox.worker).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, RowMapping, insert, select, update
from sqlalchemy.exc import IntegrityError

from exchange.bundles.read import bundle_by_id
from exchange.bundles.submit import Replan, RowWriter
from exchange.consent import rules as consent_rules
from exchange.consent.crossborder import CHINA, Recipient, basis_problem, recipient_of
from exchange.errors import Conflict, Forbidden, Invalid, NotFound
from exchange.identity.clients import Client
from exchange.indexes.derived import Indexes
from exchange.intake.kind import patient_identifiers
from exchange.intake.worker import Checked
from exchange.outbox.endpoints import Reachable, reachable, still
from exchange.settlement.index import (
    BundleBytes,
    consent_names,
    consents_of,
    settlement_index,
    settlement_keys_index,
)
from exchange.store.tables import bundles_table, deliveries_table
from exchange.vault import Vault, lookup_tag
from ledger import store
from ledger.entry import Entry

__all__ = [
    "PENDING",
    "STATUSES",
    "Delivery",
    "Permission",
    "Queue",
    "delivered_from",
    "permission",
]

PURPOSE = "TREAT"
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
STATUSES = (PENDING, DELIVERED, FAILED)
# What the deliveries are of: clinical records, not bills or consents.
DELIVERED_KINDS = frozenset({"record"})

# Built once: executed in the ledger's write transaction of every record submission.
_INSERT = insert(deliveries_table)

# Consent resources whose bytes are kept, and patients whose Consents are (Queue.consents),
# the least recently used dropped.
CONSENT_CACHE = 4096


@dataclass(frozen=True)
class Permission:
    permit: bool
    reason: str  # no PHI: it goes into the outbox row, the OperationOutcome and the accounting
    recipient: Recipient | None = None  # as recorded when decided (Queue.permission)


def permission(
    consents: Sequence[Mapping[str, Any]], recipient: Recipient | None, now: datetime
) -> Permission:
    """May this patient's record go to this recipient for treatment now, by their consents
    (the current ones, in submission order) and the recipient's legal basis? The yearly count
    of the cross-border gate is not taken here: the worker takes it when the bytes leave."""
    if recipient is None:
        return Permission(False, "the recipient is not recorded")
    org = recipient.org
    req = consent_rules.Request(org, PURPOSE, "Bundle", now)
    decision = consent_rules.evaluate(consents, req, consent_rules.TREATMENT)
    if not decision.permit:
        return Permission(False, f"no consent to disclose to Organization/{org} for treatment: "
                          f"{decision.reason}")  # fmt: skip
    if recipient.country != CHINA:
        problem = basis_problem(recipient.basis)
        if problem is not None:
            return Permission(False, problem)
        newest = consent_rules.newest_consent(consents)
        if newest is None or not consent_names(newest, org):
            return Permission(False, "the patient's consent does not name the recipient, as a "
                              "transfer abroad requires (PIPL art. 39)")  # fmt: skip
    return Permission(True, "permitted by consent for treatment")


@dataclass(frozen=True)
class Delivery:
    """One row of the outbox, as ``GET /v1/deliveries`` shows it (design.md "Delivery")."""

    id: str
    bundle: str
    version: int
    recipient: str
    transport: str
    status: str
    attempts: int
    last_error: str | None
    ledger_index: int | None
    sender: str
    queued: datetime
    next_at: datetime | None

    def json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "bundle": self.bundle,
            "version": self.version,
            "recipient": self.recipient,
            "transport": self.transport,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "ledger_index": self.ledger_index,
        }


def _delivery(m: RowMapping) -> Delivery:
    pending = m["status"] == PENDING
    return Delivery(
        m["id"], m["bundle_id"], int(m["version"]), m["recipient"], m["transport"],
        m["status"], int(m["attempts"]), m["last_error"],
        None if m["ledger_index"] is None else int(m["ledger_index"]), m["sender"],
        _aware(m["queued"]), _aware(m["next_at"]) if pending else None,
    )  # fmt: skip


def _aware(t: datetime) -> datetime:
    """SQLite gives naive datetimes back: they were stored in UTC."""
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


class Queue:
    """The outbox's rows: queueing under the rule, listing, retrying."""

    def __init__(self, vault_: Vault, indexes: Indexes, pseudonym_key: bytes) -> None:
        self.vault = vault_
        self.engine: Engine = vault_.engine
        self.indexes = indexes
        self.pseudonym_key = pseudonym_key
        self._settlement = settlement_index(self.engine, pseudonym_key)
        self._settlement_keys = settlement_keys_index(pseudonym_key)
        self._consent_bytes: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._patients: OrderedDict[tuple[str, bytes], tuple[int, Sequence[Mapping[str, Any]]]]
        self._patients = OrderedDict()
        self._look: Reachable | None = None  # the last look at the store (plan)
        self._queued = False  # rows written since queued_since_asked (outbox.worker)
        self._lock = threading.Lock()

    # --- the rule

    def consents(self, sender: str, tag: bytes, at: int) -> Sequence[Mapping[str, Any]]:
        """The patient's current Consents from this hospital (``tag``: the lookup tag of the
        patient's identifier, exchange.vault.lookup_tag) at the Consents' generation ``at``
        (:attr:`Reachable.consents_at`, read by the caller).

        A patient's answer is kept with the generation it was found at and given again while
        the generation is the same: no Consent can have come or gone (erasure is caught when
        sending, which never sends an erased Bundle). Otherwise the index is caught up and
        asked; of the Consents it names, only the bytes of one indexed resource (a Bundle
        version's entry, which never changes) are kept.
        """
        found = self._kept(sender, tag, at)
        if found is not None:
            return found
        self.indexes.fresh(self._settlement, self._settlement_keys)
        rows = consents_of(self.engine, sender, tag)
        reader: BundleBytes | None = None
        out = []
        for r in rows:
            with self._lock:
                text = self._consent_bytes.get((r.index, r.pos))
            if text is None:
                reader = reader or BundleBytes(self.vault)
                text = reader.resource(r)
                with self._lock:
                    _keep(self._consent_bytes, (r.index, r.pos), text)
            out.append(json.loads(text))
        found = tuple(out)
        with self._lock:
            _keep(self._patients, (sender, tag), (at, found))
        return found

    def _kept(self, sender: str, tag: bytes, at: int) -> Sequence[Mapping[str, Any]] | None:
        with self._lock:
            hit = self._patients.get((sender, tag))
            if hit is None or hit[0] != at:
                return None
            self._patients.move_to_end((sender, tag))
            return hit[1]

    def permission(
        self, sender: str, tag: bytes, org: str, now: datetime, look: Reachable | None = None
    ) -> Permission:
        """:func:`permission` for one recipient, from the store as it is now (or as the
        caller's ``look`` at it just read it)."""
        look = look or reachable(self.engine)
        found = look.endpoints.get(org)
        recipient = recipient_of(self.engine, org) if found is None else found[1]
        verdict = permission(self.consents(sender, tag, look.consents_at), recipient, now)
        return replace(verdict, recipient=recipient)

    def plan(self, client: Client, checked: Checked) -> RowWriter | None:
        """The row writer that queues the deliveries of a submission in its transaction, or
        None when there are none (not a record, no patient, or no recipient permitted), from
        the store as it is now (blocking). Read after the submission arrived, it sees every
        Consent and endpoint committed before; what commits meanwhile may count or not, as
        it would have a moment earlier or later (a Consent withdrawn is caught when sending)."""
        sender = delivered_from(client, checked)
        if sender is None:
            return None
        self._look = look = reachable(self.engine)
        tag = lookup_tag(self.pseudonym_key, sender, checked.patients[0])
        consents = self.consents(sender, tag, look.consents_at)
        return self._writer(client, checked, tag, look, consents, made_sure=False)

    def planned(self, client: Client, checked: Checked) -> RowWriter | None:
        """:meth:`plan` from what this queue keeps of the store, without reading it (for the
        event loop), or None when it must be read: no look at the store yet, or the patient's
        Consents not kept at its generation.

        What is kept may be older than the submission: a Consent acknowledged to its sender
        before this record was submitted, perhaps by another server on the same database,
        must not be missed. So the writer makes sure inside the transaction that the store
        still reads as the look it was decided on, and otherwise has it decided again by
        :meth:`plan` (exchange.bundles.submit.Replan)."""
        look, sender = self._look, delivered_from(client, checked)
        if look is None or sender is None:
            return None
        tag = lookup_tag(self.pseudonym_key, sender, checked.patients[0])
        consents = self._kept(sender, tag, look.consents_at)
        if consents is None:
            return None
        return self._writer(client, checked, tag, look, consents, made_sure=True)

    def _writer(
        self, client: Client, checked: Checked, tag: bytes, look: Reachable,
        consents: Sequence[Mapping[str, Any]], *, made_sure: bool,
    ) -> RowWriter | None:  # fmt: skip
        """The rows the rule queues by ``look``; `made_sure`: only if the transaction still
        sees the store as ``look`` (exchange.outbox.endpoints.still), else decided again.
        None when there is nothing to write or to make sure of."""
        sender = client.org
        assert sender is not None  # delivered_from
        now = datetime.now(UTC)
        recipients = [
            (org, url)
            for org, (url, recipient) in look.endpoints.items()
            if permission(consents, recipient, now).permit
        ]
        if not recipients and not made_sure:
            return None

        def write(conn: Connection, entry: Entry, bundle_id: str, version: int) -> None:
            if made_sure and not still(conn, look):
                raise Replan("a Consent or a delivery endpoint changed while the Bundle was "
                             "submitted", lambda: self.plan(client, checked))  # fmt: skip
            if recipients:
                self._queued = True
                conn.execute(_INSERT, [
                    _row(bundle_id, version, entry.index, sender, entry.subject, tag, org, url,
                         now)
                    for org, url in recipients
                ])  # fmt: skip

        return write

    def queued_since_asked(self) -> bool:
        """Whether a submission's transaction wrote rows since the last call (asked after
        each commit of the log: a rolled-back one answers True too, and wakes for nothing)."""
        queued, self._queued = self._queued, False
        return queued

    def by_hand(self, client: Client, bundle_id: str, org: str) -> tuple[Delivery, bool]:
        """Queue the latest version of a stored Bundle for ``org`` (``$deliver``): the
        delivery and whether it is new (an existing one for that version is answered)."""
        stored = bundle_by_id(self.vault, bundle_id)
        if stored is None or (client.role != "admin" and stored.sender != client.org):
            raise NotFound(f"no Bundle {bundle_id} of this hospital")
        if stored.kind not in DELIVERED_KINDS:
            raise Invalid(f"a {stored.kind} Bundle is not delivered: only clinical records are",
                          "Bundle.type", code="business-rule")  # fmt: skip
        look = reachable(self.engine)
        endpoints = look.endpoints
        if org not in endpoints:
            raise Forbidden(f"Organization/{org} has no delivery endpoint: record one with "
                            "`medledger recipients set --endpoint`")  # fmt: skip
        patients = patient_identifiers(json.loads(stored.data))
        with self.engine.connect() as conn:
            subject = conn.execute(
                select(bundles_table.c.subject).where(bundles_table.c.idx == stored.index)
            ).scalar()
        if subject is None or not patients:
            raise Invalid(
                "the Bundle names no patient, so no consent can cover its delivery",
                "Bundle.entry",
                code="business-rule",
            )
        tag = lookup_tag(self.pseudonym_key, stored.sender, patients[0])
        now = datetime.now(UTC)
        verdict = self.permission(stored.sender, tag, org, now, look)
        if not verdict.permit:
            raise Forbidden(verdict.reason)
        row = _row(stored.id, stored.version, stored.index, stored.sender, bytes(subject), tag,
                   org, endpoints[org][0], now)  # fmt: skip
        try:
            with store.write_transaction(self.engine) as conn:
                conn.execute(_INSERT, [row])
            created = True
        except IntegrityError:
            created = False
        found = self._one_where(
            (deliveries_table.c.bundle_idx == stored.index) & (deliveries_table.c.recipient == org)
        )
        assert found is not None
        return found, created

    # --- reading and retrying

    def get(self, delivery_id: str) -> Delivery | None:
        return self._one_where(deliveries_table.c.id == delivery_id)

    def _one_where(self, where: Any) -> Delivery | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(deliveries_table).where(where)).first()
        return None if row is None else _delivery(row._mapping)

    def list(
        self,
        *,
        sender: str | None = None,
        bundle: str | None = None,
        recipient: str | None = None,
        status: str | None = None,
        limit: int = 1000,
    ) -> list[Delivery]:
        """Deliveries, oldest first; ``sender`` None: every hospital's."""
        d = deliveries_table.c
        q = select(deliveries_table).order_by(d.queued, d.id).limit(limit)
        for column, value in ((d.sender, sender), (d.bundle_id, bundle),
                              (d.recipient, recipient), (d.status, status)):  # fmt: skip
            if value is not None:
                q = q.where(column == value)
        with self.engine.connect() as conn:
            return [_delivery(r._mapping) for r in conn.execute(q)]

    def retry(self, delivery_id: str) -> Delivery:
        """Send a failed delivery again: a new schedule from now, the same identifier and,
        while the Bundle is unchanged, the same bytes. Its earlier outcome stays on the
        ledger; the new one will be a new entry."""
        d = deliveries_table.c
        with store.write_transaction(self.engine) as conn:
            row = conn.execute(select(d.status).where(d.id == delivery_id)).first()
            if row is None:
                raise NotFound(f"no delivery {delivery_id}")
            if row.status != FAILED:
                raise Conflict(f"delivery {delivery_id} is {row.status}: only a failed one is "
                               "sent again")  # fmt: skip
            conn.execute(
                update(deliveries_table)
                .where(d.id == delivery_id)
                .values(
                    status=PENDING,
                    attempts=0,
                    first_attempt=None,
                    next_at=datetime.now(UTC),
                    claimed_until=None,
                )  # fmt: skip
            )
        found = self.get(delivery_id)
        assert found is not None
        return found


def delivered_from(client: Client, checked: Checked) -> str | None:
    """The submitting hospital, when the rule can queue deliveries of its submission at all
    (a record naming a patient); else None."""
    if checked.kind not in DELIVERED_KINDS or not checked.patients:
        return None
    return client.org


def _keep(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > CONSENT_CACHE:
        cache.popitem(last=False)


def _row(
    bundle_id: str, version: int, index: int, sender: str, subject: bytes | None, tag: bytes,
    org: str, url: str, now: datetime,
) -> dict[str, object]:  # fmt: skip
    return {
        "id": str(uuid.uuid4()),
        "bundle_id": bundle_id,
        "version": version,
        "bundle_idx": index,
        "sender": sender,
        "subject": subject,
        "patient_tag": tag,
        "recipient": org,
        "transport": "mllp" if url.startswith("mllp://") else "fhir",
        "endpoint": url,
        "status": PENDING,
        "queued": now,
        "attempts": 0,
        "next_at": now,
    }
