"""HTTP ingest of FHIR Bundles end to end, beside the floor: fhir.resources validation alone.

    .venv/bin/python benchmarks/bench_intake.py                 # 3,000 Bundles of ~8 KB
    .venv/bin/python benchmarks/bench_intake.py --n 10000 --concurrency 64

Builds Bundles of about 8 KB (Synthea resources from ../shared/vectors when present, else
generated ones), each with its own Bundle.identifier, and a Bundle of about 1 MB. Then:

- floor: fhir.resources R4B `Bundle.model_validate_json` over the same Bundles, in this
  process, one core (what any R4B-validating intake must spend); also with one process per
  CPU;
- intake: exchange.intake.check_bundle (strict JSON gate + R4B validation) likewise;
- end-to-end: `medledger serve` (uvicorn, SQLite with synchronous=FULL, intake workers) in
  another process, fed by `--concurrency` keep-alive connections of a minimal HTTP/1.1
  client: every request is validated, stored, committed (group commit) and answered with its
  receipt. Latencies p50/p95 are per request; the 1 MB Bundle is posted `--big` times.

Peak RSS is read from /proc (VmHWM) for the server and each of its processes. The last line
reads `end-to-end <N> bundles/s = <R> of validation-only`.

    .venv/bin/python benchmarks/bench_intake.py --n 600 --deliveries 2

With `--deliveries ROUNDS`, every Bundle's patient is consented (one consent Bundle each,
posted before the timed load) to disclosure for treatment to a recipient, and the same run is
made with that recipient's endpoint at a local FHIR receiver in another process
(benchmarks/bench_outbox.py's), so that every Bundle is delivered, and without an endpoint, so
that none is: the runs differ in deliveries only. ROUNDS pairs on fresh stores, in the order
without-with, then with-without (drift in the machine's speed falls on both sides). Printed:

- each run's rate and its CPU per Bundle by process (the server, its intake workers, its
  delivery process, which sends at a lower priority and yields to intake,
  exchange.outbox.process), and the server's and delivery process's peak RSS;
- how many deliveries were made while the load ran, and how fast the rest were made after it;
- each pair's ratio with / without and their median (issue 26 asks for 90 % or more);
- the same at equal machine speed: each rate scaled by its run's intake workers' CPU per
  Bundle. They do the same work in both runs, so it says how fast the machine ran; on a
  shared machine that drifts by tens of percent between minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VECTORS = ROOT.parent / "shared" / "vectors" / "fhir" / "synthea-10"

from fhir.resources.R4B.bundle import Bundle  # noqa: E402

from exchange.intake import IntakeLimits, check_bundle  # noqa: E402

FHIR_JSON = "application/fhir+json"


# --- Bundles ------------------------------------------------------------------------------


def _synthea_pools() -> tuple[list[bytes], list[bytes]] | None:
    if not VECTORS.is_dir():
        return None
    lines = {
        p.name.split(".")[0]: [x for x in p.read_bytes().splitlines() if x.strip()]
        for p in VECTORS.glob("*.ndjson")
    }
    kinds = ("Encounter", "Condition", "Procedure", "Immunization", "MedicationRequest")
    others = [x for k in kinds for x in lines.get(k, [])]
    if not lines.get("Patient") or not others:
        return None
    return lines["Patient"], others


def _generated_pools() -> tuple[list[bytes], list[bytes]]:
    patients = [
        json.dumps(
            {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:example:mrn", "value": f"MRN-{i:06d}"}],
                "name": [{"family": f"Family{i}", "given": ["Given"]}],
                "gender": "female",
                "birthDate": "1980-01-01",
            }
        ).encode()
        for i in range(50)
    ]
    observations = [
        (
            '{"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": '
            f'"http://loinc.org", "code": "8310-5", "display": "Body temperature"}}]}}, '
            f'"effectiveDateTime": "2026-03-02T08:{i % 60:02d}:00.000Z", "valueQuantity": '
            f'{{"value": 37.{i % 10}0, "unit": "Cel", "system": "http://unitsofmeasure.org", '
            '"code": "Cel"}, "note": [{"text": "' + "measured at the bedside " * 20 + '"}]}'
        ).encode()
        for i in range(500)
    ]
    return patients, observations


def bundles(n: int, target: int) -> list[bytes]:
    """n collection Bundles of about `target` bytes, each with a fresh Bundle.identifier."""
    patients, others = _synthea_pools() or _generated_pools()
    cycle = itertools.cycle(others)
    out = []
    for i in range(n):
        resources = [patients[i % len(patients)]]
        size = len(resources[0])
        while size < target:
            r = next(cycle)
            resources.append(r)
            size += len(r) + 60
        entries = b",".join(
            b'{"fullUrl":"urn:uuid:' + str(uuid.uuid4()).encode() + b'","resource":' + r + b"}"
            for r in resources
        )
        out.append(
            b'{"resourceType":"Bundle","identifier":{"system":"urn:ietf:rfc:3986","value":'
            b'"urn:uuid:'
            + str(uuid.uuid4()).encode()
            + b'"},"type":"collection","entry":['
            + entries
            + b"]}"
        )
    return out


# --- the floor ----------------------------------------------------------------------------


def rate(fn: Callable[[bytes], object], items: list[bytes]) -> float:
    for b in items[:20]:
        fn(b)  # models load lazily, per resource type
    t = time.perf_counter()
    for b in items:
        fn(b)
    return len(items) / (time.perf_counter() - t)


def _validate_chunk(chunk: list[bytes]) -> int:
    for b in chunk:
        Bundle.model_validate_json(b)
    return len(chunk)


def rate_all_cores(items: list[bytes]) -> float:
    """The same floor with one process per CPU: the most any server here could validate."""
    workers = os.cpu_count() or 1
    chunks = [items[i :: workers * 4] for i in range(workers * 4)]
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        list(pool.map(_validate_chunk, chunks))  # warm every worker's models
        t = time.perf_counter()
        done = sum(pool.map(_validate_chunk, chunks))
        return done / (time.perf_counter() - t)


# --- the server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(data: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "exchange.cli", *args, "--data", str(data)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


def start_server(data: Path, port: int, workers: int | None) -> subprocess.Popen[bytes]:
    # No per-client rate limit: one client here stands for every engine of a hospital group.
    cmd = [
        sys.executable,
        "-m",
        "exchange.cli",
        "serve",
        "--data",
        str(data),
        "--port",
        str(port),
        "--rate-limit",
        "0",
    ]
    if workers is not None:
        cmd += ["--intake-workers", str(workers)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


def process_tree(pid: int) -> list[int]:
    pids, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for k in map(int, kids):
                pids.append(k)
                frontier.append(k)
    return pids


def cpu_seconds(pid: int) -> float:
    """User and system CPU of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_role(server: int) -> dict[str, float]:
    """CPU seconds so far of the server process, its intake workers and its delivery
    process, each role summed."""
    out = {"server": cpu_seconds(server), "intake": 0.0, "sender": 0.0}
    for pid in process_tree(server)[1:]:
        out["sender" if _is_sender(pid) else "intake"] += cpu_seconds(pid)
    return out


def settle(server: int, timeout: float = 60.0) -> None:
    """Wait until the server's delivery process has started and gone idle. It starts beside
    the server at a lower priority; its start-up (imports, opening the store) would
    otherwise run in whichever timed load it overlaps and charge that run alone."""
    deadline, last = time.monotonic() + timeout, -1.0
    while time.monotonic() < deadline:
        spent = cpu_by_role(server)["sender"]
        if spent > 0 and spent == last:
            return
        last = spent
        time.sleep(0.5)


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# --- a minimal HTTP/1.1 client ------------------------------------------------------------


class Conn:
    """One keep-alive connection; the client's own cost stays far below the server's."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        self.writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        length = 0
        for line in header.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def request_head(token: str) -> bytes:
    return (
        b"POST /fhir/Bundle HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json"
        b"\r\nAuthorization: Bearer " + token.encode() + b"\r\n"
    )


async def load(port: int, token: str, items: list[bytes], concurrency: int) -> list[float]:
    head = request_head(token)
    queue: Iterator[bytes] = iter(items)
    latencies: list[float] = []

    async def worker() -> None:
        conn = await Conn.open(port)
        try:
            for body in queue:
                t = time.perf_counter()
                status, answer = await conn.post(head, body)
                latencies.append(time.perf_counter() - t)
                if status != 201:
                    raise SystemExit(f"status {status}: {answer[:300]!r}")
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1] if len(values) > 1 else values[0]


# --- main ---------------------------------------------------------------------------------


# --- deliveries ---------------------------------------------------------------------------

RECIPIENT = "home-kr"
TOKEN = "home-kr-bearer-token"


def consents(items: list[bytes]) -> list[bytes]:
    """One consent Bundle per patient the Bundles name: treatment, naming the recipient."""
    from tests.settlement.test_settlement_index import consent_bundle

    patients = {check_bundle(b, FHIR_JSON, IntakeLimits()).patients[0] for b in items}
    return [consent_bundle(p, RECIPIENT, purpose="TREAT") for p in sorted(patients)]


def delivery_counts(data: Path) -> dict[str, int]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(data / "medledger.db")) as db:
        rows = db.execute("SELECT status, count(*) FROM exchange_deliveries GROUP BY status")
        return dict(rows.fetchall())


# --- main ---------------------------------------------------------------------------------


@dataclass
class Run:
    rate: float
    lat: list[float]
    big_lat: list[float]
    rss: list[tuple[int, float]]
    queued: int = 0
    during: int = 0  # deliveries made while the load ran
    drained: float = 0.0  # seconds from the start of the load to the last delivery
    sender_rss: float = 0.0  # MB, the server's delivery process (exchange.outbox.process)
    cpu: dict[str, float] = field(default_factory=dict)  # ms per Bundle in the load, by role

    def drain_after(self, submitted: int) -> float:
        """Deliveries/s made after the load ended (when the delivery process had the CPU)."""
        return (self.queued - self.during) / max(self.drained - submitted / self.rate, 1e-9)


def serve_and_load(
    args: argparse.Namespace, small: list[bytes], warm: list[bytes], big: list[bytes],
    consented: bool = False, receiver: str | None = None,
) -> Run:  # fmt: skip
    """One server on a fresh store. `consented`: every Bundle's patient consented to
    disclosure for treatment to the recipient (the consents posted before the timed load),
    whose endpoint is `receiver` (None: it has none, and nothing is delivered)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        token = json.loads(
            cli(data, "clients", "add", "--name", "bench", "--role", "hospital",
                "--org", "bench-hospital", "--json")
        )["token"]  # fmt: skip
        if consented:
            endpoint = [] if receiver is None else ["--endpoint", receiver, "--endpoint-token",
                                                    TOKEN]  # fmt: skip
            cli(data, "recipients", "set", "--org", RECIPIENT, "--country", "KR", "--basis",
                "standard-contract", "--reference", "bench-0001", *endpoint)  # fmt: skip
        port = free_port()
        server = start_server(data, port, args.intake_workers)
        try:
            settle(server.pid)
            if consented:
                asyncio.run(load(port, token, consents(small + warm), 1))
            asyncio.run(load(port, token, warm, min(args.concurrency, len(warm))))
            cpu_before = cpu_by_role(server.pid)
            t = time.perf_counter()
            lat = asyncio.run(load(port, token, small, args.concurrency))
            elapsed = time.perf_counter() - t
            cpu_after = cpu_by_role(server.pid)
            cpu = {k: (cpu_after[k] - cpu_before[k]) * 1000 / len(small) for k in cpu_after}
            queued, during, drained = 0, 0, 0.0
            if receiver is not None:
                counts = delivery_counts(data)
                queued, during = sum(counts.values()), counts.get("delivered", 0)
                while delivery_counts(data).get("pending", 0) and time.perf_counter() - t < 600:
                    time.sleep(0.05)
                drained = time.perf_counter() - t
            big_lat = asyncio.run(load(port, token, big, 1))
            tree = process_tree(server.pid)
            rss = [(pid, peak_rss_mb(pid)) for pid in tree]
            sender = sum(peak_rss_mb(pid) for pid in tree if _is_sender(pid))
        finally:
            server.terminate()
            server.wait(timeout=30)
    return Run(len(small) / elapsed, lat, big_lat, rss, queued, during, drained, sender, cpu)


def _is_sender(pid: int) -> bool:
    """The server's delivery process: multiprocessing's spawn of exchange.outbox.process."""
    try:
        return b"multiprocessing.spawn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="8 KB Bundles to post (%(default)s)")
    ap.add_argument("--size", type=int, default=8000, help="target Bundle size in bytes")
    ap.add_argument("--concurrency", type=int, default=32, help="connections (%(default)s)")
    ap.add_argument("--big", type=int, default=5, help="1 MB Bundles to post (%(default)s)")
    ap.add_argument("--intake-workers", type=int, default=None, help="the server's (default)")
    ap.add_argument(
        "--deliveries", type=int, default=0, metavar="ROUNDS",
        help="also run with every Bundle's patient consented to delivery to a local FHIR "
        "receiver, alternating with runs without, ROUNDS times each; print both and the ratio",
    )  # fmt: skip
    args = ap.parse_args()

    small = bundles(args.n, args.size)
    warm = bundles(50, args.size)
    big = bundles(args.big, 1_000_000)
    mean = sum(map(len, small)) / len(small)
    print(
        f"Bundles: {len(small)} of {mean / 1000:.1f} KB mean; {len(big)} of "
        f"{len(big[0]) / 1e6:.2f} MB; {os.cpu_count()} CPUs"
    )
    sample = small[: min(len(small), 1000)]
    floor = rate(Bundle.model_validate_json, sample)
    intake = rate(lambda b: check_bundle(b, FHIR_JSON, IntakeLimits()), sample)
    floor_all = rate_all_cores(sample)
    t = time.perf_counter()
    Bundle.model_validate_json(big[0])
    floor_big = time.perf_counter() - t
    print(
        "validation-only (fhir.resources R4B Bundle.model_validate_json, 1 core): "
        f"{floor:.0f} bundles/s;"
        f" 1 MB: {floor_big * 1000:.0f} ms"
    )
    print(
        f"validation-only on all {os.cpu_count()} CPUs (one process each): "
        f"{floor_all:.0f} bundles/s"
    )
    print(f"intake only (check_bundle: strict JSON + R4B, 1 core): {intake:.0f} bundles/s")

    if args.deliveries:
        compare_deliveries(args, small, warm, big)
        return
    run = serve_and_load(args, small, warm, big)
    e2e, lat, big_lat, rss = run.rate, run.lat, run.big_lat, run.rss
    print(
        f"end-to-end HTTP, {args.concurrency} connections: {e2e:.0f} bundles/s, "
        f"p50 {pct(lat, 50) * 1000:.1f} ms, p95 {pct(lat, 95) * 1000:.1f} ms "
        f"({len(small)} Bundles in {len(small) / e2e:.1f} s)"
    )
    print(
        f"end-to-end HTTP, 1 MB Bundle: mean {statistics.mean(big_lat) * 1000:.0f} ms, "
        f"max {max(big_lat) * 1000:.0f} ms ({len(big[0]) / 1e6 / statistics.mean(big_lat):.1f}"
        f" MB/s; validation-only {floor_big * 1000:.0f} ms)"
    )
    main_rss = rss[0][1]
    others = sum(r for _, r in rss[1:])
    client_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"peak RSS: server {main_rss:.0f} MB; its {len(rss) - 1} helper processes (intake "
        f"workers, fork server) {others:.0f} MB together; this client {client_rss:.0f} MB"
    )
    print(f"end-to-end = {e2e / floor_all:.0%} of validation-only on all {os.cpu_count()} CPUs")
    print(f"end-to-end {e2e:.0f} bundles/s = {e2e / floor:.0%} of validation-only")


def _cpu(run: Run) -> str:
    return ", ".join(f"{role} {ms:.2f} ms" for role, ms in run.cpu.items())


def compare_deliveries(
    args: argparse.Namespace, small: list[bytes], warm: list[bytes], big: list[bytes]
) -> None:
    """Runs without deliveries and with, alternating, each on a fresh store and server."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_outbox import _receiver

    runs: dict[bool, list[Run]] = {False: [], True: []}
    ratios, steadied = [], []
    with _receiver("fhir") as url:
        for round_ in range(args.deliveries):
            for delivered in (False, True) if round_ % 2 == 0 else (True, False):
                run = serve_and_load(args, small, warm, big, True, url if delivered else None)
                runs[delivered].append(run)
                what = "with deliveries   " if delivered else "without deliveries"
                extra = ""
                if delivered:
                    after = run.drain_after(len(small))
                    extra = (f"; {run.queued} deliveries queued, {run.during} made during the "
                             f"load, the rest after it at {after:.0f}/s; delivery process peak "
                             f"RSS {run.sender_rss:.0f} MB")  # fmt: skip
                print(
                    f"{what}: {run.rate:.0f} bundles/s, p50 {pct(run.lat, 50) * 1000:.1f} ms,"
                    f" p95 {pct(run.lat, 95) * 1000:.1f} ms, server peak RSS "
                    f"{run.rss[0][1]:.0f} MB; CPU per Bundle in the load: {_cpu(run)}{extra}"
                )
            with_run, without_run = runs[True][-1], runs[False][-1]
            ratios.append(with_run.rate / without_run.rate)
            # The intake workers do the same work in both runs (validating the same Bundles):
            # their CPU per Bundle is the machine's speed at the time, which drifts by tens of
            # percent between minutes on a shared machine. Scaled by it, the rates compare at
            # one speed.
            steadied.append(ratios[-1] * with_run.cpu["intake"] / without_run.cpu["intake"])
            print(f"pair {round_ + 1}: with / without = {ratios[-1]:.0%}; at equal machine "
                  f"speed {steadied[-1]:.0%}")  # fmt: skip
    without = statistics.median(r.rate for r in runs[False])
    with_ = statistics.median(r.rate for r in runs[True])
    after = statistics.median(r.drain_after(len(small)) for r in runs[True])
    print(
        f"medians: without {without:.0f} bundles/s, with deliveries {with_:.0f} bundles/s; "
        f"pairs' ratio {statistics.median(ratios):.0%} (from {min(ratios):.0%} to "
        f"{max(ratios):.0%}), at equal machine speed {statistics.median(steadied):.0%} (from "
        f"{min(steadied):.0%} to {max(steadied):.0%}); deliveries after the load "
        f"{after:.0f}/s; server peak RSS "
        f"{max(r.rss[0][1] for r in runs[True]):.0f} MB with, "
        f"{max(r.rss[0][1] for r in runs[False]):.0f} MB without"
    )


if __name__ == "__main__":
    main()
