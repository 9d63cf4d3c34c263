"""How long a SMART Health Link takes through the service, over HTTP (exchange/http/routes/shl.py).

    .venv/bin/python benchmarks/bench_shl_api.py                 # 50 record Bundles, 5 runs
    .venv/bin/python benchmarks/bench_shl_api.py --bundles 10 --runs 9

The service (create_app on SQLite in a temporary directory) under uvicorn on a loopback port,
driven by httpx. A hospital submits --bundles record Bundles of one patient (the copies of
bench_shl.py, each with its own Bundle.identifier), then, medians of --runs:

- create: POST /v1/shl: the patient's Bundles read back from the vault, the IPS built, checked
  by intake, appended with the link's row, the answer;
- manifest: POST …/manifest of a link without passcode (the summary read from the vault, a
  fresh receipt, two files encrypted, the access entry appended), and of a P link with the
  right passcode (one scrypt more);
- direct file: GET …/file of a U link (one file, the access entry).

Beside them, bench_shl.py's library figures show what the service adds. Peak RSS of this
process (server and client) at the end. The last line is the headline.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from bench_shl import records  # noqa: E402

from exchange.app import create_app  # noqa: E402
from exchange.config import Settings  # noqa: E402
from exchange.identity.clients import register_client  # noqa: E402
from tests.delivery.peers import bound_socket  # noqa: E402

PATIENT = "https://fhir.boao-lecheng-hospital.example/sid/mrn|BL2026110045"


def median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def own_identifiers(bundles: list[bytes]) -> list[bytes]:
    """Each copy a submission of its own: a retry of the same identifier would be refused."""
    return [
        b.replace(b"SUB-20261120-000", b"SUB-BENCH-%06d-" % i, 1) for i, b in enumerate(bundles)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundles", type=int, default=50)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    sock = bound_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_app(Settings(data_dir=Path(tmp.name)), public_url=base)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    _, token = register_client(app.services.engine, "bench", "hospital", "boao-lecheng")
    hospital = {"Authorization": f"Bearer {token}"}
    bundles = own_identifiers(records(args.bundles))
    with httpx.Client(base_url=base, timeout=300) as http:
        post = {**hospital, "Content-Type": "application/fhir+json"}
        for body in bundles:
            answer = http.post("/fhir/Bundle", content=body, headers=post)
            assert answer.status_code == 201, answer.text
        expires = (datetime.now(UTC) + timedelta(days=30)).isoformat()
        made: list[dict[str, object]] = []

        def create(extra: dict[str, str] | None = None, direct: bool = False) -> dict[str, object]:
            answer = http.post(
                "/v1/shl",
                json={"patient": PATIENT, "expires": expires, **(extra or {})},
                params={"direct": "true"} if direct else None,
                headers=hospital,
            )
            assert answer.status_code == 201, answer.text
            made.append(answer.json())
            return dict(answer.json())

        create_ms = median_ms(create, args.runs)
        ips_kib = len(http.get(f"/fhir/Bundle/{made[-1]['bundle']}", headers=hospital).content)
        plain = made[-1]
        with_passcode = create({"passcode": "7394"})
        direct = create(direct=True)

        def manifest(link: dict[str, object], **body: str) -> None:
            url = f"/v1/shl/{link['id']}/manifest"
            answer = http.post(url, json={"recipient": "Dr. Lee", **body})
            assert answer.status_code == 200, answer.text

        def direct_file() -> None:
            answer = http.get(f"/v1/shl/{direct['id']}/file", params={"recipient": "Dr. Lee"})
            assert answer.status_code == 200, answer.text

        manifest_ms = median_ms(lambda: manifest(plain), args.runs)
        manifest_p_ms = median_ms(lambda: manifest(with_passcode, passcode="7394"), args.runs)
        direct_ms = median_ms(direct_file, args.runs)

    server.should_exit = True
    thread.join(timeout=30)
    sock.close()
    tmp.cleanup()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"patient: {args.bundles} record Bundles ({sum(map(len, bundles)) / 1024:.0f} KiB) "
        f"-> IPS {ips_kib / 1024:.0f} KiB; medians of {args.runs}, over HTTP"
    )
    print(f"  POST /v1/shl          {create_ms:8.1f} ms  (records read, IPS, intake, append)")
    print(f"  manifest              {manifest_ms:8.1f} ms  (no passcode; access entry included)")
    print(f"  manifest, passcode    {manifest_p_ms:8.1f} ms")
    print(f"  direct file (U)       {direct_ms:8.1f} ms")
    print(f"  peak RSS              {rss:8.0f} MiB")
    print(
        f"headline: POST /v1/shl for {args.bundles} Bundles {create_ms:.0f} ms, manifest "
        f"{manifest_ms:.1f} ms over HTTP; peak RSS {rss:.0f} MiB"
    )


if __name__ == "__main__":
    main()
