"""GET /v1/trace: the recall answer over the HTTP API and over a 10,000-entry index."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert

from adapters.rwd_identity import PackIdentity
from adapters.trace_index import matches, recall_query
from exchange.indexes import derived, trace
from exchange.store import migrate
from ledger.store import make_engine
from tests.api_helpers import is_outcome, open_api
from tests.paths import FIXTURES as TEST_FIXTURES

FIXTURES = TEST_FIXTURES / "trace"
Stored = tuple[int, str, PackIdentity]
GTIN = "00312345678906"  # the medicine in both fixtures
DEVICE_GTIN = "07612345000015"  # the device only the administration used


def pack(lot: str, serial: str, n: int) -> bytes:
    """The administration fixture for another pack of the same medicine (a unique Bundle)."""
    text = (FIXTURES / "lecheng-rwd-administration.json").read_text("utf-8")
    text = text.replace("AB12C34", lot).replace("7TK2PQ9R4M1X", serial)
    return text.replace("RWD-2026-11-20-0001", f"RWD-TEST-{n}").encode()


def test_a_recall_finds_the_senders_entries_and_only_theirs(tmp_path: Path, db_url: str) -> None:
    with open_api(tmp_path, db_url) as api:
        a = api.credential("hospital", "hospital-a")
        b = api.credential("hospital", "hospital-b")
        submitted: dict[tuple[str, str], list[int]] = {}
        for n, (lot, serial, who) in enumerate(
            [
                ("AB12C34", "SER000001", a),
                ("AB12C34", "SER000002", a),
                ("ZZ99X01", "SER000003", a),
                ("AB12C34", "SER000004", b),
            ]
        ):
            r = api.post(pack(lot, serial, n), who)
            assert r.status_code == 201, r.text
            submitted.setdefault((lot, serial), []).append(r.json()["index"])
        event = (FIXTURES / "lecheng-rwd-adverse-event.json").read_bytes()
        r = api.post(event, a)
        assert r.status_code == 201, r.text
        event_index = r.json()["index"]

        def ask(who: dict[str, str], **params: str) -> list[int]:
            r = api.client.get("/v1/trace", params=params, headers=who)
            assert r.status_code == 200, r.text
            return [e["index"] for e in r.json()["entries"]]

        lot_a = submitted[("AB12C34", "SER000001")] + submitted[("AB12C34", "SER000002")]
        assert ask(a, gtin=GTIN, lot="AB12C34") == sorted([*lot_a, event_index])
        assert ask(a, gtin=GTIN, serial="SER000002") == submitted[("AB12C34", "SER000002")]
        assert ask(a, gtin=GTIN, lot="ab12c34") == []  # lots are case-sensitive
        assert ask(b, gtin=GTIN, lot="AB12C34") == submitted[("AB12C34", "SER000004")]
        # A GTIN-13 asks for the same product as its GTIN-14 form; the device was used by
        # every administration (hospital-a's three), not by the adverse event.
        assert ask(a, gtin=DEVICE_GTIN[1:]) == sorted(
            [*lot_a, *submitted[("ZZ99X01", "SER000003")]]
        )
        admin = api.credential("admin", None)
        assert len(ask(admin, gtin=GTIN)) == 5

        # A regulator asks every institution and is answered in counts, no entry named: what
        # each hospital's own answer lists, counted. A count is no disclosure: no access entry.
        regulator = api.credential("regulator", "nmpa")
        size = api.log_size()
        for params in (
            {"gtin": GTIN, "lot": "AB12C34"},
            {"gtin": DEVICE_GTIN},
            {"gtin": GTIN, "serial": "SER000004"},
            {"approval": "琼特药审〔2026〕0158号"},
            {"cn_code": "83741290012345678901"},
            {"gtin": GTIN, "lot": "NOSUCHLOT"},
        ):
            r = api.client.get("/v1/trace", params=params, headers=regulator)
            assert r.status_code == 200, r.text
            answer = r.json()
            assert set(answer) == {"gtin", "approval", "cn_code", "lot", "serial", "institutions"}
            expected = [
                {"institution": org, "entries": len(ask(who, **params))}
                for org, who in (("hospital-a", a), ("hospital-b", b))
                if ask(who, **params)
            ]
            assert answer["institutions"] == expected, params
        assert api.log_size() == size
        assert ask(a, gtin=GTIN, lot="AB12C34") and ask(b, approval="琼特药审〔2026〕0158号")

        r = api.client.get("/v1/trace", params={"gtin": GTIN}, headers=a)
        assert r.json()["entries"][0]["bundle"].startswith("/fhir/Bundle/")
        bundle = api.client.get(r.json()["entries"][0]["bundle"], headers=a)
        assert bundle.status_code == 200


def test_bad_queries_and_roles_are_refused(tmp_path: Path) -> None:
    with open_api(tmp_path) as api:
        hospital = api.credential()
        r = api.client.get("/v1/trace", params={"gtin": "00312345678907"}, headers=hospital)
        assert r.status_code == 400
        assert "gtin" in is_outcome(r)["issue"][0]["expression"]
        r = api.client.get("/v1/trace", headers=hospital)
        assert r.status_code == 400
        is_outcome(r)
        r = api.client.get("/v1/trace", params={"gtin": GTIN}, headers=api.credential("auditor"))
        assert r.status_code == 403
        assert api.client.get("/v1/trace", params={"gtin": GTIN}).status_code == 401


@pytest.fixture(scope="module")
def big_index(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, list[Stored]]:
    """10,000 RWD entries of 3 senders over 40 products, 200 lots, some packs serialised."""
    rng = random.Random(20261129)
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('trace') / 'm.db'}")
    migrate.upgrade(engine)
    derived.register(engine, trace.TRACE)
    gtins = [f"0031234{n:06d}" for n in range(40)]
    gtins = [g + str(_check_digit(g)) for g in gtins]
    stored: list[Stored] = []
    rows: list[dict[str, object]] = []
    for index in range(10_000):
        sender = rng.choice(["hospital-a", "hospital-b", "hospital-c"])
        identities = [
            PackIdentity(
                gtin=rng.choice(gtins),
                lot=rng.choice([None, *(f"L{n:03d}" for n in range(5))]),
                serial=rng.choice([None, f"S{rng.randrange(10**6):06d}"]),
                expiry="2028-01-31",
                path="Bundle.entry[1].resource",
            )
            for _ in range(rng.randint(1, 2))
        ]
        stored.extend((index, sender, i) for i in identities)
        rows.extend(trace.index_rows(index, sender, f"b{index}", identities))
    with engine.begin() as conn:
        conn.execute(insert(trace.trace_table), rows)
    return engine, stored


def _check_digit(digits13: str) -> int:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits13)))
    return (10 - total % 10) % 10


def test_recall_over_10000_entries_matches_a_scan_within_100_ms(
    big_index: tuple[Engine, list[Stored]],
) -> None:
    engine, stored = big_index
    rng = random.Random(7)
    slowest = 0.0
    for _ in range(60):
        _, sender, probe = rng.choice(stored)
        query = recall_query(
            probe.gtin or "",
            rng.choice([None, probe.lot]),
            rng.choice([None, None, probe.serial]),
        )
        who = rng.choice([None, sender])
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            hits = trace.recall(engine, query, who)
            best = min(best, time.perf_counter() - started)
        slowest = max(slowest, best)
        expected = sorted(
            {i for i, s, ident in stored if (who is None or s == who) and matches(ident, query)}
        )
        assert [h.index for h in hits] == expected
        assert expected, "every probe comes from a stored pack"
    assert slowest < 0.1, f"a recall took {slowest * 1000:.1f} ms"


def test_an_unknown_query_parameter_is_refused_not_ignored(tmp_path: Path) -> None:
    with open_api(tmp_path) as api:
        hospital = api.credential()
        # A misspelt `lot` would otherwise widen the recall to every lot of the product.
        r = api.client.get("/v1/trace", params={"gtin": GTIN, "lott": "X"}, headers=hospital)
        assert r.status_code == 400
        issue = is_outcome(r)["issue"][0]
        assert issue["expression"] == ["lott"] and "gtin, lot, serial" in issue["diagnostics"]
        r = api.client.get("/v1/trace", params={"gtin": GTIN, "_format": "json"}, headers=hospital)
        assert r.status_code == 200
