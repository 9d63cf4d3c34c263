"""Steady-rate submission load on loopback: receipt latency p50/p99, errors, peak RSS.

Starts its own `medledger serve` on a fresh data directory (or takes --url and --token), then
several clients each submit ~8 KB FHIR Bundles at a fixed rate for a bounded time and count.
`--noisy` measures the quiet clients alone, then beside one extra client sending exactly its
rate-limit quota (load the limiter admits), then beside that client sending ten times its quota,
and compares the quiet clients' p99: 10x against alone, and 10x against at-quota (what the
limiter itself is for: the excess must not cost the others anything).

    .venv/bin/python benchmarks/load.py --clients 4 --rate 5 --seconds 10
    .venv/bin/python benchmarks/load.py --noisy --rate-limit 20 --seconds 10
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import multiprocessing
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
MAX_REQUESTS = 100_000
MAX_SECONDS = 600.0
NOISY_CONNECTIONS = 10


def bundle_8k() -> bytes:
    """A collection Bundle of Observations, about 8 KB, with a fresh identifier."""
    return _BUNDLE_8K.replace(_ID_MARK, str(uuid.uuid4()).encode())


def _bundle_8k_template() -> bytes:
    entries = [
        {
            "fullUrl": f"urn:uuid:{uuid.UUID(int=i + 1)}",
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 100 + i, "unit": "mm[Hg]"},
                "note": [{"text": f"load entry {i} " + "x" * 40}],
            },
        }
        for i in range(24)
    ]
    doc = {
        "resourceType": "Bundle",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{_ID_MARK.decode()}"},
        "type": "collection",
        "entry": entries,
    }
    return json.dumps(doc).encode()


# Built once: the generator shares the server's cores, so each request should cost it
# as little as possible (one replace, not a JSON encoding).
_ID_MARK = b"00000000-0000-4000-8000-00000000cafe"
_BUNDLE_8K = _bundle_8k_template()


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)

    def percentile(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


def submit_loop(
    url: str,
    token: str,
    rate: float,
    connections: int,
    start: float,
    until: float,
    count: int,
    st: Stats,
) -> None:
    """Submits at `rate` per second from `start`, in all over `connections` keep-alive
    connections, from one thread.

    Each request goes out at its time on a connection that is free (open loop: a slow answer
    delays the next only while no connection is free, and late requests then catch up).
    Plain sockets and one thread, because the generator shares the server's cores: a fuller
    HTTP client spends CPU the server needs, and a flood from another machine costs this one
    nothing, whereas ten threads or processes, each waking at a tenth of the rate, slowed the
    quiet clients far more than the server's answers to the same requests did
    (docs/reliability.md).
    """
    target = urllib.parse.urlsplit(url)
    host, port = target.hostname or "127.0.0.1", target.port or 80
    head = (
        f"POST /fhir/Bundle HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/fhir+json\r\n"
        f"Content-Length: {len(_BUNDLE_8K)}\r\n\r\n"
    ).encode()
    sel = selectors.DefaultSelector()
    # Taken in turn, so that none sits idle past the server's keep-alive timeout.
    idle = collections.deque(
        socket.create_connection((host, port), timeout=30) for _ in range(connections)
    )
    busy: dict[socket.socket, tuple[float, bytearray]] = {}
    period, nxt, sent = 1.0 / rate, start, 0
    try:
        while True:
            now = time.monotonic()
            sending = now < until and sent < count
            if not sending and not busy:
                return
            if sending and idle and now >= nxt:
                conn = idle.popleft()
                t0 = time.perf_counter()
                try:
                    conn.sendall(head + bundle_8k())
                except OSError as e:
                    st.status[type(e).__name__] = st.status.get(type(e).__name__, 0) + 1
                    conn.close()
                    idle.append(socket.create_connection((host, port), timeout=30))
                    continue
                busy[conn] = (t0, bytearray())
                sel.register(conn, selectors.EVENT_READ)
                nxt += period
                sent += 1
                continue
            wait = max(0.0, nxt - now) if sending and idle else max(0.0, until - now) + 30.0
            events = sel.select(wait)
            if not events and not (sending and idle):
                raise TimeoutError("no answer within 30 s of the end")
            for key, _ in events:
                conn = key.fileobj
                t0, buf = busy[conn]
                try:
                    chunk = conn.recv(65536)
                except OSError:
                    chunk = b""
                buf += chunk
                status = _complete_status(buf)
                if chunk and status is None:
                    continue
                sel.unregister(conn)
                del busy[conn]
                if status is None:  # closed by the server: a new connection instead
                    conn.close()
                    conn = socket.create_connection((host, port), timeout=30)
                    st.status["closed"] = st.status.get("closed", 0) + 1
                else:
                    st.status[str(status)] = st.status.get(str(status), 0) + 1
                    if status == 201:
                        st.latencies.append(time.perf_counter() - t0)
                idle.append(conn)
    finally:
        for conn in [*idle, *busy]:
            conn.close()


def _complete_status(buf: bytearray) -> int | None:
    """The status of a whole HTTP/1.1 response with a Content-Length in `buf`, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buf[:end]).split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if len(buf) < end + 4 + length:
        return None
    return int(lines[0].split()[1])


@dataclass(frozen=True)
class Engine:
    """One hospital engine: a credential and a rate per stream, each stream a thread of one
    process over `connections` connections (see submit_loop)."""

    tokens: list[str]
    rates: list[float]
    connections: int = 1


def _stream(url, token, rate, connections, start, until, count, st: Stats) -> None:
    try:
        submit_loop(url, token, rate, connections, start, until, count * connections, st)
    except OSError as e:  # the server went away: the parent still gets the counts
        st.status[type(e).__name__] = st.status.get(type(e).__name__, 0) + 1


def _run_engine(url, engine: Engine, starts, until, count, out) -> None:
    stats = [Stats() for _ in engine.tokens]
    n = engine.connections
    threads = [
        threading.Thread(target=_stream, args=(url, t, r, n, start, until, count, st))
        for t, r, start, st in zip(engine.tokens, engine.rates, starts, stats, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put([(st.latencies, st.status) for st in stats])


def run_engines(url: str, engines: list[Engine], seconds: float, count: int):
    """Runs each engine in a process of its own, as separate engines are: one engine's
    waiting for its interpreter lock is then never counted in another's latency. Of all n
    connections, the k-th starts k/n of its period after the first, so they arrive as a
    steady stream rather than in bursts of n (which is what connections started together at
    one rate would send). Returns each engine's per-connection Stats."""
    n = sum(len(e.tokens) for e in engines)
    t0 = time.monotonic() + 0.5  # every process is running by then
    ctx = multiprocessing.get_context("fork")  # this process runs no threads of its own
    children, k = [], 0
    for engine in engines:
        starts = []
        for r in engine.rates:
            starts.append(t0 + k / n / r)
            k += 1
        out = ctx.SimpleQueue()
        child = ctx.Process(
            target=_run_engine, args=(url, engine, starts, t0 + seconds, count, out)
        )
        child.start()
        children.append((child, out))
    results = [[Stats(lat, status) for lat, status in out.get()] for _, out in children]
    for child, _ in children:
        child.join()
    return results


def warm_up(url: str, tokens: list[str]) -> None:
    """One submission per client first, so start-up costs (intake workers) stay out of p99."""
    for t in tokens:
        h = {"Authorization": f"Bearer {t}", "Content-Type": "application/fhir+json"}
        httpx.post(url + "/fhir/Bundle", content=bundle_8k(), headers=h, timeout=60)
    time.sleep(1.0)  # let the buckets refill


def peak_rss_kb(pid: int) -> int | None:
    """VmHWM of the server process (Linux /proc), the peak resident set size."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds used so far by a process and its descendants (the server and its intake
    workers), from Linux /proc; None elsewhere."""
    tick = os.sysconf("SC_CLK_TCK")
    usage: dict[int, float] = {}
    parent: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        p = int(stat.parent.name)
        parent[p] = int(fields[1])
        usage[p] = (int(fields[11]) + int(fields[12])) / tick
    if pid not in usage:
        return None
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += usage.get(p, 0.0)
        todo.extend(c for c, pp in parent.items() if pp == p)
    return total


def _generator_seconds() -> float:
    """CPU seconds of this process and of the engine processes it has reaped."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


class CpuMeter:
    """Cores used by this generator and by the server during one run: they share the
    machine, so a run's latency is only read correctly beside them."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.t0 = time.monotonic()
        self.mine = _generator_seconds()
        self.server = tree_cpu_seconds(server_pid) if server_pid else None

    def cores(self) -> dict[str, float | None]:
        wall = time.monotonic() - self.t0
        server = tree_cpu_seconds(self.server_pid) if self.server_pid else None
        return {
            "generator_cores": round((_generator_seconds() - self.mine) / wall, 2),
            "server_cores": None
            if server is None or self.server is None
            else round((server - self.server) / wall, 2),
        }


def start_server(data: Path, rate_limit: float, burst: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exchange.cli",
            "serve",
            "--data",
            str(data),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--rate-limit",
            str(rate_limit),
            "--burst",
            str(burst),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/v1/log/key", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


def server_stack() -> dict[str, str]:
    """The event loop and HTTP parser uvicorn picks in this environment (its "auto")."""

    def present(name: str) -> bool:
        return importlib.util.find_spec(name) is not None

    return {
        "loop": "uvloop" if present("uvloop") else "asyncio",
        "http": "httptools" if present("httptools") else "h11",
    }


def new_token(data: Path, name: str) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "exchange.cli",
            "clients",
            "add",
            "--data",
            str(data),
            "--name",
            name,
            "--role",
            "hospital",
            "--org",
            "hospital-a",
            "--json",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return str(json.loads(out.stdout)["token"])


def report(
    label: str, stats: list[Stats], seconds: float, cpu: dict[str, float | None] | None = None
) -> dict[str, object]:
    merged = Stats([x for s in stats for x in s.latencies])
    for s in stats:
        for k, v in s.status.items():
            merged.status[k] = merged.status.get(k, 0) + v
    out = {
        "run": label,
        "receipts": len(merged.latencies),
        "receipts_per_s": round(len(merged.latencies) / seconds, 1),
        "p50_ms": round(merged.percentile(0.50), 1),
        "p99_ms": round(merged.percentile(0.99), 1),
        "answers": merged.status,
        **(cpu or {}),
    }
    print(json.dumps(out), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", help="a running server (loopback only); default: start one")
    ap.add_argument("--token", action="append", help="hospital credentials, one per client")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rate", type=float, default=5.0, help="submissions/s per client")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--count", type=int, default=1000, help="at most this many per client")
    ap.add_argument("--rate-limit", type=float, default=20.0, help="server per-client limit")
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--noisy", action="store_true", help="add one client at 10x the limit")
    a = ap.parse_args(argv)
    seconds = min(a.seconds, MAX_SECONDS)
    count = min(a.count, MAX_REQUESTS // max(1, a.clients))
    proc = None
    with tempfile.TemporaryDirectory(prefix="medledger-load-") as tmp:
        if a.url:
            host = httpx.URL(a.url).host
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise SystemExit("load is only sent to a loopback server")
            url, tokens = a.url.rstrip("/"), list(a.token or [])
            if len(tokens) < a.clients + a.noisy:
                raise SystemExit(f"--url needs {a.clients + a.noisy} --token values")
        else:
            data = Path(tmp) / "data"
            tokens = [new_token(data, f"load {i}") for i in range(a.clients + a.noisy)]
            proc, url = start_server(data, a.rate_limit, a.burst)
            print(json.dumps({"server_stack": server_stack()}), flush=True)
        try:
            warm_up(url, tokens)
            quiet = tokens[: a.clients]
            pid = proc.pid if proc is not None else None
            meter = CpuMeter(pid)
            engines = [Engine([t], [a.rate]) for t in quiet]
            steady = [st for group in run_engines(url, engines, seconds, count) for st in group]
            base = report("steady", steady, seconds, meter.cores())
            if a.noisy:
                noisy = tokens[a.clients]
                # The extra client first at its quota (load the limiter must let through),
                # then at ten times it over ten connections, so that ten times the quota
                # arrives however slowly any one answer comes back.
                phases = [
                    ("beside a client at its quota", Engine([noisy], [a.rate_limit])),
                    (
                        "beside a client at 10x its quota",
                        Engine([noisy], [10 * a.rate_limit], connections=NOISY_CONNECTIONS),
                    ),
                ]
                p99 = {"alone": base["p99_ms"]}
                for label, extra in phases:
                    time.sleep(max(1.0, a.burst / a.rate_limit))  # a full bucket again
                    meter = CpuMeter(pid)
                    *groups, extra_stats = run_engines(url, [*engines, extra], seconds, count)
                    quiet_stats = [st for group in groups for st in group]
                    cpu = meter.cores()
                    p99[label] = report(f"quiet clients {label}", quiet_stats, seconds, cpu)[
                        "p99_ms"
                    ]
                    report(f"the extra client, {label}", extra_stats, seconds)
                over = p99["beside a client at 10x its quota"]
                print(
                    json.dumps(
                        {
                            "quiet_p99_ms": p99,
                            "10x_vs_alone": round(over / p99["alone"], 2),
                            "10x_vs_at_quota": round(over / p99["beside a client at its quota"], 2),
                        }
                    )
                )
        finally:
            if proc is not None:
                rss = peak_rss_kb(proc.pid)
                proc.terminate()
                proc.wait(timeout=60)
                print(json.dumps({"server_peak_rss_kb": rss}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
