"""Sender admission: whether the registry lets an institution submit today.

Blacklisted, or outside its licence's validity: refused (Forbidden) before anything is
stored. A lapsed international accreditation: accepted and flagged in FLAGS_HEADER. A Procedure
performer without a valid licence: accepted with a warning (refused, 422, when strict). No
registry record: refused in strict deployments (MEDLEDGER_INSTITUTIONS_STRICT, through
exchange.config), accepted and unflagged otherwise, so embedded and demo deployments work
without a registry.
"""

from __future__ import annotations

import time
from datetime import date

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine

from exchange.errors import Forbidden
from exchange.intake import Issue
from exchange.intake.performers import Performance
from exchange.registry.institutions import Institution, changes, check_sender, lookup
from exchange.registry.practitioners import check_performers

FLAGS_HEADER = "X-Institution-Flags"


def admit_sender(
    record: Institution | None, org: str, today: date, *, strict: bool
) -> tuple[str, ...]:
    """Refuse (403 OperationOutcome) a sender the registry bars; else the flags to report.

    Called before anything is appended, so a refusal leaves the log unchanged. The entry
    format has no metadata field, so flags travel in the response header FLAGS_HEADER.
    """
    verdict = check_sender(record, today, strict=strict)
    if verdict.refused is not None:
        raise Forbidden(f"sender {org}: {verdict.refused}")
    return tuple(f for f in verdict.flags if f != "unregistered")


class SenderCache:
    """Registry records of senders, so intake does not read the registry on every submission.

    A change appended by this process (append_attestation) takes effect on the next
    submission; one appended by another process (the CLI beside a running server) within
    `ttl` seconds.
    """

    def __init__(
        self, engine: Engine, *, strict: bool = False, ttl: float = 5.0, max_size: int = 10_000
    ) -> None:
        self.engine = engine
        self.strict = strict  # a sender without a registry record is refused
        self.ttl = ttl
        self.max_size = max_size
        self._records: dict[str, tuple[Institution | None, float]] = {}
        self._seen_changes = changes()

    async def admit(self, org: str | None, today: date) -> tuple[str, ...]:
        """admit_sender for `org` (a client without an org is not a sender the registry knows)."""
        if org is None:
            return ()
        return admit_sender(await self.record(org), org, today, strict=self.strict)

    async def performers(
        self, org: str | None, performances: tuple[Performance, ...]
    ) -> list[Issue]:
        """Warnings for Procedure performers without a valid licence on the Procedure's date
        (exchange.registry.practitioners); a 422 IntakeError instead in strict deployments."""
        if org is None or not performances:
            return []
        return await run_in_threadpool(
            lambda: check_performers(self.engine, org, performances, strict=self.strict)
        )

    async def record(self, org: str) -> Institution | None:
        now = time.monotonic()
        if self._seen_changes != changes() or len(self._records) >= self.max_size:
            self._records.clear()
            self._seen_changes = changes()
        hit = self._records.get(org)
        if hit is not None and hit[1] > now:
            return hit[0]
        record = await run_in_threadpool(lookup, self.engine, org)
        self._records[org] = (record, now + self.ttl)
        return record
