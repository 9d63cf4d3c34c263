"""medledger's log beside pymerkle 7.0.0 (SqliteTree), in one run, on the same leaves.

    .venv/bin/python benchmarks/bench_ledger.py                  # n = 10^5 and 10^6
    .venv/bin/python benchmarks/bench_ledger.py --sizes 10000    # quick run

What is measured (every measurement in a fresh child process, so that its peak RSS,
resource.getrusage(RUSAGE_SELF).ru_maxrss, is its own; the parent imports only the stdlib):

- Durable appends, on a fresh log / fresh tree, each append durable before it returns:
  medledger through group commit (64 threads calling Log.append; each batch is one
  transaction, one fsync and one signed Ed25519 checkpoint; SQLite WAL + synchronous=FULL),
  the same from 64 asyncio tasks awaiting Log.submit (how the exchange service appends:
  waiters are coroutines, not threads competing for the interpreter), medledger one thread
  (one commit and one signed checkpoint per append), and pymerkle SqliteTree.append_entry
  (one commit per append, unsigned) twice: with its default PRAGMAs (as read back from its
  connection) and with WAL + synchronous=FULL, the same durability as medledger's. The
  payloads are entry bytes of the same shape and size. Each is run --repeat times (3),
  interleaved, and the median run by rate is shown.
- Bulk load of n entries: medledger Log.append_batch(receipts=False) in batches of 10,000
  (one transaction and one signed checkpoint per batch; no receipts, as pymerkle's bulk
  path gives none); pymerkle SqliteTree.append_entries (its bulk path:
  one transaction, executemany per 100,000-entry chunk) fed the very entry bytes medledger
  wrote, streamed from medledger's database (the time spent reading them is not counted).
- Proof latency: 1,000 random (index, size) inclusion queries and 1,000 random
  (size1, size2) consistency queries, the same queries on both sides, through the public
  API (Log.inclusion_proof / Log.consistency_proof; SqliteTree.prove_inclusion(index + 1,
  size) / prove_consistency(size1, size2), pymerkle counting leaves from 1). Each kind runs
  in its own fresh process, four times over the same queries: pass 1 starts with both
  caches empty (pymerkle's subroots, medledger's stored hashes, ledger/hash_cache.py);
  passes 2-4 find every hash they need cached (each one's best case) and are reported as
  "pass 2", the median of each statistic. A medledger proof is O(log n) stored hashes, read
  in one query when any is not cached.
- Proofs from tiles: the log's tiles written to disk by ledger.tiles.sync (timed once), then
  the same proof queries answered by ledger.tiles.TileReader from those files, every tile
  authenticated against the signed root before use (pass 1 a fresh reader, passes 2-4 its
  tile cache warm), side by side with the DB path's proofs/s and the ratio tiles/DB; the
  tile proofs are compared with the DB path's, untimed.
- Agreement, untimed: both roots of all n leaves (and of 20 random prefixes) compared with
  each other and with medledger's signed checkpoint; 200 inclusion proofs compared hash by
  hash (pymerkle's path is the leaf hash followed by the RFC 6962 audit path); 200
  consistency proofs each verified by its own library against the same pair of roots
  (pymerkle's consistency path is its own subset-mask format, not RFC 6962 PROOF).

The last line reads `speedup vs pymerkle at 10^6: proof p99 <X>x (pymerkle warm; <C>x
cold), durable append <Y>x` (at the largest size run). X is the smaller of the inclusion
and consistency p99 ratios in pass 2, with pymerkle's subroot cache holding everything the
queries need; C is the same ratio in pass 1, from a fresh pymerkle process. X is the
headline because it is the conservative one: a long-running pymerkle service would be
warm, and the cold figure mostly measures pymerkle filling its cache. Both are printed
because they differ by two orders of magnitude. Y is medledger's group-commit rate (durable,
signed, 64 threads: the conservative one) over pymerkle's rate in its default
configuration, one commit per append_entry (the baseline the goal names); the ratios from
asyncio tasks and against pymerkle in WAL + synchronous=FULL (same durability as
medledger, and faster than its default) are printed beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORIGIN = "bench.example/log"
KINDS = ("record", "consent", "rwd", "settlement", "access")
THREADS = 64
WARM_PASSES = 3  # proof passes after the first; each statistic is their median


# --- helpers shared by parent and children ------------------------------------------------


def ru_maxrss_mb() -> float:
    """Peak RSS of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vm_hwm_mb() -> float | None:
    """The kernel's own high-water mark of this process's RSS, to cross-check ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    k = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[k - 1]


def inclusion_queries(n: int, count: int, seed: int) -> list[tuple[int, int]]:
    """(0-based index, size) with size uniform in [1, n] and index uniform below it."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        size = rng.randint(1, n)
        out.append((rng.randrange(size), size))
    return out


def consistency_queries(n: int, count: int, seed: int) -> list[tuple[int, int]]:
    """(size1, size2) with size2 uniform in [2, n] and size1 uniform in [1, size2 - 1]."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        size2 = rng.randint(2, n)
        out.append((rng.randint(1, size2 - 1), size2))
    return out


def submissions(start: int, count: int, seed: int) -> list:
    from ledger.log import Submission

    rng = random.Random(seed * 1_000_003 + start)
    return [
        Submission(
            KINDS[i % 5],
            f"hosp-{i % 7}",
            rng.randbytes(32),
            subject=rng.randbytes(32) if i % 2 else None,
        )
        for i in range(start, start + count)
    ]


def entry_payloads(count: int, seed: int) -> list[bytes]:
    """Entry bytes of the shape medledger writes, for pymerkle's durable appends."""
    from ledger.entry import Entry

    rng = random.Random(seed)
    out, prev = [], b""
    for i in range(count):
        e = Entry(
            i,
            prev,
            "2026-11-28T10:00:00.000Z",
            KINDS[i % 5],
            f"hosp-{i % 7}",
            rng.randbytes(32),
            "application/fhir+json",
            rng.randbytes(32) if i % 2 else None,
        )
        out.append(e.to_bytes())
        prev = rng.randbytes(32)
    return out


def open_log(d: Path):
    from ledger import keys, store
    from ledger.log import Log

    key = d / "log.key"
    if not key.exists():
        keys.generate_key_file(key)
    signer = keys.load_signer(key, ORIGIN)
    engine = store.make_engine(f"sqlite:///{d / 'ml.db'}")
    return Log(engine, signer, origin=ORIGIN), engine


def pragmas(run) -> dict[str, str]:
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    sync = int(run("PRAGMA synchronous"))
    return {
        "journal_mode": str(run("PRAGMA journal_mode")),
        "synchronous": names.get(sync, str(sync)),
    }


# --- children ------------------------------------------------------------------------------


def child_ml_durable(spec: dict) -> dict:
    from ledger.log import Appended

    d = Path(spec["dir"])
    log, engine = open_log(d)
    with engine.connect() as conn:
        prag = pragmas(lambda q: conn.exec_driver_sql(q).scalar())
    count, threads = spec["count"], spec["threads"]
    subs = submissions(0, count, seed=1)
    base = ru_maxrss_mb()
    lat: list[float] = []
    lat_lock = threading.Lock()
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def work(part: list) -> None:
        mine = []
        barrier.wait()
        try:
            for s in part:
                t0 = time.perf_counter()
                r = log.append(s)  # returns only after commit + fsync + signed checkpoint
                mine.append(time.perf_counter() - t0)
                if not isinstance(r, Appended) or r.duplicate:
                    raise RuntimeError(f"unexpected append result {r!r}")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        with lat_lock:
            lat.extend(mine)

    if spec.get("asyncio"):
        wall = _asyncio_appends(log, subs, threads, lat)
    elif threads == 1:
        t0 = time.perf_counter()
        for s in subs:
            a = time.perf_counter()
            log.append(s)
            lat.append(time.perf_counter() - a)
        wall = time.perf_counter() - t0
    else:
        ts = [
            threading.Thread(target=work, args=(subs[k::threads],), daemon=True)
            for k in range(threads)
        ]
        for t in ts:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in ts:
            t.join()
        wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    log.close()
    size = log.size()
    assert size == count, (size, count)
    commits = len(log.checkpoints(1))
    lat.sort()
    return {
        "count": count,
        "seconds": wall,
        "rate": count / wall,
        "p50_ms": pct(lat, 50) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3,
        "commits": commits,
        "pragmas": prag,
        "base_mb": base,
    }


def _asyncio_appends(log, subs: list, tasks: int, lat: list[float]) -> float:
    """`tasks` coroutines on one event loop, each awaiting Log.submit's future in turn: how
    the exchange service appends (exchange/services.py). Returns the wall time."""
    import asyncio

    from ledger.log import Appended

    async def work(part: list) -> None:
        for s in part:
            t0 = time.perf_counter()
            r = await asyncio.wrap_future(log.submit(s))
            lat.append(time.perf_counter() - t0)
            if not isinstance(r, Appended) or r.duplicate:
                raise RuntimeError(f"unexpected append result {r!r}")

    async def run_all() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(*(work(subs[k::tasks]) for k in range(tasks)))
        return time.perf_counter() - t0

    return asyncio.run(run_all())


def child_pm_durable(spec: dict) -> dict:
    from pymerkle import SqliteTree

    tree = SqliteTree(str(Path(spec["dir"]) / "pm.db"))
    default = pragmas(lambda q: tree.con.execute(q).fetchone())
    if spec["mode"] == "wal":
        tree.con.execute("PRAGMA journal_mode=WAL")
        tree.con.execute("PRAGMA synchronous=FULL")
    prag = pragmas(lambda q: tree.con.execute(q).fetchone())
    data = entry_payloads(spec["count"], seed=2)
    base = ru_maxrss_mb()
    lat = []
    t0 = time.perf_counter()
    for e in data:
        a = time.perf_counter()
        tree.append_entry(e)  # INSERT, then COMMIT (`with self.con`): one commit per append
        lat.append(time.perf_counter() - a)
    wall = time.perf_counter() - t0
    assert tree.get_size() == len(data)
    tree.close()
    lat.sort()
    return {
        "count": len(data),
        "seconds": wall,
        "rate": len(data) / wall,
        "p50_ms": pct(lat, 50) * 1e3,
        "p99_ms": pct(lat, 99) * 1e3,
        "commits": len(data),
        "pragmas": prag,
        "default_pragmas": default,
        "base_mb": base,
    }


def child_ml_build(spec: dict) -> dict:
    d, n, batch = Path(spec["dir"]), spec["n"], spec["batch"]
    log, _ = open_log(d)
    base = ru_maxrss_mb()
    spent = 0.0
    t_wall = time.perf_counter()
    for start in range(0, n, batch):
        subs = submissions(start, min(batch, n - start), seed=3)
        t0 = time.perf_counter()
        results = log.append_batch(subs, receipts=False)
        spent += time.perf_counter() - t0
        bad = [r for r in results if isinstance(r, Exception)]
        if bad:
            raise bad[0]
    wall = time.perf_counter() - t_wall
    assert log.size() == n
    return {
        "n": n,
        "seconds": spent,
        "wall": wall,
        "rate": n / spent,
        "commits": len(log.checkpoints(1)),
        "base_mb": base,
        "db_mb": (d / "ml.db").stat().st_size / 2**20,
    }


def child_pm_build(spec: dict) -> dict:
    from pymerkle import SqliteTree

    d, n = Path(spec["dir"]), spec["n"]
    src = sqlite3.connect(d / "ml.db")
    feed_time = 0.0

    def feed():
        # medledger's entry bytes, in index order; time spent reading them is not pymerkle's.
        nonlocal feed_time
        t0 = time.perf_counter()
        cur = src.execute("SELECT data FROM ledger_entries ORDER BY idx")
        feed_time += time.perf_counter() - t0
        while True:
            t0 = time.perf_counter()
            rows = cur.fetchmany(10_000)
            feed_time += time.perf_counter() - t0
            if not rows:
                return
            for (data,) in rows:
                yield bytes(data)

    tree = SqliteTree(str(d / "pm.db"))
    prag = pragmas(lambda q: tree.con.execute(q).fetchone())
    base = ru_maxrss_mb()
    t0 = time.perf_counter()
    size = tree.append_entries(feed())
    total = time.perf_counter() - t0
    assert size == n, (size, n)
    tree.close()
    spent = total - feed_time
    return {
        "n": n,
        "seconds": spent,
        "feed_seconds": feed_time,
        "rate": n / spent,
        "commits": 1,
        "pragmas": prag,
        "base_mb": base,
        "db_mb": (d / "pm.db").stat().st_size / 2**20,
    }


def child_proofs(spec: dict) -> dict:
    d, n, side, kind = Path(spec["dir"]), spec["n"], spec["side"], spec["kind"]
    if kind == "inclusion":
        queries = inclusion_queries(n, spec["count"], spec["seed"])
    else:
        queries = consistency_queries(n, spec["count"], spec["seed"])
    if side == "medledger":
        log, _ = open_log(d)
        if kind == "inclusion":
            calls = [(log.inclusion_proof, (i, s)) for i, s in queries]
        else:
            calls = [(log.consistency_proof, (a, b)) for a, b in queries]
        cache = None
    else:
        from pymerkle import SqliteTree

        tree = SqliteTree(str(d / "pm.db"))
        if kind == "inclusion":
            calls = [(tree.prove_inclusion, (i + 1, s)) for i, s in queries]
        else:
            calls = [(tree.prove_consistency, (a, b)) for a, b in queries]
        cache = tree
    base = ru_maxrss_mb()
    passes = []
    hashes = 0
    for _ in range(1 + WARM_PASSES):
        lat = []
        perf = time.perf_counter
        for fn, args in calls:
            t0 = perf()
            proof = fn(*args)
            lat.append(perf() - t0)
            hashes += len(proof) if isinstance(proof, list) else len(proof.path)
        lat.sort()
        info = None
        if cache is not None:
            ci = cache.get_cache_info()
            info = {"entries": ci.size, "hits": ci.hits, "misses": ci.misses}
        passes.append(
            {
                "p50_ms": pct(lat, 50) * 1e3,
                "p99_ms": pct(lat, 99) * 1e3,
                "max_ms": lat[-1] * 1e3,
                "total_s": sum(lat),
                "cache": info,
            }
        )
    warm = {k: statistics.median(p[k] for p in passes[1:]) for k in ("p50_ms", "p99_ms", "max_ms")}
    return {
        "passes": [passes[0], warm],
        "warm_passes": passes[1:],
        "mean_hashes": hashes / (len(passes) * len(calls)),
        "base_mb": base,
    }


def child_check(spec: dict) -> dict:
    """Untimed: do both sides commit to the same tree, and prove the same things?"""
    import base64

    from pymerkle import SqliteTree
    from pymerkle import verify_consistency as pm_verify_consistency

    from ledger import merkle
    from ledger.checkpoint import parse_checkpoint
    from ledger.note import open_note

    d, n = Path(spec["dir"]), spec["n"]
    log, _ = open_log(d)
    tree = SqliteTree(str(d / "pm.db"))
    cp = parse_checkpoint(open_note(log.checkpoint(), [log.signer.verifier]).text)
    ml_root = log.root(n)
    pm_root = tree.get_root(n)
    rng = random.Random(spec["seed"])
    prefixes = sorted(rng.randint(1, n) for _ in range(20))
    prefix_ok = sum(log.root(s) == tree.get_root(s) for s in prefixes)

    k = spec["count"]
    incl_same = 0
    for i, s in inclusion_queries(n, k, spec["seed"] + 1):
        ours = log.inclusion_proof(i, s)
        theirs = tree.prove_inclusion(i + 1, s).path
        leaf = merkle.leaf_hash(log.entries(i, i + 1)[0])
        merkle.verify_inclusion(i, s, leaf, ours, log.root(s))
        incl_same += theirs[0] == leaf and theirs[1:] == ours
    cons_ok = cons_same = 0
    ours_len = theirs_len = 0
    for a, b in consistency_queries(n, k, spec["seed"] + 2):
        ours = log.consistency_proof(a, b)
        pm = tree.prove_consistency(a, b)
        r1, r2 = log.root(a), log.root(b)
        ok = True
        try:
            merkle.verify_consistency(a, b, r1, r2, ours)
            pm_verify_consistency(r1, r2, pm, prior_size=a, later_size=b)
        except Exception:  # noqa: BLE001 - counted as a disagreement
            ok = False
        cons_ok += ok
        cons_same += pm.path == ours
        ours_len += len(ours)
        theirs_len += len(pm.path)
    return {
        "roots_agree": ml_root == pm_root == cp.root and cp.size == n,
        "root": base64.b64encode(ml_root).decode(),
        "prefix_ok": prefix_ok,
        "prefixes": len(prefixes),
        "incl_same": incl_same,
        "cons_ok": cons_ok,
        "cons_same": cons_same,
        "count": k,
        "cons_len_ours": ours_len / k,
        "cons_len_pm": theirs_len / k,
        "base_mb": 0.0,
    }


def child_tiles(spec: dict) -> dict:
    """Tiles on disk: ledger.tiles.sync writes the log's tiles to a directory (timed), then
    the proof queries of child_proofs are answered by ledger.tiles.TileReader reading those
    files, every tile authenticated against the signed root before use. Pass 1 is a fresh
    reader (empty tile cache: each tile a proof needs is read from disk and checked once);
    passes 2-4 find every tile cached. The proofs are compared with the DB path's, untimed."""
    from ledger.checkpoint import parse_checkpoint
    from ledger.note import open_note
    from ledger.tiles import TileReader
    from ledger.tiles.sync import sync

    d, n, kind = Path(spec["dir"]), spec["n"], spec["kind"]
    log, _ = open_log(d)
    out = d / "tiles"
    base = ru_maxrss_mb()
    t0 = time.perf_counter()
    synced = sync(log, out)
    sync_s = time.perf_counter() - t0
    files = [p for p in out.rglob("*") if p.is_file()]
    cp = parse_checkpoint(open_note(log.checkpoint(), [log.signer.verifier]).text)
    assert cp.size == n
    fetched = {"n": 0, "bytes": 0}

    def fetch(path: str) -> bytes:
        data = (out / path).read_bytes()
        fetched["n"] += 1
        fetched["bytes"] += len(data)
        return data

    if kind == "inclusion":
        queries = inclusion_queries(n, spec["count"], spec["seed"])
    else:
        queries = consistency_queries(n, spec["count"], spec["seed"])
    reader = TileReader(cp.size, cp.root, fetch)
    call = reader.inclusion_proof if kind == "inclusion" else reader.consistency_proof
    passes = []
    perf = time.perf_counter
    for _ in range(1 + WARM_PASSES):
        fetched["n"] = fetched["bytes"] = 0
        lat = []
        for a, b in queries:
            t = perf()
            call(a, b)
            lat.append(perf() - t)
        lat.sort()
        passes.append(
            {
                "p50_ms": pct(lat, 50) * 1e3,
                "p99_ms": pct(lat, 99) * 1e3,
                "total_s": sum(lat),
                "rate": len(lat) / sum(lat),
                "tiles_per_proof": fetched["n"] / len(lat),
                "kib_per_proof": fetched["bytes"] / len(lat) / 1024,
            }
        )
    warm = {k: statistics.median(p[k] for p in passes[1:]) for k in ("p50_ms", "p99_ms", "rate")}
    same = 0
    prove = log.inclusion_proof if kind == "inclusion" else log.consistency_proof
    for a, b in queries[: spec["check"]]:
        same += call(a, b) == prove(a, b)
    return {
        "passes": [passes[0], warm],
        "sync_s": sync_s,
        "files": len(files),
        "mb": sum(f.stat().st_size for f in files) / 2**20,
        "written": len(synced.written),
        "same": same,
        "checked": min(spec["check"], len(queries)),
        "base_mb": base,
    }


CHILDREN = {
    "ml-durable": child_ml_durable,
    "pm-durable": child_pm_durable,
    "ml-build": child_ml_build,
    "pm-build": child_pm_build,
    "proofs": child_proofs,
    "check": child_check,
    "tiles": child_tiles,
}


def run_child(spec: dict) -> dict:
    sys.path.insert(0, str(ROOT))
    out = CHILDREN[spec["job"]](spec)
    out["rss_mb"] = ru_maxrss_mb()
    out["hwm_mb"] = vm_hwm_mb()
    return out


# --- parent --------------------------------------------------------------------------------


def spawn(spec: dict) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        stdout=subprocess.PIPE,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {spec['job']} failed (exit {proc.returncode})")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    log_progress(
        f"  {spec['job']} {spec.get('side', '')} {spec.get('kind', '')} done "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    return res


def log_progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def label(n: int) -> str:
    k = round(math.log10(n)) if n > 0 else 0
    return f"10^{k}" if 10**k == n else f"{n:,}"


def table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    right = right if right is not None else set(range(1, len(headers)))
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def fmt(r: list[str]) -> str:
        cells = [
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(headers), sep, *(fmt(r) for r in rows)])


def fsync_latency_ms(d: Path) -> float:
    p = d / "fsync.probe"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        t0 = time.perf_counter()
        for _ in range(200):
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
        return (time.perf_counter() - t0) / 200 * 1e3
    finally:
        os.close(fd)
        p.unlink()


def versions() -> str:
    code = (
        "import importlib.metadata as m, sqlite3;"
        "print(m.version('pymerkle'), m.version('sqlalchemy'), m.version('cryptography'),"
        " sqlite3.sqlite_version)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    pm, sa, cr, sq = out.split()
    return (
        f"Python {platform.python_version()}, SQLite {sq}, pymerkle {pm}, SQLAlchemy {sa}, "
        f"cryptography {cr}, {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000", help="tree sizes (default 10^5,10^6)")
    ap.add_argument("--queries", type=int, default=1000, help="proof queries per kind (1000)")
    ap.add_argument("--batch", type=int, default=10_000, help="bulk-load batch size (10000)")
    ap.add_argument("--durable", type=int, default=20_000, help="group-commit appends (20000)")
    ap.add_argument(
        "--durable-single", type=int, default=2_000, help="single-thread medledger appends (2000)"
    )
    ap.add_argument(
        "--durable-pm",
        type=int,
        default=10_000,
        help="pymerkle one-commit-per-append appends, per setting (10000)",
    )
    ap.add_argument(
        "--repeat", type=int, default=3, help="runs of each durable measurement; median shown (3)"
    )
    ap.add_argument("--check", type=int, default=200, help="proofs compared per kind (200)")
    ap.add_argument("--tmp", default=None, help="directory for the databases (system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the databases")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 2:
        ap.error("--sizes needs sizes of at least 2")
    work = Path(tempfile.mkdtemp(prefix="bench_ledger-", dir=args.tmp))
    t_run = time.perf_counter()
    try:
        return run(args, sizes, work, t_run)
    finally:
        if args.keep:
            log_progress(f"databases kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, sizes: list[int], work: Path, t_run: float) -> int:
    header = versions()
    fsync_ms = fsync_latency_ms(work)

    # Durable appends, fresh stores.
    log_progress("durable appends ...")
    runs: dict[str, list[dict]] = {}
    for rep in range(args.repeat):
        for name, spec in [
            ("ml-group", {"job": "ml-durable", "count": args.durable, "threads": THREADS}),
            (
                "ml-async",
                {"job": "ml-durable", "count": args.durable, "threads": THREADS, "asyncio": True},
            ),
            ("ml-single", {"job": "ml-durable", "count": args.durable_single, "threads": 1}),
            ("pm-default", {"job": "pm-durable", "count": args.durable_pm, "mode": "default"}),
            ("pm-wal", {"job": "pm-durable", "count": args.durable_pm, "mode": "wal"}),
        ]:
            d = work / f"durable-{name}-{rep}"
            d.mkdir()
            runs.setdefault(name, []).append(spawn({**spec, "dir": str(d)}))
            shutil.rmtree(d, ignore_errors=True)
    dur = {}
    for name, rs in runs.items():
        rs = sorted(rs, key=lambda x: x["rate"])
        dur[name] = {**rs[len(rs) // 2], "rates": [x["rate"] for x in rs]}

    results = {}
    for n in sizes:
        d = work / f"n{n}"
        d.mkdir()
        log_progress(f"n = {label(n)}: building ...")
        r = {
            "ml-build": spawn({"job": "ml-build", "dir": str(d), "n": n, "batch": args.batch}),
            "pm-build": spawn({"job": "pm-build", "dir": str(d), "n": n}),
        }
        log_progress(f"n = {label(n)}: proofs ...")
        for kind in ("inclusion", "consistency"):
            seed = 6962 + n + (0 if kind == "inclusion" else 1)
            for side in ("medledger", "pymerkle"):
                r[(side, kind)] = spawn(
                    {
                        "job": "proofs",
                        "dir": str(d),
                        "n": n,
                        "side": side,
                        "kind": kind,
                        "count": args.queries,
                        "seed": seed,
                    }
                )
        log_progress(f"n = {label(n)}: proofs from tiles ...")
        for kind in ("inclusion", "consistency"):
            seed = 6962 + n + (0 if kind == "inclusion" else 1)
            r[("tiles", kind)] = spawn(
                {
                    "job": "tiles",
                    "dir": str(d),
                    "n": n,
                    "kind": kind,
                    "count": args.queries,
                    "seed": seed,
                    "check": args.check,
                }
            )
            shutil.rmtree(d / "tiles", ignore_errors=True)
        log_progress(f"n = {label(n)}: agreement check ...")
        r["check"] = spawn(
            {"job": "check", "dir": str(d), "n": n, "count": args.check, "seed": 9162 + n}
        )
        results[n] = r
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)

    report(args, sizes, header, fsync_ms, dur, results, time.perf_counter() - t_run)
    return 0


def report(args, sizes, header, fsync_ms, dur, results, elapsed) -> None:
    f1 = lambda x: f"{x:,.1f}"  # noqa: E731
    f0 = lambda x: f"{x:,.0f}"  # noqa: E731
    f3 = lambda x: f"{x:.3f}"  # noqa: E731
    ratio = lambda x: f"{x:.2f}x"  # noqa: E731

    def prag(p: dict) -> str:
        return f"journal_mode={p['journal_mode']}, synchronous={p['synchronous']}"

    out = []
    out.append("bench_ledger: medledger log vs pymerkle SqliteTree, same leaves, one run")
    out.append(header)
    out.append(f"fsync of a 4 KiB write on the benchmark's disk: {fsync_ms:.3f} ms")
    out.append("")
    pmd = dur["pm-default"]
    out.append("Durability of each side (read back from the live connections):")
    out.append(
        f"  medledger: {prag(dur['ml-group']['pragmas'])}, BEGIN IMMEDIATE; every commit "
        "also signs an Ed25519 checkpoint (C2SP signed note)"
    )
    out.append(
        f"  pymerkle default PRAGMAs: {prag(pmd['default_pragmas'])} (rollback journal, "
        "fsynced each commit: durable); entries are not signed"
    )
    out.append(
        f"  pymerkle WAL run: {prag(dur['pm-wal']['pragmas'])} (same durability as medledger)"
    )
    out.append("")

    out.append(
        "Durable appends (fresh store; each append committed and fsynced before it returns; "
        f"median of {args.repeat} interleaved runs by rate, latency per append)"
    )
    rows = []
    for key, who, how in [
        ("ml-group", "medledger", f"Log.append, {THREADS} threads, group commit, signed"),
        ("ml-async", "medledger", f"Log.submit, {THREADS} asyncio tasks, group commit, signed"),
        ("ml-single", "medledger", "Log.append, 1 thread, 1 commit/append, signed"),
        ("pm-default", "pymerkle", "append_entry, 1 commit/append, default PRAGMAs"),
        ("pm-wal", "pymerkle", "append_entry, 1 commit/append, WAL+FULL"),
    ]:
        x = dur[key]
        rows.append(
            [
                who,
                how,
                f0(x["count"]),
                f0(x["commits"]),
                f1(x["seconds"]),
                f0(x["rate"]),
                f"{min(x['rates']):,.0f}-{max(x['rates']):,.0f}",
                f3(x["p50_ms"]),
                f3(x["p99_ms"]),
                f0(x["rss_mb"]),
            ]
        )
    out.append(
        table(
            [
                "side",
                "mode",
                "appends",
                "commits",
                "s",
                "appends/s",
                f"range of {args.repeat}",
                "p50 ms",
                "p99 ms",
                "peak RSS MB",
            ],
            rows,
            right={2, 3, 4, 5, 6, 7, 8, 9},
        )
    )
    out.append("")

    out.append(
        f"Bulk load (medledger: append_batch of {args.batch:,}, one signed checkpoint "
        "each, no receipts; pymerkle: append_entries, one transaction)"
    )
    rows = []
    for n in sizes:
        r = results[n]
        mb, pb = r["ml-build"], r["pm-build"]
        rows.append(
            [
                label(n),
                "medledger",
                f0(mb["commits"]),
                f1(mb["seconds"]),
                f0(mb["rate"]),
                f0(mb["db_mb"]),
                f0(mb["rss_mb"]),
            ]
        )
        rows.append(
            [
                label(n),
                "pymerkle",
                f0(pb["commits"]),
                f1(pb["seconds"]),
                f0(pb["rate"]),
                f0(pb["db_mb"]),
                f0(pb["rss_mb"]),
            ]
        )
    out.append(
        table(
            ["n", "side", "commits", "s", "entries/s", "DB MB", "peak RSS MB"],
            rows,
            right={2, 3, 4, 5, 6},
        )
    )
    out.append("")

    out.append(
        f"Proof latency, ms ({args.queries:,} random queries per kind, the same on both "
        f"sides; pass 1 = fresh process, pass 2 = the same queries {WARM_PASSES} more times, "
        "median of each statistic)"
    )
    rows = []
    for n in sizes:
        r = results[n]
        for kind in ("inclusion", "consistency"):
            for side in ("medledger", "pymerkle"):
                x = r[(side, kind)]
                p1, p2 = x["passes"]
                rows.append(
                    [
                        label(n),
                        kind,
                        side,
                        f3(p1["p50_ms"]),
                        f3(p1["p99_ms"]),
                        f3(p2["p50_ms"]),
                        f3(p2["p99_ms"]),
                        f3(p2["max_ms"]),
                        f1(x["mean_hashes"]),
                        f0(x["rss_mb"]),
                    ]
                )
    out.append(
        table(
            [
                "n",
                "proof",
                "side",
                "p50 (1)",
                "p99 (1)",
                "p50 (2)",
                "p99 (2)",
                "max (2)",
                "hashes",
                "peak RSS MB",
            ],
            rows,
            right=set(range(3, 10)),
        )
    )
    out.append("")

    out.append(
        "Ratios (pymerkle / medledger for latency, medledger / pymerkle for rates; "
        ">1 means medledger is faster)"
    )
    rows = []
    for n in sizes:
        r = results[n]
        for kind in ("inclusion", "consistency"):
            m, p = r[("medledger", kind)]["passes"], r[("pymerkle", kind)]["passes"]
            rows.append(
                [
                    label(n),
                    f"{kind} p50",
                    ratio(p[0]["p50_ms"] / m[0]["p50_ms"]),
                    ratio(p[1]["p50_ms"] / m[1]["p50_ms"]),
                ]
            )
            rows.append(
                [
                    label(n),
                    f"{kind} p99",
                    ratio(p[0]["p99_ms"] / m[0]["p99_ms"]),
                    ratio(p[1]["p99_ms"] / m[1]["p99_ms"]),
                ]
            )
        build = r["ml-build"]["rate"] / r["pm-build"]["rate"]
        rows.append([label(n), "bulk load rate", ratio(build), ""])
        rows.append(
            [
                label(n),
                "bulk load peak RSS (pm/ml)",
                ratio(r["pm-build"]["rss_mb"] / r["ml-build"]["rss_mb"]),
                "",
            ]
        )
    g = dur["ml-group"]["rate"]
    for key, what in [("pm-default", "default PRAGMAs"), ("pm-wal", "WAL+FULL")]:
        rows.append(
            ["-", f"durable: group commit vs pymerkle {what}", ratio(g / dur[key]["rate"]), ""]
        )
        rows.append(
            [
                "-",
                f"durable: asyncio group commit vs pymerkle {what}",
                ratio(dur["ml-async"]["rate"] / dur[key]["rate"]),
                "",
            ]
        )
        rows.append(
            [
                "-",
                f"durable: 1 thread vs pymerkle {what}",
                ratio(dur["ml-single"]["rate"] / dur[key]["rate"]),
                "",
            ]
        )
    out.append(table(["n", "measure", "pass 1", "pass 2"], rows, right={2, 3}))
    out.append("")

    out.append(
        "Proofs served from tiles on disk (C2SP tlog-tiles written by ledger.tiles.sync, read "
        "by ledger.tiles.TileReader, every tile checked against the signed root) beside the "
        "DB path (Log.inclusion_proof / consistency_proof over the stored hashes); the same "
        f"{args.queries:,} queries; pass 1 = fresh process, pass 2 = median of "
        f"{WARM_PASSES} more passes"
    )
    rows = []
    for n in sizes:
        r = results[n]
        for kind in ("inclusion", "consistency"):
            db, tl = r[("medledger", kind)], r[("tiles", kind)]
            db_rates = [args.queries / p["total_s"] for p in db["warm_passes"]]
            db1 = args.queries / db["passes"][0]["total_s"]
            t1, t2 = tl["passes"]
            rows.append(
                [
                    label(n),
                    kind,
                    "DB",
                    f0(db1),
                    f0(statistics.median(db_rates)),
                    f3(db["passes"][1]["p50_ms"]),
                    f3(db["passes"][1]["p99_ms"]),
                    "-",
                    f0(db["rss_mb"]),
                ]
            )
            rows.append(
                [
                    label(n),
                    kind,
                    "tiles",
                    f0(t1["rate"]),
                    f0(t2["rate"]),
                    f3(t2["p50_ms"]),
                    f3(t2["p99_ms"]),
                    f"{t1['tiles_per_proof']:.1f} ({t1['kib_per_proof']:.0f} KiB)",
                    f0(tl["rss_mb"]),
                ]
            )
            rows.append(
                [
                    label(n),
                    kind,
                    "tiles/DB",
                    ratio(t1["rate"] / db1),
                    ratio(t2["rate"] / statistics.median(db_rates)),
                    "",
                    "",
                    "",
                    "",
                ]
            )
    out.append(
        table(
            [
                "n",
                "proof",
                "path",
                "proofs/s (1)",
                "proofs/s (2)",
                "p50 ms (2)",
                "p99 ms (2)",
                "tiles read/proof (1)",
                "peak RSS MB",
            ],
            rows,
            right={3, 4, 5, 6, 7, 8},
        )
    )
    for n in sizes:
        r = results[n]
        tl = r[("tiles", "inclusion")]
        same = sum(r[("tiles", k)]["same"] for k in ("inclusion", "consistency"))
        checked = sum(r[("tiles", k)]["checked"] for k in ("inclusion", "consistency"))
        out.append(
            f"  {label(n)}: tiles sync wrote {tl['written']:,} files ({tl['mb']:,.1f} MB) in "
            f"{tl['sync_s']:.1f} s; {same}/{checked} tile proofs identical to the DB path's"
        )
    out.append("")

    out.append("Agreement (untimed)")
    for n in sizes:
        c = results[n]["check"]
        agree = "agree" if c["roots_agree"] else "DISAGREE"
        out.append(
            f"  {label(n)}: roots of all {n:,} leaves {agree} (medledger, pymerkle and the "
            f"signed checkpoint: {c['root']}); {c['prefix_ok']}/{c['prefixes']} random "
            "prefix roots agree"
        )
        out.append(
            f"  {label(n)}: inclusion: {c['incl_same']}/{c['count']} pymerkle paths == "
            "leaf hash + medledger's RFC 6962 audit path (0-based vs 1-based index)"
        )
        out.append(
            f"  {label(n)}: consistency: {c['cons_ok']}/{c['count']} proved by both "
            f"against the same roots; {c['cons_same']}/{c['count']} identical paths "
            f"(pymerkle's own format, {c['cons_len_pm']:.1f} hashes vs RFC 6962's "
            f"{c['cons_len_ours']:.1f})"
        )
    out.append("")

    rss_note = []
    for key in ("ml-group", "pm-wal"):
        x = dur[key]
        rss_note.append(f"{key} {x['base_mb']:.0f} MB")
    out.append(
        "Peak RSS is resource.getrusage(RUSAGE_SELF).ru_maxrss of the child process that "
        "did the work (after imports: " + ", ".join(rss_note) + ")."
    )
    hwm_off = [
        x
        for x in _all_children(dur, results)
        if x.get("hwm_mb") and abs(x["rss_mb"] - x["hwm_mb"]) > 0.1 * x["hwm_mb"]
    ]
    if hwm_off:
        out.append(
            f"  note: {len(hwm_off)} child(ren) show ru_maxrss > VmHWM by >10% "
            "(inherited from the parent at exec)"
        )
    out.append(f"Whole run: {elapsed / 60:.1f} min.")

    big = max(sizes)
    r = results[big]
    proof_ratios = []
    for kind in ("inclusion", "consistency"):
        m, p = r[("medledger", kind)]["passes"][1], r[("pymerkle", kind)]["passes"][1]
        proof_ratios.append(p["p99_ms"] / m["p99_ms"])
    x = min(proof_ratios)
    cold = min(
        r[("pymerkle", k)]["passes"][0]["p99_ms"] / r[("medledger", k)]["passes"][0]["p99_ms"]
        for k in ("inclusion", "consistency")
    )
    worst_p99 = max(
        r[("medledger", k)]["passes"][i]["p99_ms"]
        for k in ("inclusion", "consistency")
        for i in (0, 1)
    )
    # The issue's baseline is pymerkle as shipped: its default PRAGMAs, one commit per append.
    y = g / dur["pm-default"]["rate"]
    y_wal = g / dur["pm-wal"]["rate"]
    y_async = dur["ml-async"]["rate"] / dur["pm-default"]["rate"]
    out.append(
        f"Goals at {label(big)}: proofs >= 20x pymerkle, p99 <= 2 ms: "
        f"{'met' if x >= 20 and worst_p99 <= 2 else 'NOT met'} ({x:.2f}x with pymerkle's "
        f"subroot cache warm, pass 2; {cold:.2f}x from a fresh pymerkle process, pass 1; "
        f"medledger's worst p99 {worst_p99:.3f} ms)"
    )
    out.append(
        f"Goals at {label(big)}: durable appends >= 5x pymerkle's default "
        f"one-commit-per-append configuration: {'met' if y >= 5 else 'NOT met'} ({y:.2f}x "
        f"from {THREADS} threads, {y_async:.2f}x from {THREADS} asyncio tasks as the service "
        f"appends; {y_wal:.2f}x against pymerkle in WAL + synchronous=FULL)"
    )
    out.append(
        f"speedup vs pymerkle at {label(big)}: proof p99 {x:.2f}x (pymerkle warm; "
        f"{cold:.2f}x cold), durable append {y:.2f}x"
    )
    print("\n".join(out), flush=True)


def _all_children(dur: dict, results: dict) -> list[dict]:
    out = list(dur.values())
    for r in results.values():
        out.extend(v for v in r.values() if isinstance(v, dict))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
