"""How long an inspection draw takes over a log, beside the floor: reading and parsing the
same entries with json.loads.

    .venv/bin/python benchmarks/bench_inspect.py               # n = 10^5
    .venv/bin/python benchmarks/bench_inspect.py --n 1000000

Builds a SQLite log of n entries through ledger.log (50 registered institutions, the rest
their record submissions), then measures `exchange.inspections.draw.publish` (appending the
seed entry) and `redraw` (the draw of 5 institutions and 20 entries each, which reads every
entry before the seed), and the floor: every entry's bytes read from the store and parsed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from exchange.inspections import draw  # noqa: E402
from exchange.store import migrate  # noqa: E402
from ledger.entry import commitment  # noqa: E402
from ledger.log import Log, Submission  # noqa: E402
from ledger.note import Signer  # noqa: E402
from ledger.store import make_engine  # noqa: E402

ORIGIN = "bench.example/log"
INSTITUTIONS = 50


def build(log: Log, n: int) -> None:
    pending = []
    for i in range(n):
        kind = "institution" if i < INSTITUTIONS else "record"
        commit = commitment(os.urandom(32), b"%d" % i)
        sub = Submission(kind=kind, sender=f"hosp-{i % INSTITUTIONS}", commit=commit)
        pending.append(log.submit(sub))
        if len(pending) >= 10_000:
            for f in pending:
                f.result()
            pending.clear()
    for f in pending:
        f.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        log = Log(engine, Signer(ORIGIN, Ed25519PrivateKey.generate()), origin=ORIGIN)
        migrate.upgrade(engine)
        t = time.perf_counter()
        build(log, args.n)
        print(f"built {args.n} entries in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        index = draw.publish(log, draw.Request("bench seed", 5, 20), "log")
        published = time.perf_counter() - t
        t = time.perf_counter()
        drawn = draw.redraw(log, index)
        redrawn = time.perf_counter() - t
        t = time.perf_counter()
        for start in range(0, index, 1000):
            for data in log.entries(start, min(index, start + 1000)):
                json.loads(data)
        floor = time.perf_counter() - t
        log.close()
    assert [len(e) for _, e in drawn.drawn] == [20] * 5
    print(f"publish {published * 1000:.1f} ms")
    print(f"redraw over {index} entries {redrawn:.2f} s; read+json.loads {floor:.2f} s")
    print(f"inspect redraw {index / redrawn:,.0f} entries/s = {floor / redrawn:.2f} of the floor")


if __name__ == "__main__":
    main()
