"""`medledger inspect draw|check` through the real CLI entry point, on SQLite and PostgreSQL.

The log holds a registry of three institutions, their Bundles submitted over HTTP and an
unregistered sender's. The draw is checked three ways: by `inspect check`, by this test's own
re-derivation of the documented rule from the public log entries (hashlib alone), and against
tampering with the printed draw and with the stored seed document.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import update

from exchange.cli.main import main
from exchange.registry import institutions as inst
from exchange.store.tables import inspection_seeds_table
from ledger.store import make_engine
from tests.api_helpers import Api, observation_bundle, open_api
from tests.registry.test_institutions import BASE

SEED = "2026-12-07 provincial lottery 03 17 22 41"
SUBMISSIONS = {"hosp-a": 5, "hosp-b": 2, "hosp-c": 0, "walk-in": 3}  # walk-in: unregistered
REGISTERED = ("hosp-a", "hosp-b", "hosp-c")


def submit(api: Api, org: str, n: int, tag: str) -> None:
    hospital = api.credential("hospital", org)
    for i in range(n):
        body = observation_bundle(f"1{i}0.00", identifier=f"urn:x:{org}:{tag}:{i}")
        assert api.post(body, hospital).status_code == 201


@dataclass
class World:
    db_url: str
    data: Path
    tmp: Path
    capsys: pytest.CaptureFixture[str]

    def run(self, *args: str) -> tuple[int, str, str]:
        """`medledger inspect ARGS` on this log: exit code, stdout, stderr."""
        self.capsys.readouterr()
        state = ["--db", self.db_url, "--key-file", str(self.data / "log.key")]
        try:
            code = main(["inspect", *args, *state])
        except SystemExit as stop:  # argparse's refusals
            code = int(stop.code or 0)
        out, err = self.capsys.readouterr()
        return code, out, err

    def entries(self) -> list[bytes]:
        """The log's entries as an auditor reads them, over HTTP."""
        with open_api(self.data, self.db_url) as api:
            got = api.client.get("/v1/log/entries", params={"start": 0, "end": api.log_size()})
            assert got.status_code == 200
            return [base64.b64decode(e) for e in got.json()]


@pytest.fixture
def world(tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> World:
    data = tmp_path / "data"
    with open_api(data, db_url) as api:
        key = Ed25519PrivateKey.generate()
        inst.register_admin_key(api.services.engine, "a1", key.public_key())
        for org in REGISTERED:
            record = replace(BASE, org=org)
            inst.append_attestation(api.services.log, inst.sign_attestation(record, "a1", key))
        for org, n in SUBMISSIONS.items():
            submit(api, org, n, "before")
    return World(db_url, data, tmp_path, capsys)


def independent_draw(entries: list[bytes], index: int, n: int, m: int) -> list[dict[str, Any]]:
    """docs/regulators.md's rule, re-derived from the entries with hashlib alone."""
    leaf = hashlib.sha256(b"\x00" + entries[index]).digest()
    key = hashlib.sha256(b"medledger-inspection/v1\x00" + leaf + (index + 1).to_bytes(8, "big"))
    k = key.digest()
    parsed = [json.loads(e) for e in entries[:index]]
    orgs = {e["sender"] for e in parsed if e["kind"] == "institution"}
    subs = {
        o: [e["index"] for e in parsed if e["sender"] == o and e["kind"] in
            ("record", "consent", "rwd", "settlement")]
        for o in orgs
    }  # fmt: skip
    ranked = sorted(orgs, key=lambda o: hashlib.sha256(k + b"\x01" + o.encode()).digest())[:n]
    return [
        {
            "institution": o,
            "of": len(subs[o]),
            "entries": sorted(
                sorted(
                    subs[o],
                    key=lambda i, o=o: hashlib.sha256(
                        k + b"\x02" + o.encode() + b"\x00" + i.to_bytes(8, "big")
                    ).digest(),
                )[:m]
            ),
        }
        for o in ranked
    ]


def test_a_draw_is_bound_to_its_logged_seed_and_rechecked(world: World) -> None:
    run, tmp = world.run, world.tmp
    size = len(world.entries())
    code, out, err = run("draw", "--seed", SEED, "--institutions", "2", "--entries", "3",
                         "--org", "hainan-mpa")  # fmt: skip
    assert code == 0, err
    drawn = json.loads(out)
    index = drawn["seed_entry"]["index"]
    assert index == size and drawn["tree_size"] == size + 1
    assert drawn["population"] == {"institutions": 3, "entries": 7}
    assert len(drawn["drawn"]) == 2
    for item in drawn["drawn"]:
        assert item["institution"] in REGISTERED
        assert len(item["entries"]) == min(3, SUBMISSIONS[item["institution"]])

    # The entry: kind inspection, the inspecting organisation, no seed text in it; it commits
    # to the printed document under the printed salt.
    entries = world.entries()
    entry = json.loads(entries[index])
    assert (entry["kind"], entry["sender"], entry["media"]) == (
        "inspection", "hainan-mpa", "application/json",
    )  # fmt: skip
    assert SEED.encode() not in entries[index] and "subject" not in entry
    doc = drawn["seed_entry"]["document"].encode()
    salt = base64.b64decode(drawn["seed_entry"]["salt"])
    assert base64.b64decode(entry["commit"]) == hashlib.sha256(salt + doc).digest()
    assert json.loads(doc) == {"v": 1, "seed": SEED, "institutions": 2, "entries": 3}
    leaf = hashlib.sha256(b"\x00" + entries[index]).digest()
    assert base64.b64decode(drawn["seed_entry"]["leaf_hash"]) == leaf

    # Anyone holding the log re-draws the same.
    assert drawn["drawn"] == independent_draw(entries, index, 2, 3)

    # Entries appended later change nothing: the draw is of the log before the seed.
    with open_api(world.data, world.db_url) as api:
        submit(api, "hosp-b", 4, "after")
        submit(api, "hosp-c", 2, "after")
    saved = tmp / "draw.json"
    saved.write_text(out)
    for which in (["--index", str(index)], ["--seed", SEED]):
        code, again, err = run("check", *which, "--draw", str(saved))
        assert code == 0, err
        assert json.loads(again) == drawn

    # A retry of the same draw appends nothing and prints the same; other counts are refused.
    code, again, _ = run("draw", "--seed", SEED, "--institutions", "2", "--entries", "3",
                         "--org", "hainan-mpa")  # fmt: skip
    assert code == 0 and json.loads(again) == drawn
    before = len(world.entries())
    code, _, err = run("draw", "--seed", SEED, "--institutions", "3", "--entries", "3")
    assert code == 1 and f"inspect check --index {index}" in err
    assert len(world.entries()) == before

    # A draw edited after the fact fails, naming what differs.
    edited = json.loads(out)
    some = next(item for item in edited["drawn"] if item["entries"])  # hosp-c has none
    some["entries"][0] += 1
    saved.write_text(json.dumps(edited))
    code, _, err = run("check", "--index", str(index), "--draw", str(saved))
    assert code == 4 and "drawn differs" in err

    # So does a stored seed document that no longer matches its entry.
    engine = make_engine(world.db_url)
    t = inspection_seeds_table
    with engine.begin() as conn:
        forged = doc.replace(b'"institutions":2', b'"institutions":3')
        conn.execute(update(t).where(t.c.idx == index).values(data=forged))
    engine.dispose()
    code, _, err = run("check", "--index", str(index))
    assert code == 4 and "does not match the entry's commitment" in err


def test_bad_requests_exit_with_their_codes(world: World) -> None:
    run, tmp = world.run, world.tmp
    for args in (
        ["--institutions", "0", "--entries", "1"],
        ["--institutions", "1", "--entries", "-2"],
        ["--institutions", "x", "--entries", "1"],
    ):
        assert run("draw", "--seed", SEED, *args)[0] == 1, args
    code, _, err = run("draw", "--seed", "line\nbreak", "--institutions", "1", "--entries", "1")
    assert code == 1 and "printable ASCII" in err
    code, _, err = run("check", "--index", "0")  # an institution entry
    assert code == 1 and "not 'inspection'" in err
    code, _, err = run("check", "--index", "9999")
    assert code == 1 and "has no entry 9999" in err
    code, _, err = run("check", "--seed", "never logged")
    assert code == 1 and "no entry logged" in err
    garbage = tmp / "garbage.json"
    garbage.write_text("{not json")
    code, _, err = run("check", "--index", "0", "--draw", str(garbage))
    assert code == 3 and "not a draw" in err
