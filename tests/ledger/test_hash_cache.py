"""The in-memory stored-hash cache: bounded, exact, and never a source of uncommitted hashes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.errors import LedgerError, LedgerUnavailable
from ledger.hash_cache import HashCache, RightEdgeCache

from ..ledger_helpers import count_selects, new_signer, open_log, submission


def _stored(i: int) -> bytes:
    return i.to_bytes(32, "big")


@settings(max_examples=200, deadline=None)
@given(
    reads=st.lists(st.lists(st.integers(0, 60), max_size=12), max_size=30),
    bound=st.integers(2, 40),
)
def test_cache_answers_exactly_and_stays_bounded(reads: list[list[int]], bound: int) -> None:
    cache = HashCache(max_hashes=bound)
    fetched: list[int] = []

    def read_missing(missing: list[int]) -> list[bytes]:
        fetched.extend(missing)
        return [_stored(i) for i in missing]

    for indexes in reads:
        before = len(fetched)
        assert cache.read(indexes, read_missing) == [_stored(i) for i in indexes]
        assert len(cache) <= bound
        assert len(fetched[before:]) == len(set(fetched[before:]))
        if len(set(indexes)) <= bound // 2:
            # Everything just read is held now (in one generation or the other), so a
            # repeat is free.
            held = len(fetched)
            cache.read(indexes, read_missing)
            assert len(fetched) == held


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(1, 50), max_size=60), bound=st.integers(2, 12))
def test_right_edge_cache_answers_what_was_put_and_stays_bounded(
    sizes: list[int], bound: int
) -> None:
    cache = RightEdgeCache(max_sizes=bound)
    for size in sizes:
        edge = cache.get(size)
        if edge is None:
            cache.put(size, [_stored(size)])
        else:
            assert edge == [_stored(size)]
        assert len(cache) <= bound
    if sizes:
        assert cache.get(sizes[-1]) == [_stored(sizes[-1])]


def test_repeated_proofs_read_nothing_and_equal_an_uncached_log(db_url: str) -> None:
    signer = new_signer()
    log = open_log(db_url, signer)
    n = 3000
    log.append_batch([submission(b"%d" % i) for i in range(n)], receipts=False)
    cases = [(0, n), (n - 1, n), (1234, 2001), (7, 8)]
    first = [log.inclusion_proof(i, s) for i, s in cases]
    counter = count_selects(log.engine)
    again = [log.inclusion_proof(i, s) for i, s in cases]
    cons = log.consistency_proof(1000, n)
    cons_again = log.consistency_proof(1000, n)
    assert counter["n"] <= 1, "a cached proof went back to the database"  # the 1st consistency
    assert again == first and cons_again == cons
    fresh = open_log(db_url, signer)  # a second process's view: no cache
    assert [fresh.inclusion_proof(i, s) for i, s in cases] == first
    assert fresh.consistency_proof(1000, n) == cons
    for (i, s), proof in zip(cases, first, strict=True):
        leaf = merkle.leaf_hash(log.entries(i, i + 1)[0])
        merkle.verify_inclusion(i, s, leaf, proof, fresh.root(s))
    fresh.close()
    log.close()


def test_size_check_follows_growth_and_refuses_beyond(db_url: str) -> None:
    log = open_log(db_url, new_signer())
    log.append_batch([submission(b"a%d" % i) for i in range(10)])
    log.inclusion_proof(3, 10)
    with pytest.raises(merkle.ProofError, match="fewer than 11"):
        log.inclusion_proof(3, 11)
    log.append(submission(b"b"))
    assert len(log.inclusion_proof(3, 11)) == 4
    log.close()


def test_a_rolled_back_batch_leaves_no_hash_behind(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that fails after building its receipts (the cache was read and filled inside
    its transaction) rolls back; later proofs are those of the committed tree."""
    signer = new_signer()
    log = open_log(db_url, signer)
    log.append_batch([submission(b"c%d" % i) for i in range(6)])
    build = log._receipts

    def build_then_fail(*args, **kwargs):
        build(*args, **kwargs)
        raise LedgerUnavailable("the database went away before the commit")

    monkeypatch.setattr(log, "_receipts", build_then_fail)
    with pytest.raises(LedgerError):
        log.append_batch([submission(b"lost%d" % i) for i in range(5)])
    monkeypatch.undo()
    assert log.size() == 6
    log.append_batch([submission(b"kept%d" % i) for i in range(5)])
    fresh = open_log(db_url, signer)
    for i in range(11):
        assert log.inclusion_proof(i, 11) == fresh.inclusion_proof(i, 11)
    assert log.root(11) == fresh.root(11)
    assert log.consistency_proof(6, 11) == fresh.consistency_proof(6, 11)
    fresh.close()
    log.close()
