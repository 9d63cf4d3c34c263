"""What checking a bearer credential costs a request: the same cheap request with and without.

    .venv/bin/python benchmarks/bench_auth.py                    # 20,000 requests per row
    .venv/bin/python benchmarks/bench_auth.py --n 50000 --concurrency 1 64

Starts `medledger serve` (SQLite, no rate limit, no intake workers) on a fresh data directory,
registers a hospital client, and sends GET requests over keep-alive connections of a minimal
HTTP/1.1 client, for each concurrency:

- `none`: `GET /v1/trace?gtin=1` without a credential: refused (401) before any lookup, the
  floor of routing, the guard and an answer;
- `mlt_`: the same with the client's credential: the credential is checked (and must be
  current: a revocation takes effect on the next request), then the handler refuses the GTIN
  at once (400), touching no table.

Prints one JSON line per row: requests/s, p50 and p99 latency in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_intake import Conn, cli, free_port, pct, start_server  # noqa: E402


async def _get(conn: Conn, head: bytes) -> tuple[int, bytes]:
    conn.writer.write(head)
    header = await conn.reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in header.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return int(header[9:12]), await conn.reader.readexactly(length)


async def load(port: int, head: bytes, n: int, concurrency: int, status: int) -> list[float]:
    left = iter(range(n))
    latencies: list[float] = []

    async def worker() -> None:
        conn = await Conn.open(port)
        try:
            for _ in left:
                t = time.perf_counter()
                got, answer = await _get(conn, head)
                latencies.append(time.perf_counter() - t)
                if got != status:
                    raise SystemExit(f"status {got}: {answer[:300]!r}")
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000, help="requests per row")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="medledger-bench-auth-") as tmp:
        data = Path(tmp) / "data"
        token = json.loads(
            cli(data, "clients", "add", "--name", "bench", "--role", "hospital", "--org",
                "hospital-a", "--json")
        )["token"]  # fmt: skip
        port = free_port()
        proc = start_server(data, port, 0)
        rows = {
            "none": (b"GET /v1/trace?gtin=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 401),
            "mlt_": (
                b"GET /v1/trace?gtin=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                + token.encode()
                + b"\r\n\r\n",
                400,
            ),
        }
        try:
            for label, (head, status) in rows.items():
                asyncio.run(load(port, head, 500, 4, status))  # warm up
                for concurrency in a.concurrency:
                    start = time.perf_counter()
                    lat = asyncio.run(load(port, head, a.n, concurrency, status))
                    elapsed = time.perf_counter() - start
                    print(json.dumps({
                        "row": label,
                        "concurrency": concurrency,
                        "requests_per_s": round(len(lat) / elapsed),
                        "p50_ms": round(pct(lat, 50) * 1000, 2),
                        "p99_ms": round(pct(lat, 99) * 1000, 2),
                    }), flush=True)  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
