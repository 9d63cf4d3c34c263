"""The outbox: what queueing costs a submission, and how fast due deliveries drain.

    .venv/bin/python benchmarks/bench_outbox.py            # 300 record Bundles
    .venv/bin/python benchmarks/bench_outbox.py --n 1000 --db postgresql+psycopg://…

On a fresh store (SQLite in a temporary directory, or --db), one patient consents to
delivery for treatment to a recipient whose endpoint is a local FHIR receiver in another
process (tests/delivery/peers.py's: FastAPI under uvicorn, validating every document with
fhir.resources and doing conditional create). Then:

- submit: 2N record Bundles (the continuity fixture, each with its own identifier) through
  exchange.bundles.submit, alternately without and with the outbox's plan (consent evaluated,
  rows written in the Bundle's transaction): the cost queueing adds to a submission;
- drain: the worker sends the N due deliveries (consent re-checked, the cross-border gate,
  the IPS built, the push, the delivery entry and the access entry of each), timed from the
  first claim to the last final outcome, after ten untimed ones (a running worker has its
  adapters loaded); deliveries/s, and this process's CPU time per delivery.

Peak RSS of this process (VmHWM) is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exchange.bootstrap import Services, open_services  # noqa: E402
from exchange.bundles.submit import SubmitRequest, submit_blocking  # noqa: E402
from exchange.config import Settings  # noqa: E402
from exchange.consent.crossborder import Recipient, set_recipient  # noqa: E402
from exchange.delivery.endpoints import parse_endpoint  # noqa: E402
from exchange.identity.clients import Client  # noqa: E402
from exchange.intake import IntakeLimits  # noqa: E402
from exchange.intake.worker import check  # noqa: E402
from exchange.outbox.endpoints import set_endpoint  # noqa: E402
from tests.delivery.fixtures import boao_kr  # noqa: E402
from tests.outbox.helpers import BASIS, HOME, PASSPORT, TOKEN  # noqa: E402
from tests.settlement.test_settlement_index import consent_bundle  # noqa: E402

HOSPITAL = Client("cl-bench", "bench", "hospital", "hospital-a")
WARM = 10  # deliveries drained before the timed drain


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _bodies(n: int, tag: str) -> list[bytes]:
    base = boao_kr()[0]
    return [base.replace(b"SUB-20261120-0001", f"SUB-{tag}-{i:06d}".encode()) for i in range(n)]


def _submit(s: Services, body: bytes, plan: bool) -> float:
    """One submission, with the outbox's plan or without; its seconds."""
    checked = check(body, "application/fhir+json", IntakeLimits())
    start = time.perf_counter()
    # As the server decides (Worker.plan): from what the queue keeps, else from the store.
    queue = s.outbox.queue
    writer = (queue.planned(HOSPITAL, checked) or queue.plan(HOSPITAL, checked)) if plan else None
    submit_blocking(s.log, s.vault, SubmitRequest(HOSPITAL, body, checked, also_write=writer))
    return time.perf_counter() - start


def _submit_pairs(s: Services, n: int, tag: str) -> tuple[list[float], list[float]]:
    """n submissions without the outbox's plan and n with it, alternately (drift in the
    machine's speed falls on both alike); their times."""
    plain, queued = [], []
    for without, with_ in zip(_bodies(n, f"{tag}-plain"), _bodies(n, f"{tag}-queued"), strict=True):
        plain.append(_submit(s, without, plan=False))
        queued.append(_submit(s, with_, plan=True))
    return plain, queued


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--db", help="a PostgreSQL URL (default: SQLite in a temporary directory)")
    p.add_argument(
        "--transport",
        choices=("fhir", "mllp"),
        default="fhir",
        help="the receiver: FHIR (validates each IPS with fhir.resources, one process) or "
        "python-hl7's MLLP server (answers AA)",
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, _receiver(args.transport) as url:
        services = open_services(Settings(data_dir=Path(tmp), db_url=args.db))
        try:
            set_recipient(services.engine, Recipient(HOME, "KR", BASIS))
            endpoint = parse_endpoint(url, token=TOKEN if args.transport == "fhir" else None)
            set_endpoint(services.engine, services.vault, HOME, endpoint)
            consent = consent_bundle(PASSPORT, HOME, purpose="TREAT")
            checked = check(consent, "application/fhir+json", IntakeLimits())
            submit_blocking(services.log, services.vault, SubmitRequest(HOSPITAL, consent, checked))
            # Warm-up, untimed: a running worker has its adapters and maps loaded.
            for body in _bodies(WARM, "warm"):
                _submit(services, body, plan=True)
            asyncio.run(_drain(services))
            plain, queued = _submit_pairs(services, args.n, "timed")
            start, cpu = time.perf_counter(), time.process_time()
            sent = asyncio.run(_drain(services))
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            stored = len(services.outbox.queue.list(status="delivered", limit=10 * args.n)) - WARM
        finally:
            services.close()
    p50 = statistics.median
    print(
        f"submit without outbox: {1000 * p50(plain):.2f} ms p50, "
        f"{args.n / sum(plain):.0f} bundles/s (one thread)"
    )
    print(
        f"submit with outbox:    {1000 * p50(queued):.2f} ms p50, "
        f"{args.n / sum(queued):.0f} bundles/s (+{100 * (sum(queued) / sum(plain) - 1):.1f} %)"
    )
    print(
        f"drain ({args.transport}): {sent} attempts, {stored} delivered in {elapsed:.2f} s"
        f" = {stored / elapsed:.0f} deliveries/s; this process's CPU {1000 * cpu / sent:.1f} ms "
        "per delivery"
    )
    print(f"peak RSS {_peak_rss_mb():.0f} MB")


RECEIVERS = {
    "fhir": """
import sys, uvicorn
from tests.delivery.peers import ReceiverState, fhir_app
state = ReceiverState(base=sys.argv[1], bearer_tokens={sys.argv[2]})
uvicorn.run(fhir_app(state), host="127.0.0.1", port=int(sys.argv[3]), log_level="warning")
""",
    "mllp": """
import asyncio, sys
from tests.delivery.peers import Hl7Receiver
async def main():
    async with Hl7Receiver(port=int(sys.argv[3])):
        await asyncio.Event().wait()
asyncio.run(main())
""",
}


@contextmanager
def _receiver(transport: str) -> Iterator[str]:
    """The receiver in a process of its own; the endpoint URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-c", RECEIVERS[transport], base, TOKEN, str(port)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "no receiver"
                time.sleep(0.1)
        yield f"{base}/fhir" if transport == "fhir" else f"mllp://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


async def _drain(services: Services) -> int:
    worker = services.outbox
    try:
        return int(await worker.drain())
    finally:
        await worker.close()


if __name__ == "__main__":
    main()
