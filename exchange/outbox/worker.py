"""The outbox's worker: sends due deliveries, and records each final outcome.

:meth:`Worker.run` runs in the server's event loop for its lifetime (exchange.app). Each
round it claims the due rows (``status = pending``, ``next_at`` passed, no live claim) by
setting ``claimed_until`` (a lease, so two servers on one database never send the same row
at once, and a row a killed server held is taken up again when its lease ends), and for each:

1. evaluates the patient's current consent again, and for a recipient abroad passes the
   cross-border gate, which counts the patient (exchange.consent.crossborder): consent is
   decided at the moment data leaves. A refusal is final: nothing is sent.
2. builds the bytes (exchange.delivery.messages) from the stored Bundle version, with the
   row's ``queued`` time as the clock and its id as the document id and MSH-10 control id:
   the same bytes on every attempt, in every process, without keeping PHI in the outbox. The
   SHA-256 of the first attempt's bytes is kept; bytes that differ later (the recipient's
   endpoint changed transport) are refused rather than sent under the same identifier.
3. makes one attempt (:func:`exchange.delivery.attempt.attempt`). Delivered and permanent
   failures are final; a retry is scheduled by :func:`exchange.delivery.backoff.next_attempt`
   from the attempts made and the time of the first, which the row keeps, or becomes a final
   failure past the deadline.

A final outcome is one ``delivery`` entry (exchange.outbox.proof) whose row writer marks the
row final in the entry's own transaction, and an access entry per patient in the
accounting: ``transform`` when bytes were sent (outcome 0 delivered, 8 not), ``denied``
(outcome 4) when nothing was. Both are submitted together, so as a rule they are one batch of
the log; an access entry is appended only beside its delivery entry. A server killed between
the two (when they fell into two batches) records the access entries when it next starts
(:meth:`Worker.account_missing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection, RowMapping, or_, select, update

from adapters.base import AdaptError
from exchange.bundles.read import bundle_by_id, bundle_patients
from exchange.bundles.submit import RowWriter
from exchange.consent.crossborder import CHINA, TransferLedger
from exchange.delivery import fhir_push
from exchange.delivery.attempt import Attempt, attempt
from exchange.delivery.backoff import Policy, next_attempt
from exchange.delivery.endpoints import Endpoint, EndpointError, FhirEndpoint
from exchange.delivery.messages import Document, ips_document, v2_message
from exchange.delivery.result import Outcome
from exchange.delivery.smart_client import TokenCache
from exchange.identity.clients import Client
from exchange.intake.worker import Checked
from exchange.outbox.endpoints import Parsed, endpoint_of
from exchange.outbox.proof import DELIVERY_KIND, MEDIA, Sent, record
from exchange.outbox.queue import (
    DELIVERED,
    FAILED,
    PENDING,
    PURPOSE,
    Permission,
    Queue,
    delivered_from,
)
from exchange.privacy.access import access_submissions
from exchange.store.tables import deliveries_table
from exchange.vault import Erased, VaultError
from ledger import store
from ledger.entry import SALT_SIZE, Entry, commitment
from ledger.errors import LedgerError
from ledger.log import Log, Submission

__all__ = ["Worker", "WorkerConfig"]

log = logging.getLogger("medledger.outbox")


@dataclass(frozen=True)
class WorkerConfig:
    policy: Policy = Policy()
    timeout: float = 30.0  # one attempt's deadline, seconds
    poll: float = 1.0  # how often the outbox is looked at without being woken, seconds
    lease: timedelta = timedelta(seconds=65)  # a claim outlives any attempt
    batch: int = 32  # rows claimed and sent concurrently per round
    # Sending from a process of its own, deliveries yield to intake (Worker.yields_to): while
    # a submission came in the last `quiet` seconds, only rows due for `yield_at_most` are sent.
    quiet: float = 0.25
    yield_at_most: timedelta = timedelta(seconds=30)


class NotPending(LedgerError):
    """The row was made final (or retried) by someone else meanwhile: append nothing."""


@dataclass(frozen=True)
class _Final:
    status: str
    reason: str | None
    attempts: int
    first: datetime | None
    sent: Sent | None = None
    answer: Attempt | None = None


def _aware(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


class Worker:
    """Sends the outbox's due deliveries; one per server process."""

    def __init__(
        self, queue: Queue, ledger_log: Log, gate: TransferLedger, config: WorkerConfig
    ) -> None:
        self.queue = queue
        self.engine = queue.engine
        self.log = ledger_log
        self.gate = gate
        self.config = config
        self.tokens = TokenCache()
        self._endpoints = Parsed()
        self._http: Any = None  # one httpx client, made in the loop that uses it
        self._wake: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._elsewhere: Callable[[], None] | None = None
        self._submitted: Callable[[], None] | None = None
        self._idle_for: Callable[[], float] | None = None
        # Final outcomes may lack their access entry (a server killed between the two, or
        # a failure recording it): looked for at the start and after such a failure.
        self._unaccounted = True
        self._stopping = False
        # Submissions queue rows in the log's transactions: the worker is woken once they
        # are committed, when it can see them.
        ledger_log.on_commit(self._committed)

    # --- the loop

    def runs_elsewhere(self, wake: Callable[[], None], submitted: Callable[[], None]) -> None:
        """This process only queues; :meth:`run` runs in another (exchange.outbox.process),
        which :meth:`wake` now wakes through `wake`, and which `submitted` tells of each
        submission (:meth:`plan` is asked of every one), so that it can yield to intake."""
        self._elsewhere, self._submitted = wake, submitted

    def yields_to(self, idle_for: Callable[[], float]) -> None:
        """Send in intake's lulls (in the process of its own): `idle_for` gives the seconds
        since the server's last submission. Sending competes with intake for more than the
        CPU its lower priority gives up (the store's write lock, the disk), so during a burst
        of submissions only rows due for ``yield_at_most`` are sent; the rest wait for the
        burst to end. Under a load that never ends, deliveries lag by that much and no more."""
        self._idle_for = idle_for

    def _intake_busy(self) -> bool:
        return self._idle_for is not None and self._idle_for() < self.config.quiet

    def wake(self) -> None:
        """Something was queued: look now rather than at the next poll. Safe from any thread
        or event loop: the event is set in the loop :meth:`run` runs in."""
        if self._elsewhere is not None:
            self._elsewhere()
            return
        if self._wake is None:
            return
        loop, event = self._wake
        with contextlib.suppress(RuntimeError):  # that loop has closed: nothing to wake
            loop.call_soon_threadsafe(event.set)

    def _committed(self) -> None:
        if self.queue.queued_since_asked():
            self.wake()

    def stop(self) -> None:
        """Finish the round in progress (its attempts and their outcomes), then return from
        :meth:`run` (in the loop)."""
        self._stopping = True
        self.wake()

    async def run(self) -> None:
        """Until stopped: drain what is due, then wait to be woken or for the next poll."""
        wake = asyncio.Event()
        self._wake = (asyncio.get_running_loop(), wake)
        while not self._stopping:
            wake.clear()
            try:
                if self._unaccounted:
                    await run_in_threadpool(self.account_missing)
                await self.drain()
            except Exception:
                log.exception("outbox: a round failed; the rows are taken up again later")
            if self._intake_busy():
                # Yielding to intake: what a wake announces now is not overdue, so the next
                # look is when intake may have paused.
                await asyncio.sleep(self.config.quiet)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=self.config.poll)

    async def plan(self, client: Client, checked: Checked) -> RowWriter | None:
        """The deliveries a submission queues (:meth:`Queue.plan`): from what the queue keeps
        when it can (every record submission asks; a thread and a read would cost it more
        than the rest of deciding), else read off the event loop."""
        if self._submitted is not None:
            self._submitted()
        if delivered_from(client, checked) is None:
            return None
        planned = self.queue.planned(client, checked)
        if planned is not None:
            return planned
        return await run_in_threadpool(self.queue.plan, client, checked)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def drain(self) -> int:
        """Send everything due now, round after round (while intake is busy, only what is
        overdue: :meth:`yields_to`); how many attempts were made."""
        done = 0
        while not self._stopping:
            now = datetime.now(UTC)
            due = now - self.config.yield_at_most if self._intake_busy() else now
            rows = await run_in_threadpool(self._claim, now, due)
            if not rows:
                return done
            await asyncio.gather(*(self._one(row) for row in rows))
            done += len(rows)
        return done

    async def _one(self, row: RowMapping) -> None:
        try:
            await self.process(row)
        except Exception:
            # Left claimed: taken up again when the lease ends.
            log.exception("outbox: delivery %s failed unexpectedly", row["id"])

    def _claim(self, now: datetime, due: datetime) -> list[RowMapping]:
        """Claims up to a batch of the pending rows due by `due`, unclaimed at `now`."""
        d = deliveries_table.c
        free = or_(d.claimed_until.is_(None), d.claimed_until < now)
        wanted = (
            select(deliveries_table)
            .where(d.status == PENDING, d.next_at <= due, free)
            .order_by(d.next_at)
            .limit(self.config.batch)
        )
        with self.engine.connect() as conn:
            candidates = conn.execute(wanted).all()
        if not candidates:
            return []  # the common case takes no write lock
        claimed = []
        until = now + self.config.lease
        with store.write_transaction(self.engine) as conn:
            for r in candidates:
                took = conn.execute(
                    update(deliveries_table)
                    .where(d.id == r.id, d.status == PENDING, free)
                    .values(claimed_until=until)
                )
                if took.rowcount == 1:
                    claimed.append(r._mapping)
        return claimed

    # --- one delivery

    async def process(self, row: RowMapping) -> None:
        """One attempt at a claimed row, and what follows from it."""
        now = datetime.now(UTC)
        attempts = int(row["attempts"])
        first = _aware(row["first_attempt"])
        try:
            endpoint, payload, sent = await run_in_threadpool(self._prepare, row, now)
        except _Unsendable as e:
            await run_in_threadpool(self._finish, row, _Final(FAILED, e.reason, attempts, first))
            return
        known = row["sent_digest"]
        if known is not None and bytes(known) != sent.digest:
            reason = "the bytes built now differ from those sent before: not sent again"
            await run_in_threadpool(self._finish, row, _Final(FAILED, reason, attempts, first))
            return
        if self._http is None:
            self._http = fhir_push.new_client()
        result = await attempt(
            endpoint, payload, client=self._http, tokens=self.tokens, timeout=self.config.timeout
        )
        attempts += 1
        first = first or now
        if result.outcome is Outcome.DELIVERED:
            final = _Final(DELIVERED, None, attempts, first, sent, result)
        elif result.outcome is Outcome.PERMANENT:
            final = _Final(FAILED, result.reason or "refused", attempts, first, sent, result)
        else:
            failed_at = datetime.now(UTC)
            at = next_attempt(
                attempts, first, failed_at, policy=self.config.policy,
                seed=str(row["id"]).encode(), retry_after=result.retry_after,
            )  # fmt: skip
            if at is not None:
                await run_in_threadpool(self._reschedule, row, attempts, first, at, sent, result)
                return
            hours = self.config.policy.deadline / timedelta(hours=1)
            reason = f"gave up after {attempts} attempts over {hours:g} h: {result.reason}"
            final = _Final(FAILED, reason, attempts, first, sent, result)
        await run_in_threadpool(self._finish, row, final)

    def _prepare(self, row: RowMapping, now: datetime) -> tuple[Endpoint, Document | bytes, Sent]:
        """Consent and the gate, then the bytes: one step, just before the attempt."""
        verdict = self._permitted(row, now)
        if not verdict.permit:
            raise _Unsendable(f"refused at sending: {verdict.reason}")
        return self._payload(row)

    def _permitted(self, row: RowMapping, now: datetime) -> Permission:
        subject = row["subject"]
        if subject is None:
            return Permission(False, "the Bundle names no patient")
        tag = bytes(row["patient_tag"])
        verdict = self.queue.permission(row["sender"], tag, row["recipient"], now)
        recipient = verdict.recipient
        if not verdict.permit or recipient is None or recipient.country == CHINA:
            return verdict
        gate = self.gate.admit(
            year=now.year,
            subject=bytes(subject),
            recipient=recipient.org,
            recipient_country=recipient.country,
            basis=recipient.basis,
            consent_names_recipient=True,  # permission() checked that the consent names it
        )
        return Permission(gate.allowed, gate.reason)

    def _payload(self, row: RowMapping) -> tuple[Endpoint, Document | bytes, Sent]:
        try:
            found = endpoint_of(self.engine, self.queue.vault, row["recipient"], self._endpoints)
        except (EndpointError, VaultError) as e:
            raise _Unsendable(f"the recipient's endpoint cannot be used: {e}") from None
        if found is None:
            raise _Unsendable("the recipient has no endpoint any more")
        try:
            stored = bundle_by_id(self.queue.vault, row["bundle_id"], int(row["version"]))
        except Erased:
            raise _Unsendable("the patient's data was erased: nothing is sent") from None
        if stored is None:
            raise _Unsendable("the Bundle version is not stored")
        queued = _aware(row["queued"])
        assert queued is not None
        try:
            if isinstance(found.endpoint, FhirEndpoint):
                doc = ips_document([stored.data], now=queued, document_id=row["id"])
                return found.endpoint, doc, Sent(doc.body, "|".join(doc.identifier))
            control_id = control_id_of(row["id"])
            message = v2_message(
                [stored.data], found.endpoint.message, now=queued, control_id=control_id
            )
            return found.endpoint, message, Sent(message, control_id)
        except AdaptError as e:
            raise _Unsendable(f"the Bundle cannot be adapted for the recipient: {e}") from None

    def _reschedule(
        self, row: RowMapping, attempts: int, first: datetime, at: datetime,
        sent: Sent, result: Attempt,
    ) -> None:  # fmt: skip
        d = deliveries_table.c
        with store.write_transaction(self.engine) as conn:
            conn.execute(
                update(deliveries_table)
                .where(d.id == row["id"], d.status == PENDING)
                .values(
                    attempts=attempts,
                    first_attempt=first,
                    next_at=at,
                    claimed_until=None,
                    sent_digest=sent.digest,
                    last_error=_clip(result.reason),
                )  # fmt: skip
            )

    def _finish(self, row: RowMapping, final: _Final) -> None:
        """The final outcome: the delivery entry (marking the row), then the accounting."""
        now = datetime.now(UTC)
        queued = _aware(row["queued"])
        assert queued is not None
        data = record(
            delivery=row["id"],
            bundle=(row["bundle_id"], int(row["version"]), int(row["bundle_idx"])),
            recipient=row["recipient"],
            transport=row["transport"],
            endpoint=row["endpoint"],
            outcome=final.status,
            attempts=final.attempts,
            queued=queued,
            first_attempt=final.first,
            final=now,
            sent=final.sent,
            answer=final.answer,
        )
        salt = os.urandom(SALT_SIZE)
        d = deliveries_table.c
        appended: list[int] = []  # the delivery entry's index, once appended here

        def write(conn: Connection, entry: Entry) -> None:
            done = conn.execute(
                update(deliveries_table)
                .where(d.id == row["id"], d.status == PENDING)
                .values(
                    status=final.status,
                    attempts=final.attempts,
                    first_attempt=final.first,
                    next_at=now,
                    claimed_until=None,
                    last_error=_clip(final.reason),
                    sent_digest=row["sent_digest"] if final.sent is None else final.sent.digest,
                    ledger_index=entry.index,
                    access_index=None,
                    salt=salt,
                    record=data,
                )  # fmt: skip
            )
            if done.rowcount != 1:
                raise NotPending(f"delivery {row['id']} is no longer pending")
            appended.append(entry.index)

        subject = row["subject"]
        sub = Submission(
            kind=DELIVERY_KIND,
            sender=row["sender"],
            commit=commitment(salt, data),
            media=MEDIA,
            subject=None if subject is None else bytes(subject),
            write=write,
        )
        sent = final.sent is not None or row["sent_digest"] is not None
        # Another that made the row final accounts for it.
        accounted = _accounting(row["id"], lambda: appended[0] if appended else None)
        access = self._access(row, final.status, sent, accounted)
        # Submitted together, the outcome and its accounting are as a rule one batch: one
        # transaction and one signed checkpoint. Split across two, `accounted` still holds.
        futures = [self.log.submit(s) for s in (sub, *access)]
        try:
            futures[0].result()
        except NotPending:
            return
        finally:
            failed = [e for f in futures[1:] if (e := _error_of(f)) is not None]
        real = [e for e in failed if not isinstance(e, NotPending)]
        if real:
            self._unaccounted = True
            raise real[0]

    def _access(
        self, row: RowMapping, status: str, sent: bool, guard: Callable[[Connection, Entry], None]
    ) -> list[Submission]:
        """The access entries of a final outcome: ``transform`` when bytes were sent (outcome
        0 delivered, 8 not), ``denied`` (outcome 4) when nothing was."""
        try:
            patients = bundle_patients(self.queue.vault, [int(row["bundle_idx"])])
        except Erased:
            patients = {}
        recipient = Client("outbox", "delivery outbox", "recipient", row["recipient"])
        outcome = ("0" if status == DELIVERED else "8") if sent else "4"
        detail = (
            f"delivery {row['id']} of Bundle {row['bundle_id']}/_history/{row['version']} over "
            f"{row['transport']}: {status}"
        )
        return access_submissions(
            recipient, patients, action="transform" if sent else "denied",
            resource_type="Bundle", purpose=PURPOSE, outcome=outcome, detail=detail,
            guard=guard,
        )  # fmt: skip

    def _account(self, delivery_id: str) -> None:
        """The access entries of a final outcome whose server died before recording them."""
        d = deliveries_table.c
        with self.engine.connect() as conn:
            row = conn.execute(select(deliveries_table).where(d.id == delivery_id)).first()
        if row is None or row.status == PENDING or row.access_index is not None:
            return
        final = row._mapping
        noted = _accounting(delivery_id, lambda: int(final["ledger_index"]))
        subs = self._access(final, final["status"], final["sent_digest"] is not None, noted)
        for future in [self.log.submit(s) for s in subs]:
            with contextlib.suppress(NotPending):
                future.result()

    def account_missing(self) -> None:
        """Access entries a server killed after a final outcome did not record."""
        d = deliveries_table.c
        q = select(d.id).where(d.status != PENDING, d.access_index.is_(None))
        with self.engine.connect() as conn:
            ids = list(conn.execute(q).scalars())
        for delivery_id in ids:
            self._account(delivery_id)
        self._unaccounted = False


class _Unsendable(Exception):
    """The delivery cannot be built or addressed: a final failure with nothing sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _accounting(
    delivery_id: str, outcome: Callable[[], int | None]
) -> Callable[[Connection, Entry], None]:
    """The guard of a final outcome's access entries (one per patient): each is appended only
    beside the outcome's delivery entry (``outcome()``: its index, None when it was not
    appended here), and the first marks the row accounted for, in its own transaction, so a
    server killed in between leaves neither and the accounting is never made twice."""
    noted: list[int] = []

    def guard(conn: Connection, entry: Entry) -> None:
        at = outcome()
        if at is None:
            raise NotPending(f"delivery {delivery_id} was not made final here")
        if not noted:
            d = deliveries_table.c
            done = conn.execute(
                update(deliveries_table)
                .where(d.id == delivery_id, d.ledger_index == at, d.access_index.is_(None))
                .values(access_index=entry.index)
            )
            if done.rowcount != 1:
                raise NotPending(f"delivery {delivery_id}'s outcome is already accounted for")
        noted.append(entry.index)

    return guard


def _error_of(future: Any) -> BaseException | None:
    try:
        future.result()
    except Exception as e:  # noqa: BLE001 - returned to the caller, which sorts them
        return e
    return None


def control_id_of(delivery_id: str) -> str:
    """The MSH-10 of a delivery: 20 hex digits of its id, the same on every attempt."""
    return hashlib.sha256(delivery_id.encode()).hexdigest()[:20]


def _clip(reason: str | None) -> str | None:
    return None if reason is None else reason[:1024]
