"""The recall answer: which ledger entries used a pack or lot, and the regulator's export.

A log of 10,000 RWD entries (Bundles built the way hospitals send them, their identities read
by ``pack_identities``) is indexed; every query -- by GTIN, lot and serial, by the special-
import approval number or by the Chinese trace code -- must answer in under 100 ms and equal a
brute-force scan that applies the same matching rule to every stored identity.
"""

from __future__ import annotations

import json
import random
import time
from decimal import Decimal
from typing import Any

import pytest

from adapters.base import AdaptError
from adapters.ips_json import loads_bundle
from adapters.rwd_identity import PackIdentity, pack_identities
from adapters.trace_export import ndjson_line, rwd_export
from adapters.trace_fhir import FMA_EXT, GTIN_SYSTEM, TRACE_CODE_EXT
from adapters.trace_index import (
    RecallIndex,
    RecallQuery,
    RecallQueryError,
    matches,
    recall_query,
)
from adapters.tracecode import gtin_check_digit
from tests.paths import FIXTURES as TEST_FIXTURES

FIXTURES = TEST_FIXTURES / "trace"
SENDERS = ("org-boao-lecheng-intl", "org-ruijin-hainan", "org-boao-super-hospital")
ENTRIES = 10_000


def gtin(n: int) -> str:
    body = f"003{12345000 + n:010d}"
    return body + str(gtin_check_digit(body))


def approval(product: int) -> str:
    """The special-import approval of a product (one per product, as the pilot zone issues)."""
    return f"琼特药审〔2026〕{product:04d}号"


def cn_code(product: int, n: int) -> str:
    """A Chinese trace code: 7-digit product code, 9-digit serial, 4 check digits."""
    return f"{8300000 + product:07d}{n:09d}{(n * 7919) % 10000:04d}"


def rwd_bundle(rng: random.Random, n: int) -> dict[str, Any]:
    """One administration of one pack; a tenth of the packs carry no serial (lot-level), half
    carry a Chinese trace code beside the GS1 one."""
    product = rng.randrange(40)
    lot = f"L{product:02d}{rng.randrange(12):02d}"
    med: dict[str, Any] = {
        "resourceType": "Medication",
        "id": "pack",
        "extension": [
            {
                "url": FMA_EXT,
                "extension": [
                    {"url": "number", "valueString": f"BLA 76{product:04d}"},
                    {
                        "url": "country",
                        "valueCodeableConcept": {
                            "coding": [{"system": "urn:iso:std:iso:3166", "code": "US"}]
                        },
                    },
                    {"url": "importApproval", "valueString": approval(product)},
                ],
            }
        ],
        "code": {"coding": [{"system": GTIN_SYSTEM, "code": gtin(product)}]},
        "batch": {"lotNumber": lot, "expirationDate": "2027-06-30"},
    }
    if rng.random() > 0.1:
        serial = f"S{n:06d}"
        med["extension"].append(
            {
                "url": TRACE_CODE_EXT,
                "valueString": f"(01){gtin(product)}(17)270630(10){lot}(21){serial}",
            }
        )
    if n % 2 == 0:
        med["extension"].append({"url": TRACE_CODE_EXT, "valueString": cn_code(product, n)})
    use = {
        "resourceType": "MedicationAdministration",
        "id": "use",
        "status": "completed",
        "medicationReference": {"reference": "Medication/pack"},
        "subject": {"reference": "Patient/p"},
        "effectiveDateTime": "2026-11-20T09:30:00+08:00",
    }
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": med}, {"resource": use}],
    }


@pytest.fixture(scope="module")
def log() -> list[tuple[int, str, list[PackIdentity]]]:
    rng = random.Random(20261128)
    return [(n, rng.choice(SENDERS), pack_identities(rwd_bundle(rng, n))) for n in range(ENTRIES)]


@pytest.fixture(scope="module")
def index(log: list[tuple[int, str, list[PackIdentity]]]) -> RecallIndex:
    idx = RecallIndex()
    for n, sender, identities in log:
        idx.add(n, sender, identities)
    return idx


def brute_force(
    log: list[tuple[int, str, list[PackIdentity]]], q: RecallQuery, sender: str | None
) -> list[int]:
    return sorted(
        {
            n
            for n, owner, identities in log
            if (sender is None or owner == sender) and any(matches(i, q) for i in identities)
        }
    )


def test_every_entry_names_its_pack(log: list[tuple[int, str, list[PackIdentity]]]) -> None:
    assert len(log) == ENTRIES
    assert all(len(identities) == 1 for _, _, identities in log)
    assert all(i.import_approval is not None for _, _, (i,) in log)
    assert sum(i.cn_code is not None for _, _, (i,) in log) == ENTRIES // 2


# Ways a regulator or a hospital writes the same approval number.
SPELLINGS = (
    lambda a: a,
    lambda a: a.replace("〔", "[").replace("〕", "]"),
    lambda a: a.replace("〔", "（").replace("〕", "）"),
    lambda a: " " + a[:4] + " " + a[4:],
)


def test_recall_queries_match_a_brute_force_scan_within_100_ms(
    log: list[tuple[int, str, list[PackIdentity]]], index: RecallIndex
) -> None:
    rng = random.Random(7)
    slowest = 0.0
    answered = 0
    for _ in range(300):
        _, _, (identity,) = rng.choice(log)
        kind = rng.randrange(4)
        lot = identity.lot if kind in (1, 3) else None
        serial = identity.serial if kind in (2, 3) else None
        sender = rng.choice((None, *SENDERS))
        if rng.random() < 0.1:  # a lot no pack has
            lot = "NOSUCHLOT"
        # The product by GTIN, by import approval, by both, or a pack by its Chinese code.
        by = rng.choice(("gtin", "approval", "both", "cn"))
        g = str(identity.gtin) if by in ("gtin", "both") else None
        a = (
            rng.choice(SPELLINGS)(str(identity.import_approval))
            if by in ("approval", "both")
            else None
        )
        c = identity.cn_code if by == "cn" else None
        if by == "cn" and c is None:
            c, g = "83000009999999999999", None  # a code no pack has
        q = recall_query(g, lot, serial, approval=a, cn_code=c)
        started = time.perf_counter()
        found = index.query(g, lot=lot, serial=serial, sender=sender, approval=a, cn_code=c)
        slowest = max(slowest, time.perf_counter() - started)
        assert found == brute_force(log, q, sender)
        answered += bool(found)
    assert slowest < 0.100, f"slowest recall query took {slowest * 1000:.1f} ms"
    assert answered > 100  # most queries name packs that exist for that sender


def test_whole_product_recall_over_the_full_log(
    log: list[tuple[int, str, list[PackIdentity]]], index: RecallIndex
) -> None:
    for product in range(40):
        started = time.perf_counter()
        found = index.query(gtin(product))
        assert time.perf_counter() - started < 0.100
        assert found == brute_force(log, recall_query(gtin(product)), None)
        # The regulator knows the product by its approval: the same entries.
        assert index.query(approval=approval(product)) == found
    assert sum(len(index.query(gtin(p))) for p in range(40)) == ENTRIES


def test_a_chinese_code_finds_its_one_pack(
    log: list[tuple[int, str, list[PackIdentity]]], index: RecallIndex
) -> None:
    for n, _, (identity,) in log[:200]:
        if identity.cn_code is None:
            continue
        printed = " ".join(identity.cn_code[i : i + 4] for i in range(0, 20, 4))
        assert index.query(cn_code=printed) == [n]
        assert index.query(identity.gtin, cn_code=identity.cn_code) == [n]
        assert index.query(approval=approval(0), cn_code=identity.cn_code) == (
            [n] if identity.import_approval == approval(0) else []
        )


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({}, "gtin"),
        ({"lot": "AB12C34"}, "gtin"),
        ({"gtin": "", "approval": " ", "cn_code": ""}, "gtin"),
        ({"gtin": "00312345678907"}, "gtin"),
        ({"cn_code": "8374129001234567890"}, "cn_code"),
        ({"cn_code": "8374129001234567890X"}, "cn_code"),
    ],
)
def test_a_query_must_name_a_product(params: dict[str, str], parameter: str) -> None:
    with pytest.raises(RecallQueryError) as raised:
        recall_query(**params)
    assert raised.value.parameter == parameter
    assert isinstance(raised.value, ValueError)  # what the routes answer 400 for


def test_query_normalisation(index: RecallIndex) -> None:
    g14 = gtin(3)
    assert index.query(g14[1:]) == index.query(g14)  # GTIN-13 form of the same item
    assert index.query(g14, lot="") == index.query(g14)  # ?lot= asks for every lot
    with pytest.raises(ValueError, match="check digit"):
        index.query(g14[:-1] + str((int(g14[-1]) + 1) % 10))
    with pytest.raises(ValueError):
        index.query("not-a-gtin")


def test_lots_are_matched_exactly() -> None:
    idx = RecallIndex()
    idx.add(0, "h", [PackIdentity("00312345678906", "AB12c34", None, None, "p")])
    idx.add(1, "h", [PackIdentity("00312345678906", None, None, None, "p")])
    assert idx.query("00312345678906", lot="AB12c34") == [0]
    assert idx.query("00312345678906", lot="AB12C34") == []  # CSET 82 is case-sensitive
    assert idx.query("00312345678906") == [0, 1]  # unknown lot: found by the product query


def test_fixture_entries_are_found_for_their_hospital() -> None:
    idx = RecallIndex()
    for n, name in enumerate(("lecheng-rwd-administration.json", "lecheng-rwd-adverse-event.json")):
        idx.add(100 + n, "org-hospital", pack_identities(json.loads((FIXTURES / name).read_text())))
    assert idx.query("00312345678906", lot="AB12C34") == [100, 101]
    assert idx.query("312345678906", serial="7TK2PQ9R4M1X") == [100, 101]
    assert idx.query("07612345000015", lot="L2503A") == [100]  # the implant
    assert idx.query("00312345678906", sender="org-other") == []
    assert idx.query(approval="琼特药审[2026]0158号") == [100, 101]
    assert idx.query(approval="琼特械审〔2026〕0211号") == [100]  # the implant's approval
    assert idx.query(cn_code="8374-1290-0123-4567-8901") == [100, 101]
    assert idx.query(approval="琼特械审〔2026〕0211号", serial="CI24X00571") == [100]
    assert len(idx) == 3 and idx.rows()[0][0] == 100
    assert idx.answer("0312345678906", lot=" AB12C34 ", sender="org-hospital") == {
        "gtin": "00312345678906",
        "approval": None,
        "cn_code": None,
        "lot": "AB12C34",
        "serial": None,
        "entries": [100, 101],
    }
    assert idx.answer(approval="琼特药审（2026）0158号")["approval"] == "琼特药审〔2026〕0158号"


# -- the regulator's export --------------------------------------------------------------------


def test_ndjson_line_keeps_every_lexeme() -> None:
    data = (
        b'{\n  "resourceType": "Bundle",\n  "type": "collection",\n'
        b'  "note": "a \\"quoted\\" \\u00e9 text\\nwith  spaces",\n'
        b'  "total": 1200.00, "n": [1 , 2]\n}\n'
    )
    line = ndjson_line(data)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert b"1200.00" in line and b'"a \\"quoted\\" \\u00e9 text\\nwith  spaces"' in line
    assert json.loads(line, parse_float=Decimal) == json.loads(data, parse_float=Decimal)
    with pytest.raises(AdaptError):
        ndjson_line(b"{not json")


def test_rwd_export_selects_the_product() -> None:
    rng = random.Random(20261128)
    stored = [(n, json.dumps(rwd_bundle(rng, n), indent=2).encode()) for n in range(300)]
    q = recall_query(gtin(5))
    out = rwd_export(stored, q)
    lines = out.splitlines()
    wanted = [
        n for n, data in stored if any(matches(i, q) for i in pack_identities(json.loads(data)))
    ]
    assert len(lines) == len(wanted) > 0
    for line in lines:
        assert any(matches(i, q) for i in pack_identities(loads_bundle(line, "line")))
    # The regulator asking by the product's import approval gets the same export.
    assert rwd_export(stored, recall_query(approval=approval(5))) == out
