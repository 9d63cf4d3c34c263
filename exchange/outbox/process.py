"""The outbox's worker in a process of its own, beside the server (``medledger serve``).

Sending a delivery is Python work: consent evaluated again, the IPS document or HL7 v2
message built, two signed ledger entries (the outcome and the access). In the server's
process it would hold the interpreter lock intake needs, and every delivery would slow a
submission. The server therefore starts one child process that opens the same store and runs
:meth:`Worker.run <exchange.outbox.worker.Worker.run>` at a lower scheduling priority
(``NICE``): on a machine busy with intake, intake comes first and deliveries drain in the time
left; with a core to spare, they drain on it. Nothing else changes: rows are claimed under a
lease as by any worker, so a child killed with its server leaves its deliveries to be taken up
again when their leases end.

A lower priority is not enough to keep out of intake's way: a delivery also takes the store's
write lock (claiming its row, appending its outcome and access entries), and a child holding
it while the scheduler prefers intake would stall every submission behind it. So the child
also yields to intake (:meth:`Worker.yields_to <exchange.outbox.worker.Worker.yields_to>`):
the parent stamps the time of each submission in shared memory, and while submissions keep
coming, the child sends only deliveries overdue by ``yield_at_most``.

Parent and child share one pipe. The parent writes ``WAKE`` when it queued a delivery and
``STOP`` at shutdown (the child finishes its round, as an in-process worker would); the child
reads end-of-file when the parent is gone, killed, and then exits at once, as it would have
died with the parent in one process. A child that exits on its own is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection as PipeEnd
from typing import Any

from exchange.outbox.worker import Worker

__all__ = ["NICE", "OutboxProcess", "serve"]

log = logging.getLogger("medledger.outbox")

WAKE, STOP = b"w", b"s"
# Added to the child's niceness: intake is answered while a hospital waits; a delivery only
# has to reach the home hospital before the patient does.
NICE = 10
RESTART_WAIT = 1.0  # seconds before a child that exited on its own is started again

# Runs in the child: opens the store and gives the worker to `serve` (exchange.bootstrap),
# with the pipe and the shared time of the last submission.
Target = Callable[[Any, PipeEnd, ctypes.c_double, bool], None]


class OutboxProcess:
    """The parent's side: starts the child, wakes it, stops it, starts it again if it exits."""

    def __init__(self, target: Target, settings: Any, *, json_logs: bool = False) -> None:
        self.target = target
        self.settings = settings
        self.json_logs = json_logs
        self._ctx = multiprocessing.get_context("spawn")  # no threads or sockets inherited
        self._child: Any = None
        self._signals: PipeEnd | None = None
        self._stopping = threading.Event()
        # time.monotonic() of the last submission; one clock for every process of a machine.
        self._submitted = self._ctx.Value("d", 0.0, lock=False)

    def submitted(self) -> None:
        """A submission came in (from any thread; a store to shared memory)."""
        self._submitted.value = time.monotonic()

    def wake(self) -> None:
        """A delivery was queued: tell the child (from any thread; never blocks)."""
        self._send(WAKE)

    def _send(self, signal: bytes) -> None:
        signals = self._signals
        if signals is None:
            return
        # A full pipe already holds a wake; a closed one has no child to wake.
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            os.write(signals.fileno(), signal)

    def _start(self) -> None:
        reader, writer = self._ctx.Pipe(duplex=False)
        child = self._ctx.Process(
            target=self.target,
            args=(self.settings, reader, self._submitted, self.json_logs),
            name="medledger-outbox",
            daemon=False,
        )
        child.start()
        reader.close()  # the child holds its end: its end-of-file is the parent's exit
        os.set_blocking(writer.fileno(), False)
        self._child, self._signals = child, writer

    async def run(self) -> None:
        """Until :meth:`stop`: keep a child running."""
        while not self._stopping.is_set():
            self._start()
            child = self._child
            await asyncio.get_running_loop().run_in_executor(None, child.join)
            if self._signals is not None:
                self._signals.close()
                self._signals = None
            if self._stopping.is_set():
                return
            log.error(
                "outbox: the delivery process exited (code %s); starting it again in %g s",
                child.exitcode, RESTART_WAIT,
            )  # fmt: skip
            await asyncio.sleep(RESTART_WAIT)

    async def stop(self, task: asyncio.Task[None], timeout: float) -> None:
        """Let the child finish its round and exit; past `timeout` it is killed, its claims
        left to end with their lease."""
        self._stopping.set()
        self._send(STOP)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), timeout)
        child = self._child
        if child is not None and child.is_alive():
            child.kill()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, 5)


def serve(worker: Worker, signals: PipeEnd, submitted: ctypes.c_double) -> None:
    """In the child: run the worker until told to stop, yielding to the parent's intake
    (`submitted`: its shared time of the last submission); exit at once if the parent is
    gone."""
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no nice() here
        os.nice(NICE)
    worker.yields_to(lambda: time.monotonic() - submitted.value)
    asyncio.run(_serve(worker, signals))


async def _serve(worker: Worker, signals: PipeEnd) -> None:
    fd = signals.fileno()
    os.set_blocking(fd, False)

    def readable() -> None:
        try:
            got = os.read(fd, 4096)
        except BlockingIOError:
            return
        if not got:
            os._exit(0)  # the server died: so does its worker, mid-round, as in one process
        if STOP in got:
            worker.stop()
        else:
            worker.wake()

    asyncio.get_running_loop().add_reader(fd, readable)
    try:
        await worker.run()
    finally:
        await worker.close()
