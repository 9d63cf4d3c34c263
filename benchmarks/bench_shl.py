"""How long the sharing side of a SMART Health Link takes (exchange/shl), beside a JOSE library.

    .venv/bin/python benchmarks/bench_shl.py                 # 50 record Bundles, 9 runs
    .venv/bin/python benchmarks/bench_shl.py --bundles 200 --runs 5

A patient with --bundles record Bundles (the Boao fixtures, alternately the inpatient record
and the discharge medication, each copy with its own Bundle id and fullUrls) in a real ledger
(ledger.Log over SQLite in a temporary directory). Timed, medians of --runs:

- create: the link of POST /v1/shl: IPS of all the Bundles (adapters.ips), the IPS appended
  to the log, its receipt, the two files (summary + Provenance) and both encrypted
  (parse_request + new_link included; passcode hashing with scrypt timed apart);
- manifest: the answer to a manifest POST of a live link without passcode (a fresh receipt,
  both files encrypted anew), and of a P link with the right passcode (one scrypt);
- encrypt: exchange.shl.files.encrypt of the IPS bytes beside the peer, joserfc's
  jwe.encrypt_compact of the same bytes with the same header, both with and without zip DEF.

Peak RSS of this process at the end. The last line is the headline.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from joserfc import jwe  # noqa: E402
from joserfc.jwk import OctKey  # noqa: E402

from exchange.shl.files import LinkFile, encrypt, ips_from_records, link_files  # noqa: E402
from exchange.shl.link import LinkState, hash_passcode, new_link, parse_request  # noqa: E402
from exchange.shl.manifest import Locations, answer_manifest  # noqa: E402
from ledger.entry import commitment  # noqa: E402
from ledger.log import Log, Submission  # noqa: E402
from ledger.note import Signer  # noqa: E402
from ledger.store import make_engine  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "continuity"
SOURCES = ["boao-kr-inpatient-record.json", "boao-kr-discharge-meds.json"]
PATIENT = "urn:oid:2.16.840.1.113883.2.13|KR-MINJUN-0001"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def records(n: int) -> list[bytes]:
    """n record Bundles of one patient: copies with their own ids and fullUrls."""
    texts = [(FIXTURES / name).read_text(encoding="utf-8") for name in SOURCES]
    out = []
    for i in range(n):
        text = texts[i % 2]
        doc = json.loads(text)
        # Each copy's own fullUrls, but the one Patient: references follow the change.
        for j, e in enumerate(doc["entry"]):
            if e["resource"]["resourceType"] != "Patient":
                text = text.replace(e["fullUrl"], f"urn:uuid:{i:08x}-0000-4000-8000-{j:012x}")
        text = text.replace(f'"id": "{doc["id"]}"', f'"id": "r{i}"', 1)
        out.append(text.encode("utf-8"))
    return out


def median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundles", type=int, default=50)
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()

    bundles = records(args.bundles)
    tmp = tempfile.TemporaryDirectory()
    signer = Signer("bench.example/log", Ed25519PrivateKey.generate())
    log = Log(make_engine(f"sqlite:///{tmp.name}/ledger.db"), signer, origin="bench.example/log")
    body = {"patient": PATIENT, "expires": (NOW + timedelta(days=90)).isoformat()}
    made: dict[str, object] = {}

    def create() -> None:
        ips = ips_from_records(bundles, now=NOW, document_id="ips-bench")
        salt = os.urandom(32)
        done = log.append(
            Submission(kind="record", sender="bench-hospital", commit=commitment(salt, ips))
        )
        receipt = log.receipt(done.entry.index)
        state = new_link(
            parse_request(body, now=NOW),
            now=NOW,
            created_by="bench-hospital",
            ips_bundle="ips-bench",
            ips_version=1,
        )
        tokens = [encrypt(state.key, f.data) for f in link_files(ips, salt=salt, receipt=receipt)]
        made.update(ips=ips, salt=salt, index=done.entry.index, state=state, tokens=tokens)

    create_ms = median_ms(create, args.runs)
    ips_ms = median_ms(lambda: ips_from_records(bundles, now=NOW, document_id="b"), args.runs)
    scrypt_ms = median_ms(lambda: hash_passcode("7394"), args.runs)
    ips = made["ips"]
    assert isinstance(ips, bytes)
    state = made["state"]
    index = made["index"]
    assert isinstance(index, int)

    salt = made["salt"]
    assert isinstance(state, LinkState) and isinstance(salt, bytes)

    def files() -> list[LinkFile]:
        return link_files(ips, salt=salt, receipt=log.receipt(index))

    locations = Locations(os.urandom(32), "https://bench.example")
    request = {"recipient": "Dr. Lee"}
    manifest_ms = median_ms(
        lambda: answer_manifest(state, request, now=NOW, files=files, locations=locations),
        args.runs,
    )
    p_state = new_link(
        parse_request({**body, "passcode": "7394"}, now=NOW),
        now=NOW,
        created_by="bench-hospital",
        ips_bundle="ips-bench",
        ips_version=1,
    )
    p_request = {"recipient": "Dr. Lee", "passcode": "7394"}
    manifest_p_ms = median_ms(
        lambda: answer_manifest(p_state, p_request, now=NOW, files=files, locations=locations),
        args.runs,
    )
    assert (
        answer_manifest(p_state, p_request, now=NOW, files=files, locations=locations).status == 200
    )

    key = os.urandom(32)
    oct_key = OctKey.import_key(key)
    rows = []
    for deflate in (False, True):
        header = {"alg": "dir", "enc": "A256GCM", "cty": "application/fhir+json"}
        if deflate:
            header["zip"] = "DEF"
        ours = median_ms(lambda d=deflate: encrypt(key, ips, deflate=d), args.runs)
        peer = median_ms(lambda h=header: jwe.encrypt_compact(h, ips, oct_key), args.runs)
        rows.append((deflate, ours, peer))

    print(
        f"patient: {args.bundles} record Bundles "
        f"({sum(map(len, bundles)) / 1024:.0f} KiB) -> IPS {len(ips) / 1024:.0f} KiB; "
        f"medians of {args.runs}"
    )
    print(f"  create link        {create_ms:8.1f} ms  (of which IPS build {ips_ms:.1f} ms)")
    print(f"  scrypt passcode    {scrypt_ms:8.1f} ms  (P links, at creation and per attempt)")
    print(f"  manifest answer    {manifest_ms:8.1f} ms  (no passcode: receipt + 2 encryptions)")
    print(f"  manifest answer P  {manifest_p_ms:8.1f} ms  (right passcode)")
    for deflate, ours, peer in rows:
        print(
            f"  encrypt IPS{' zip' if deflate else '    '}    {ours:8.2f} ms  "
            f"joserfc {peer:8.2f} ms  ratio {ours / peer:.2f}x"
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS           {rss:8.0f} MiB")
    log.close()
    log.engine.dispose()
    tmp.cleanup()
    plain = rows[0]
    print(
        f"headline: link for {args.bundles} Bundles {create_ms:.0f} ms, manifest answer "
        f"{manifest_ms:.1f} ms; encrypt {plain[1]:.2f} ms vs joserfc {plain[2]:.2f} ms "
        f"({plain[1] / plain[2]:.2f}x); peak RSS {rss:.0f} MiB"
    )


if __name__ == "__main__":
    main()
