"""The draw rule (exchange.inspections.draw.select_draw) for all keys and populations: the
same seed entry over the same log gives the same draw, whatever order the population is
listed in, and a draw stays within its bounds."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.errors import Invalid
from exchange.inspections.draw import Request, draw_key, select_draw

_orgs = st.from_regex(r"[A-Za-z0-9.-]{1,12}", fullmatch=True)
_populations = st.dictionaries(
    _orgs, st.lists(st.integers(0, 2**40), max_size=30, unique=True), max_size=12
)
_leaves = st.binary(min_size=32, max_size=32)


@given(_leaves, st.integers(1, 2**40), _populations, st.integers(1, 15), st.integers(1, 40),
       st.randoms(use_true_random=False))  # fmt: skip
def test_the_same_seed_entry_and_log_give_the_same_draw(
    leaf: bytes, size: int, pop: dict[str, list[int]], n: int, m: int, rng: random.Random
) -> None:
    key = draw_key(leaf, size)
    listed = list(pop.items())
    rng.shuffle(listed)
    shuffled = {org: rng.sample(entries, len(entries)) for org, entries in listed}
    assert select_draw(key, pop, n, m) == select_draw(draw_key(leaf, size), shuffled, n, m)


@given(_leaves, st.integers(1, 2**40), _populations, st.integers(1, 15), st.integers(1, 40))
def test_a_draw_stays_within_its_bounds(
    leaf: bytes, size: int, pop: dict[str, list[int]], n: int, m: int
) -> None:
    drawn = select_draw(draw_key(leaf, size), pop, n, m)
    orgs = [org for org, _ in drawn]
    assert len(orgs) == min(n, len(pop)) and len(set(orgs)) == len(orgs)
    for org, entries in drawn:
        assert org in pop
        assert list(entries) == sorted(set(entries))  # distinct, in ledger order
        assert set(entries) <= set(pop[org]) and len(entries) == min(m, len(pop[org]))


@given(_leaves, _populations, st.integers(1, 15), st.integers(1, 40))
def test_more_asked_of_the_same_seed_extends_the_draw(
    leaf: bytes, pop: dict[str, list[int]], n: int, m: int
) -> None:
    """Ranking, not sampling: the draw of N is the first N of the draw of N+1."""
    key = draw_key(leaf, 7)
    smaller, larger = select_draw(key, pop, n, m), select_draw(key, pop, n + 1, m + 1)
    assert [o for o, _ in smaller] == [o for o, _ in larger][: len(smaller)]
    for (org, few), (_, more) in zip(smaller, larger, strict=False):
        assert set(few) <= set(more), org


def test_the_key_binds_the_leaf_and_the_tree_size() -> None:
    leaf = bytes(range(32))
    assert draw_key(leaf, 5) != draw_key(leaf, 6)
    assert draw_key(leaf, 5) != draw_key(bytes(32), 5)
    # The documented construction, written out.
    want = hashlib.sha256(b"medledger-inspection/v1\x00" + leaf + (5).to_bytes(8, "big"))
    assert draw_key(leaf, 5) == want.digest()


@pytest.mark.parametrize(
    ("seed", "n", "m", "name"),
    [("", 1, 1, "seed"), ("a\nb", 1, 1, "seed"), ("种子", 1, 1, "seed"), ("x" * 129, 1, 1, "seed"),
     ("s", 0, 1, "institutions"), ("s", 1, 0, "entries"), ("s", 1, 10_001, "entries")],
)  # fmt: skip
def test_bad_requests_name_the_parameter(seed: str, n: int, m: int, name: str) -> None:
    with pytest.raises(Invalid) as e:
        Request(seed, n, m)
    assert e.value.expression == name


def test_the_seed_document_is_canonical_and_round_trips() -> None:
    r = Request("2026-12-07 draw 03 17 22", 3, 5)
    assert r.document() == (
        b'{"entries":5,"institutions":3,"seed":"2026-12-07 draw 03 17 22","v":1}'
    )
    assert Request.from_document(r.document()) == r
    with pytest.raises(ValueError):
        Request.from_document(b'{"seed":"x","v":1,"institutions":3,"entries":5}')
