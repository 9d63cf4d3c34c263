"""A log's background loop that keeps every witness of a policy up to date.

CosignatureCollector runs beside a log and never in its way: appends never wait for it, and a
witness that is down or slow delays cosignatures, never submissions. It reads the log's
latest signed checkpoint through `latest()` and its consistency proofs through `prove()`,
and works in rounds: a round picks the latest checkpoint as its target and offers it to every
witness, each served by its own thread with its own connection. A new round starts when the
log has grown, the previous target either met the quorum or every witness is done with it,
and `interval` has passed since the last round (a few rounds a second at most, however fast
the log commits). So witnesses cosign the same checkpoints, and a quorum forms.

A witness that fails is retried with exponential backoff (0.5 s doubling up to
`max_backoff`); one that refuses a fork is reported in its status with the evidence.
witnessed() is the newest checkpoint whose cosignatures meet the policy's quorum: the log's
note with the witnesses' cosignature lines appended, in the policy's order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..audit.evidence import Evidence
from ..checkpoint import CheckpointError, parse_checkpoint
from ..note import NoteError
from ..note import split as split_note
from ..policy import CheckpointRefused, Policy, PolicyWitness
from .client import (
    Prove,
    WitnessClient,
    WitnessConflict,
    WitnessError,
    WitnessRefused,
    cosign,
)

log = logging.getLogger("ledger.witness.collector")

Witnessed = Callable[[str], None]
"""Called with each newly witnessed note (outside the collector's lock)."""


@dataclass(frozen=True)
class WitnessStatus:
    """What the collector knows of one witness (a snapshot)."""

    name: str
    url: str
    size: int  # the tree size the witness holds, as far as known (0 until it answers)
    cosigned: int | None  # the largest size it cosigned for this collector
    last_success: float | None  # time.time() of its last cosignature
    last_error: str | None
    failures: int  # consecutive
    evidence: Evidence | None  # a fork it refused, when it did


@dataclass(frozen=True)
class _Target:
    size: int
    note: str


class _Worker:
    """One witness: its client, its state, and the thread that submits to it."""

    def __init__(self, collector: CosignatureCollector, witness: PolicyWitness) -> None:
        assert witness.url is not None
        self.c = collector
        self.witness = witness
        self.client = WitnessClient(witness.url, timeout=collector.timeout)
        self.status = WitnessStatus(witness.name, witness.url, 0, None, None, None, 0, None)
        self.pending: _Target | None = None
        self.busy = False
        self.next_attempt = 0.0
        self.event = threading.Event()
        self.thread = threading.Thread(target=self.run, name=f"witness-{witness.name}", daemon=True)

    def idle(self) -> bool:
        return not self.busy and self.pending is None

    def run(self) -> None:
        while True:
            self.event.wait()
            self.event.clear()
            if self.c.stopping.is_set():
                self.client.close()
                return
            with self.c.lock:
                target, self.pending = self.pending, None
                if target is None:
                    continue
                self.busy = True
                held = self.status.size
            try:
                self.submit(target, held)
            finally:
                with self.c.lock:
                    self.busy = False
                self.c.wake.set()

    def submit(self, target: _Target, held: int) -> None:
        try:
            cosig = cosign(self.client, target.note, self.witness.verifier, self.c.prove, held)
        except WitnessConflict as e:  # it holds a larger tree: wait for the log to get there
            self.settle(replace(self.status, size=e.size, last_error=f"holds size {e.size}"))
        except WitnessRefused as e:
            if e.evidence is not None:
                log.error("witness %s refused a fork: %s", self.witness.name, e.reason)
            self.fail(str(e), e.evidence)
        except (WitnessError, ValueError, LookupError, OSError) as e:
            self.fail(str(e) or type(e).__name__, None)
        except Exception as e:  # noqa: BLE001 - prove() is the log's; keep the thread alive
            log.exception("witness %s: submission failed", self.witness.name)
            self.fail(f"{type(e).__name__}: {e}", None)
        else:
            self.c.record(self.witness, target, cosig.line())
            self.settle(
                replace(
                    self.status,
                    size=target.size,
                    cosigned=target.size,
                    last_success=time.time(),
                    last_error=None,
                    failures=0,
                )
            )

    def settle(self, status: WitnessStatus) -> None:
        with self.c.lock:
            self.status = status
            self.next_attempt = 0.0

    def fail(self, error: str, evidence: Evidence | None) -> None:
        with self.c.lock:
            failures = self.status.failures + 1
            self.status = replace(
                self.status,
                last_error=error,
                failures=failures,
                evidence=evidence or self.status.evidence,
            )
            delay = min(self.c.max_backoff, 0.5 * 2 ** min(failures - 1, 16))
            self.next_attempt = self.c.clock() + delay
        log.warning("witness %s: %s (next try in %.1f s)", self.witness.name, error, delay)


class CosignatureCollector:
    """Collects cosignatures from a policy's witnesses for a log's checkpoints.

    `latest()` returns the log's latest signed checkpoint note; `prove(size1, size2)` its
    consistency proof between two sizes (both are called from the collector's threads).
    Witnesses without a URL in the policy are not contacted. `on_witnessed`, when given, is
    called with each newly witnessed note; such a note kept by the caller and given back as
    `initial` after a restart is served until a newer one is witnessed; it must meet the
    policy, whose log lines must then list the log (ValueError otherwise).
    """

    def __init__(
        self,
        policy: Policy,
        latest: Callable[[], str],
        prove: Prove,
        *,
        interval: float = 0.25,
        timeout: float = 5.0,
        max_backoff: float = 30.0,
        poll: float = 1.0,
        on_witnessed: Witnessed | None = None,
        initial: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        reachable = [w for w in policy.witnesses if w.url]
        if not policy.satisfied({w.name for w in reachable}):
            raise ValueError(
                "the policy's quorum cannot be met by the witnesses it gives URLs for "
                f"({', '.join(w.name for w in reachable) or 'none'})"
            )
        self.policy = policy
        self.latest = latest
        self.prove = prove
        self.interval = interval
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.poll = poll
        self.on_witnessed = on_witnessed
        self.clock = clock
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._workers = [_Worker(self, w) for w in reachable]
        self._target: _Target | None = None
        self._round_at = float("-inf")
        self._cosigs: dict[int, dict[str, str]] = {}  # size -> witness name -> line
        self._witnessed: tuple[int, str] | None = None
        if initial is not None:
            try:
                ev = policy.require(initial)
            except CheckpointRefused as e:
                raise ValueError(f"the initial witnessed checkpoint: {e}") from e
            self._witnessed = (ev.checkpoint.size, initial)
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name="witness-rounds", daemon=True)

    # --- the caller's side -------------------------------------------------------------

    def start(self) -> CosignatureCollector:
        for w in self._workers:
            w.thread.start()
        self._thread.start()
        return self

    def notify(self) -> None:
        """A new checkpoint was committed: look now instead of at the next poll."""
        self.wake.set()

    def close(self) -> None:
        """Stops the threads (a submission in flight ends within `timeout`)."""
        self.stopping.set()
        self.wake.set()
        for w in self._workers:
            w.event.set()
        for t in [self._thread, *(w.thread for w in self._workers)]:
            if t.is_alive():
                t.join()

    def witnessed(self) -> str | None:
        """The newest checkpoint meeting the quorum, with the cosignature lines, or None."""
        with self.lock:
            return None if self._witnessed is None else self._witnessed[1]

    def witnessed_size(self) -> int | None:
        with self.lock:
            return None if self._witnessed is None else self._witnessed[0]

    def status(self) -> list[WitnessStatus]:
        with self.lock:
            return [w.status for w in self._workers]

    @property
    def error(self) -> str | None:
        """Why the log's latest checkpoint could not be read, when it could not."""
        return self._error

    # --- rounds --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.wake.wait(min(self.poll, self.interval))
            self.wake.clear()
            if self.stopping.is_set():
                return
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - the loop must outlive one bad tick
                log.exception("witness rounds: tick failed")

    def _tick(self) -> None:
        try:
            note = self.latest()
            size = parse_checkpoint(split_note(note)[0]).size
        except (NoteError, CheckpointError) as e:
            self._error = f"the log's latest checkpoint is malformed: {e}"
            return
        except Exception as e:  # noqa: BLE001 - latest() is the log's (a store error)
            self._error = f"the log's latest checkpoint cannot be read: {e}"
            return
        self._error = None
        if self.policy.quorum == "none":
            self._publish(size, note)
            return
        now = self.clock()
        offers = []
        with self.lock:
            t = self._target
            if t is None or (
                size > t.size
                and (self._met(t.size) or all(w.idle() for w in self._workers))
                and now - self._round_at >= self.interval
            ):
                t = self._target = _Target(size, note)
                self._round_at = now
            done = self._cosigs.get(t.size, {})
            for w in self._workers:
                if (
                    w.idle()
                    and now >= w.next_attempt
                    and w.witness.name not in done
                    and w.status.size <= t.size
                ):
                    w.pending = t
                    offers.append(w)
        for w in offers:
            w.event.set()

    def _met(self, size: int) -> bool:
        return self.policy.satisfied(self._cosigs.get(size, {}).keys())

    def record(self, witness: PolicyWitness, target: _Target, line: str) -> None:
        """A witness cosigned `target`: publish it if the quorum is now met."""
        with self.lock:
            self._cosigs.setdefault(target.size, {})[witness.name] = line
            if not self._met(target.size):
                return
        self._publish(target.size, target.note)

    def _publish(self, size: int, note: str) -> None:
        with self.lock:
            if self._witnessed is not None and self._witnessed[0] >= size:
                return
            lines = self._cosigs.get(size, {})
            full = note + "".join(lines[w.name] for w in self.policy.witnesses if w.name in lines)
            self._witnessed = (size, full)
            # Older checkpoints can no longer become the newest witnessed one.
            for old in [s for s in self._cosigs if s < size]:
                del self._cosigs[old]
        if self.on_witnessed is not None:
            self.on_witnessed(full)
