"""How long the SHL viewer takes to decrypt and verify a 1 MB patient summary in headless
Chromium, beside the same work in Python (joserfc + ledger.verify).

    .venv/bin/python benchmarks/bench_viewer.py            # 1 MB IPS, 9 runs
    .venv/bin/python benchmarks/bench_viewer.py --mb 4 --runs 5

Builds an IPS of about --mb MB with adapters.ips (the Boao fixture's patient with enough lab
results), records it in a real ledger (SQLite), serves it through the test suite's SHL
sharing server (tests/shl/shl_helpers.py) and opens the link in Debian's Chromium, once with
the plain JWE and once with `zip: DEF`. The page's own performance measures are read:

- decrypt: AES-GCM of every file (and inflate), JSON parse, finding summary and Provenance;
- verify: checkpoint signature (Ed25519), entry, inclusion proof, SHA-256(salt || bytes);
- render: drawing the summary (reported, not in the headline).

The peer does the same decrypt and verify in this process: joserfc's decrypt_compact, json
parse, ledger.verify.verify_receipt and verify_submission. Medians of --runs; peak RSS of
Chromium's renderer (VmHWM) and of this process. The last line is the headline.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from joserfc import jwe  # noqa: E402
from joserfc.jwk import OctKey  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from adapters.base import AdaptOptions  # noqa: E402
from adapters.ips import adapt as adapt_ips  # noqa: E402
from exchange.shl.viewer import render_viewer  # noqa: E402
from ledger.note import Verifier  # noqa: E402
from ledger.verify import verify_receipt, verify_submission  # noqa: E402
from tests.shl.conftest import CHROMIUM_ARGS, chromium_path  # noqa: E402
from tests.shl.shl_helpers import (  # noqa: E402
    FIXTURES,
    IPS_NOW,
    Ledger,
    ShlServer,
    fhir_json,
    provenance,
)


def big_ips(target: int) -> bytes:
    """An IPS of at least `target` bytes: the Boao patient with cloned lab results."""
    record = json.loads((FIXTURES / "boao-kr-inpatient-record.json").read_text())
    meds = (FIXTURES / "boao-kr-discharge-meds.json").read_bytes()
    lab = next(e for e in record["entry"] if e["resource"].get("id") == "kr-lab-tni")
    clones = 0
    while True:
        bundle = copy.deepcopy(record)
        for i in range(clones):
            e = copy.deepcopy(lab)
            e["fullUrl"] = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'bench/{i}')}"
            e["resource"]["id"] = f"bench-lab-{i}"
            e["resource"]["valueQuantity"]["value"] = 10 + i % 90
            bundle["entry"].append(e)
        data = json.dumps(bundle, ensure_ascii=False).encode()
        ips = adapt_ips([data, meds], AdaptOptions(now=IPS_NOW, control_id="ips-bench"))
        if len(ips) >= target:
            return ips
        per = max(1, (len(ips) - 20_000) // max(clones, 1)) if clones else 3000
        clones += max(1, (target - len(ips)) // per + 1)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def renderer_peak_kib() -> int:
    peak = 0
    for pid in descendants(os.getpid()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if b"--type=renderer" in cmd:
            hwm = next((ln for ln in status.splitlines() if ln.startswith("VmHWM:")), "")
            peak = max(peak, int(hwm.split()[1]) if hwm else 0)
    return peak


def browser_runs(
    server: ShlServer, files: list[tuple[str, bytes]], runs: int, deflate: bool
) -> tuple[list[dict[str, float]], int]:
    path = chromium_path()
    if path is None:
        sys.exit("bench_viewer: no chromium installed (Debian: apt-get install chromium)")
    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        peak = 0
        for _ in range(runs + 1):  # the first run warms the browser and is left out
            link = server.share(files, deflate=[0] if deflate else [])
            page = browser.new_page()
            page.goto(server.viewer_url(link, recipient="benchmark"))
            page.wait_for_selector("#verification[data-status]", timeout=120_000)
            status = page.get_attribute("#verification", "data-status")
            if status != "verified":
                text = page.inner_text("#verification")
                sys.exit(f"bench_viewer: the page says {status}: {text}")
            measures = page.evaluate(
                "Object.fromEntries(performance.getEntriesByType('measure')"
                ".map(m => [m.name.split(':')[1], m.duration]))"
            )
            out.append(measures)
            peak = max(peak, renderer_peak_kib())
            page.close()
        browser.close()
    return out[1:], peak


def python_runs(link_key: bytes, tokens: list[str], vkey: str, runs: int) -> list[float]:
    key = OctKey.import_key(link_key)
    verifier = Verifier.from_vkey(vkey)
    registry = jwe.JWERegistry()
    registry.max_ciphertext_length = 64 << 20  # joserfc refuses more than 64 KiB by default
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        ips = jwe.decrypt_compact(tokens[0], key, registry=registry).plaintext
        prov = json.loads(jwe.decrypt_compact(tokens[1], key, registry=registry).plaintext)
        json.loads(ips)
        receipt = base64.b64decode(prov["signature"][0]["data"]).decode()
        salt = base64.b64decode(prov["extension"][0]["valueBase64Binary"])
        verified = verify_receipt(receipt, [verifier])
        verify_submission(verified.entry, ips, salt)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=1.0, help="size of the IPS in MB (10^6 bytes)")
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()

    t0 = time.perf_counter()
    ips = big_ips(int(args.mb * 1_000_000))
    doc_id = json.loads(ips)["id"]
    print(
        f"IPS: {len(ips):,} bytes ({len(json.loads(ips)['entry']):,} entries), "
        f"built in {time.perf_counter() - t0:.1f} s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(Path(tmp) / "ledger.db")
        rec = ledger.record(ips)
        files = [
            ("application/fhir+json", ips),
            ("application/fhir+json", fhir_json(provenance(f"Bundle/{doc_id}", rec))),
        ]
        server = ShlServer(render_viewer([ledger.vkey]))
        try:
            rows = {}
            for deflate in (False, True):
                rows["A256GCM+DEF" if deflate else "A256GCM"] = browser_runs(
                    server, files, args.runs, deflate
                )
            key = os.urandom(32)
            tokens = [
                jwe.encrypt_compact({"alg": "dir", "enc": "A256GCM"}, data, OctKey.import_key(key))
                for _, data in files
            ]
            peer = python_runs(key, tokens, ledger.vkey, args.runs)
        finally:
            server.close()
            ledger.close()

    peer_ms = statistics.median(peer)
    print(
        f"\n{'':<28}{'decrypt':>10}{'verify':>10}{'d+v':>10}{'render':>10}   (ms, median of "
        f"{args.runs})"
    )
    headline = None
    for name, (measures, peak) in rows.items():
        d = statistics.median(m["decrypt"] for m in measures)
        v = statistics.median(m["verify"] for m in measures)
        dv = statistics.median(m["decrypt"] + m["verify"] for m in measures)
        r = statistics.median(m["render"] for m in measures)
        print(
            f"{'chromium ' + name:<28}{d:>10.1f}{v:>10.1f}{dv:>10.1f}{r:>10.1f}"
            f"   renderer peak RSS {peak / 1024:.0f} MiB"
        )
        if headline is None:
            headline = dv
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{'python joserfc+ledger':<28}{'':>10}{'':>10}{peer_ms:>10.1f}{'':>10}"
        f"   process peak RSS {rss:.0f} MiB"
    )
    assert headline is not None
    print(
        f"\nviewer decrypt+verify of a {len(ips) / 1e6:.2f} MB IPS in headless Chromium: "
        f"{headline:.1f} ms median = {headline / peer_ms:.2f}x Python (joserfc + ledger.verify, "
        f"{peer_ms:.1f} ms)"
    )


if __name__ == "__main__":
    main()
