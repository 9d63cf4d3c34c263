"""The intake of a server: inline, or in a pool of worker processes started with it.

Intake (strict JSON + R4B validation) is CPU-bound pure Python, so a server can run it in a
pool of worker processes; they hand back only the few facts the ledger needs, never the
parsed document.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from fastapi.concurrency import run_in_threadpool

from exchange.errors import Unavailable
from exchange.intake.outcome import IntakeError
from exchange.intake.strict_json import IntakeLimits
from exchange.intake.worker import Checked, Refusal, check, check_in_worker, warm

log = logging.getLogger("medledger.exchange")

# Without intake workers, bodies up to this size are validated on the event loop: under the GIL
# a thread would not run them faster. Larger ones go to a thread so the loop keeps answering.
INLINE_INTAKE_BYTES = 64 * 1024


# --- intake -------------------------------------------------------------------------------


class IntakeRunner:
    """Runs intake inline, or in `workers` processes once started.

    `ready` says whether a submission's intake would start at once: the models are loaded
    (inline), or every worker has started and warmed. Starting a pool returns at once: its
    workers are started by a thread, because starting one waits until the fork server has
    loaded the models, and a submission that comes sooner waits for them off the event loop.
    """

    def __init__(self, limits: IntakeLimits, workers: int = 0) -> None:
        self.limits = limits
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._inline_warm = False
        # Resolves to one future per worker, each done once that worker is up and warm.
        self._warming: Future[list[Future[int]]] = Future()

    def start(self) -> None:
        if self.workers == 0:
            if not self._inline_warm:
                warm()
                self._inline_warm = True
        elif self._pool is None:
            self._pool = self._new_pool()

    @property
    def ready(self) -> bool:
        if self.workers == 0:
            return self._inline_warm
        if self._pool is None or not self._warming.done() or self._warming.exception():
            return False
        return all(f.done() and not f.cancelled() and f.exception() is None
                   for f in self._warming.result())  # fmt: skip

    def _new_pool(self) -> ProcessPoolExecutor:
        # A fork server: the workers never inherit the server's threads or open database.
        ctx: multiprocessing.context.BaseContext
        if "forkserver" in multiprocessing.get_all_start_methods():
            forkserver = multiprocessing.get_context("forkserver")
            # Not the default ["__main__"]: a script without a main guard would run again.
            forkserver.set_forkserver_preload(["exchange.intake.warmed"])
            ctx = forkserver
        else:
            ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=warm)
        warming: Future[list[Future[int]]] = Future()
        self._warming = warming
        threading.Thread(
            target=self._start_workers, args=(pool, warming), name="intake-start", daemon=True
        ).start()
        return pool

    def _start_workers(self, pool: ProcessPoolExecutor, warming: Future[list[Future[int]]]) -> None:
        # The pool starts a worker per submission while none is idle: one probe each.
        try:
            warming.set_result([pool.submit(os.getpid) for _ in range(self.workers)])
        except (RuntimeError, BrokenProcessPool) as e:  # shut down or broken meanwhile
            warming.set_exception(e)

    async def _until_started(self) -> None:
        try:
            probes = await asyncio.wrap_future(self._warming)
            await asyncio.gather(*(asyncio.wrap_future(f) for f in probes))
        except Exception:  # noqa: BLE001  (the submission itself meets the broken pool)
            pass

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    async def check(self, body: bytes, content_type: str | None) -> Checked:
        pool = self._pool
        if pool is None:
            if len(body) <= INLINE_INTAKE_BYTES:
                return check(body, content_type, self.limits)
            return await run_in_threadpool(check, body, content_type, self.limits)
        if not self.ready:
            # Submitting now could block the event loop until the workers are up.
            await self._until_started()
        try:
            result = await asyncio.wrap_future(
                pool.submit(check_in_worker, body, content_type, self.limits)
            )
        except BrokenProcessPool as e:
            log.error("an intake worker died; restarting the pool")
            if self._pool is pool:
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
            raise Unavailable("intake was interrupted: retry the request") from e
        if isinstance(result, Refusal):
            raise IntakeError(result.status, result.issues)
        return result
