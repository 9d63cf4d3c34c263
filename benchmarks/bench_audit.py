"""How fast a whole-log audit runs, beside the floor: hashlib SHA-256 over the same bytes.

    .venv/bin/python benchmarks/bench_audit.py              # n = 10^5
    .venv/bin/python benchmarks/bench_audit.py --n 1000000  # 10^6 (about a minute to build)

Builds a log of n entries (batches of 1,000, one signed checkpoint each, as group commit
writes them) in a SQLite database, then measures, each audit in a fresh process so its peak
RSS is its own:

- raw: hashlib.sha256(entry).digest() over every entry's bytes, in memory (the floor);
- leaf+tree: RFC 6962 leaf and node hashes only (what any audit of the tree must compute);
- hash-and-chain: ledger.audit over entries in memory (canonical form, chain, tree, root);
- db: `medledger audit --db` on the SQLite file (adds reading, every stored checkpoint's
  signature and root, and every stored tree hash);
- http: `medledger audit --url` against the log API served from another process
  (exchange.app when it exists, else a stand-in serving the same /v1/log/* shapes).

The last line reads `audit <N> entries/s = <R> of raw hashing` for the database audit.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from sqlalchemy import create_engine, insert  # noqa: E402

from ledger import merkle, store  # noqa: E402
from ledger.checkpoint import format_checkpoint  # noqa: E402
from ledger.entry import Entry  # noqa: E402
from ledger.note import Signer, sign  # noqa: E402

ORIGIN = "bench.example/log"
BATCH = 1000


def build(db: Path, n: int, signer: Signer) -> None:
    """Writes the tables exactly as ledger.log does, without computing receipts."""
    engine = create_engine(f"sqlite:///{db}")
    store.create_schema(engine)
    rng = random.Random(1)
    kinds = ["record", "consent", "rwd", "settlement", "access"]
    frontier: list[bytes] = []
    prev = b""
    with engine.begin() as conn:
        empty = sign(format_checkpoint(ORIGIN, 0, merkle.empty_root()), [signer])
        conn.execute(insert(store.head_table).values(id=1, origin=ORIGIN, size=0, checkpoint=empty))
        conn.execute(insert(store.checkpoints_table).values(size=0, note=empty))
    size = 0
    while size < n:
        rows, hashes = [], []
        t = f"2026-11-28T10:{size // 60000 % 60:02d}:{size // 1000 % 60:02d}.{size % 1000:03d}Z"
        for i in range(size, min(n, size + BATCH)):
            e = Entry(
                i,
                prev,
                t,
                kinds[i % 5],
                f"hosp-{i % 7}",
                rng.randbytes(32),
                "application/fhir+json",
                rng.randbytes(32) if i % 2 else None,
            )
            data = e.to_bytes()
            leaf = merkle.leaf_hash(data)
            new, frontier = merkle.append_leaf(frontier, i, leaf)
            hashes.extend({"idx": j, "hash": h} for j, h in new)
            rows.append({"idx": i, "prev": prev or b"\x00" * 32 + b"first", "data": data})
            prev = leaf
        size += len(rows)
        note = sign(format_checkpoint(ORIGIN, size, merkle.fold_frontier(frontier)), [signer])
        with engine.begin() as conn:
            conn.execute(insert(store.entries_table), rows)
            conn.execute(insert(store.hashes_table), hashes)
            conn.execute(insert(store.checkpoints_table).values(size=size, note=note))
            conn.execute(store.head_table.update().values(size=size, checkpoint=note))
    engine.dispose()


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM); ru_maxrss would count the parent's pages too."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rate_of(fn, n: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def raw_rates(db: Path, vkey: str) -> dict[str, float]:
    from ledger.audit import audit
    from ledger.merkle import extend_frontier, leaf_hashes
    from ledger.note import Verifier

    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        entries = store.read_entries(conn, 0, 10**9)
    engine.dispose()
    n = len(entries)
    sha = hashlib.sha256

    def raw() -> None:
        for e in entries:
            sha(e).digest()

    def leaf_tree() -> None:
        f: list[bytes] = []
        for i in range(0, n, 4096):
            f = extend_frontier(f, i, leaf_hashes(entries[i : i + 4096]))

    class Memory:
        description = "memory"
        page_size = 4096

        def checkpoint(self) -> str:
            return note

        def entries(self, start: int, end: int) -> list[bytes]:
            return entries[start:end]

        def checkpoints(self, first: int, last: int) -> None:
            return None

        def stored_hashes(self, start: int, end: int) -> None:
            return None

        def beyond(self, size: int) -> tuple[None, None]:
            return None, None

    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        head = store.read_head(conn)
    engine.dispose()
    assert head is not None
    note = head[2]
    keys = [Verifier.from_vkey(vkey)]

    def chain() -> None:
        r = audit(Memory(), keys)  # type: ignore[arg-type]
        assert r.ok, r.error

    return {
        "bytes": sum(map(len, entries)) / n,
        "raw": rate_of(raw, n),
        "leaf+tree": rate_of(leaf_tree, n),
        "hash-and-chain": rate_of(chain, n),
    }


def child(kind: str, target: str, vkey: str, extra: list[str]) -> None:
    """One audit in this process; prints its rate and peak RSS as JSON."""
    import contextlib
    import io

    from exchange.cli.main import build_parser, main

    build_parser()  # every import the command needs, before the baseline is taken
    import exchange.audit_sources  # noqa: F401

    base = peak_rss_mb()
    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        code = main(["audit", f"--{kind}", target, "--key", vkey, "--json", "-q", *extra])
    wall = time.perf_counter() - t0
    out = json.loads(buf.getvalue())
    print(
        json.dumps(
            {
                "exit": code,
                "entries": out["entries_checked"],
                "seconds": out["seconds"],
                "wall": wall,
                "rate": out["entries_checked"] / out["seconds"],
                "maxrss_mb": peak_rss_mb(),
                "base_mb": base,
            }
        )
    )


def run_child(kind: str, target: str, vkey: str, *extra: str) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--target",
            target,
            "--vkey",
            vkey,
            "--",
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"audit child failed: {done.stderr or done.stdout}")
    res = json.loads(done.stdout.strip().splitlines()[-1])
    if res["exit"] != 0:
        raise SystemExit(f"audit of {target} did not pass: {res}")
    return res


def serve(db: Path, port: int) -> None:
    """Serves the design's /v1/log/* reads from the database (when exchange.app is absent)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlparse

    engine = create_engine(f"sqlite:///{db}")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            url = urlparse(self.path)
            q = {k: int(v[0]) for k, v in parse_qs(url.query).items()}
            with engine.connect() as conn:
                if url.path == "/v1/log/checkpoint":
                    head = store.read_head(conn)
                    assert head is not None
                    body, ctype = head[2].encode(), "text/plain; charset=utf-8"
                elif url.path == "/v1/log/entries":
                    end = min(q["end"], q["start"] + 1000)
                    data = store.read_entries(conn, q["start"], end)
                    body = json.dumps([base64.b64encode(d).decode() for d in data]).encode()
                    ctype = "application/json"
                else:
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
            self.send_response(200)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def start_server(data: Path, db: Path) -> tuple[subprocess.Popen, str, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        import exchange.app  # noqa: F401

        what = "exchange.app (uvicorn)"
        code = (
            "import uvicorn, sys; from exchange.app import create_app; "
            "from exchange.settings import Settings; from pathlib import Path; "
            f"uvicorn.run(create_app(Settings(data_dir=Path({str(data)!r}), origin={ORIGIN!r})),"
            f" host='127.0.0.1', port={port}, log_level='warning')"
        )
        cmd = [sys.executable, "-c", code]
    except ImportError:
        what = "stand-in server (exchange.app not present), same /v1/log/* shapes"
        cmd = [sys.executable, __file__, "--serve", str(db), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return proc, url, what
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"server did not start: {proc.stderr.read().decode()}") from None
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("server did not start listening")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="entries (default 10^5)")
    ap.add_argument("--data", type=Path, help="keep the built log here and reuse it")
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument("--child", choices=["db", "url"], help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--vkey", help=argparse.SUPPRESS)
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.target, args.vkey, args.extra)
        return
    if args.serve:
        serve(args.serve, args.port)
        return

    tmp = None
    data = args.data
    if data is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench-audit-"))
        data = tmp
    data.mkdir(parents=True, exist_ok=True)
    db = data / "medledger.db"
    keyfile = data / "log.key"
    marker = data / f"built-{args.n}"
    try:
        if not marker.exists():
            for p in data.glob("medledger.db*"):
                p.unlink()
            from cryptography.hazmat.primitives import serialization

            key = Ed25519PrivateKey.generate()
            fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(
                fd,
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
            os.close(fd)
            t0 = time.perf_counter()
            build(db, args.n, Signer(ORIGIN, key))
            marker.touch()
            print(f"built {args.n:,} entries in {time.perf_counter() - t0:.1f} s ({db})")
        from ledger.keys import load_signer

        vkey = load_signer(keyfile, ORIGIN).verifier.vkey()
        n = args.n
        r = raw_rates(db, vkey)
        print(
            f"python {sys.version.split()[0]}, one core; n = {n:,}, mean entry "
            f"{r['bytes']:.0f} bytes"
        )
        print(f"raw hashlib SHA-256 over the entries: {r['raw']:>12,.0f} entries/s  (floor)")
        print(
            f"RFC 6962 leaf + node hashes only:     {r['leaf+tree']:>12,.0f} entries/s  "
            f"({r['leaf+tree'] / r['raw']:.0%} of raw)"
        )
        print(
            f"hash-and-chain, in memory:            {r['hash-and-chain']:>12,.0f} entries/s  "
            f"({r['hash-and-chain'] / r['raw']:.0%} of raw; canonical form, chain, tree, root)"
        )
        dbr = run_child("db", str(db), vkey)
        print(
            f"full audit, local SQLite:             {dbr['rate']:>12,.0f} entries/s  "
            f"({dbr['seconds']:.2f} s; + {n // BATCH + 1:,} signed checkpoints, "
            f"{2 * n - 1:,} stored hashes)"
        )
        print(
            f"  peak RSS {dbr['maxrss_mb']:.0f} MB, of which {dbr['base_mb']:.0f} MB is the "
            "interpreter and the CLI's imports before the first read"
        )
        lite = run_child("db", str(db), vkey, "--no-stored-hashes")
        print(
            f"  without the stored-hash check:      {lite['rate']:>12,.0f} entries/s  "
            f"(peak RSS {lite['maxrss_mb']:.0f} MB)"
        )
        if not args.skip_http:
            proc, url, what = start_server(data, db)
            try:
                hr = run_child("url", url, vkey)
            finally:
                proc.terminate()
                proc.wait()
            print(
                f"full audit, HTTP API:                 {hr['rate']:>12,.0f} entries/s  "
                f"({hr['seconds']:.2f} s, peak RSS {hr['maxrss_mb']:.0f} MB; {what})"
            )
        print(f"audit {dbr['rate']:.0f} entries/s = {dbr['rate'] / r['raw']:.0%} of raw hashing")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
