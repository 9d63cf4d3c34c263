"""Stored-tree proofs equal the RFC 6962 reference and verify; every mutation is rejected;
the stored-hash layout and the auditor's tree helpers agree with append_leaf and the reference."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle

MAX_N = 1024
LEAVES = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(MAX_N)]


def _build() -> dict[int, bytes]:
    hashes: dict[int, bytes] = {}
    frontier: list[bytes] = []
    for i, leaf in enumerate(LEAVES):
        new, frontier = merkle.append_leaf(frontier, i, leaf)
        hashes.update(new)
    return hashes


STORED = _build()


def read(indexes):
    return [STORED[i] for i in indexes]


# --- the reference: RFC 6962 section 2.1, written as the RFC states it ---------------------


def mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = 1
    while k * 2 < len(d):
        k *= 2
    return merkle.node_hash(mth(d[:k]), mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m < k:
        return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]


def _stored_hash_index_by_loop(level: int, n: int) -> int:
    """The layout written out step by step: the reference for the closed form."""
    for _ in range(level):
        n = 2 * n + 1
    i = 0
    while n > 0:
        i += n
        n >>= 1
    return i + level


@given(st.integers(0, 40), st.integers(0, 2**40))
def test_stored_hash_index_closed_form_equals_loop(level, n) -> None:
    assert merkle.stored_hash_index(level, n) == _stored_hash_index_by_loop(level, n)


def test_stored_hash_count_matches_layout() -> None:
    for n in range(1, 300):
        assert merkle.stored_hash_count(n) == len(
            {i for i in STORED if i < merkle.stored_hash_count(n)}
        )


@given(st.integers(0, 62), st.integers(0, 2**62))
def test_split_stored_hash_index_inverts_stored_hash_index(level, n) -> None:
    assert merkle.split_stored_hash_index(merkle.stored_hash_index(level, n)) == (level, n)


@given(st.integers(0, 2**64))
def test_every_stored_hash_index_splits_into_a_level_and_n(index) -> None:
    level, n = merkle.split_stored_hash_index(index)
    assert level >= 0 and n >= 0
    assert merkle.stored_hash_index(level, n) == index


def test_split_stored_hash_index_names_what_each_append_wrote() -> None:
    """Leaf i writes its own hash and then the subtrees it completes, lowest first: the k-th
    hash it writes is level k's subtree i >> k, whose last leaf is i."""
    frontier: list[bytes] = []
    for i, leaf in enumerate(LEAVES[:300]):
        new, frontier = merkle.append_leaf(frontier, i, leaf)
        for k, (index, _) in enumerate(new):
            level, n = merkle.split_stored_hash_index(index)
            assert (level, n) == (k, i >> k)
            assert ((n + 1) << level) - 1 == i
    assert [merkle.split_stored_hash_index(i) for i in range(4)] == [(0, 0), (0, 1), (1, 0), (0, 2)]
    with pytest.raises(ValueError):
        merkle.split_stored_hash_index(-1)


def test_postorder_levels_pick_each_level_of_an_aligned_block() -> None:
    for height in range(7):
        rows = [STORED[j] for j in range(merkle.stored_hash_index(0, 1 << height))]
        levels = merkle.subtree_levels(LEAVES[: 1 << height])
        assert len(levels) == height + 1
        for level, get in enumerate(merkle.postorder_levels(height)):
            assert list(get(rows)) == levels[level]
            width = 1 << level
            starts = range(0, 1 << height, width)
            assert levels[level] == [mth(LEAVES[j : j + width]) for j in starts]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, MAX_N), st.integers(0, MAX_N))
def test_extend_frontier_equals_append_leaf_one_by_one(size, more) -> None:
    more = min(more, MAX_N - size)
    before = merkle.extend_frontier([], 0, LEAVES[:size])
    expected = before
    for i in range(size, size + more):
        _, expected = merkle.append_leaf(expected, i, LEAVES[i])
    assert merkle.extend_frontier(before, size, LEAVES[size : size + more]) == expected
    assert merkle.fold_frontier(expected) == mth(LEAVES[: size + more])
    blocks = list(merkle.complete_subtrees(size, size + more))
    assert sum(1 << h for _, h in blocks) == more
    assert all(start % (1 << h) == 0 for start, h in blocks)


def test_proofs_from_subtree_hashes_and_frontiers() -> None:
    def sub(lo: int, hi: int) -> bytes:
        return merkle.fold_frontier(merkle.extend_frontier([], 0, LEAVES[lo:hi]))

    for n in range(1, 78):
        root = merkle.tree_hash(n, read)
        assert sub(0, n) == root
        for m in range(1, n + 1):
            assert merkle.consistency_proof_by(m, n, sub) == merkle.consistency_proof(m, n, read)
        for i in range(n):
            proof = merkle.inclusion_proof(i, n, read)
            f = merkle.frontier_from_inclusion(i, n, LEAVES[i], proof, root)
            assert f == merkle.extend_frontier([], 0, LEAVES[: i + 1])
        for upto in range(n + 1):
            m, t = merkle.frontier_prefix(n, upto)
            full = merkle.extend_frontier([], 0, LEAVES[:n])
            assert m <= upto and merkle.fold_frontier(full[:t]) == sub(0, m)
    with pytest.raises(merkle.ProofError):
        merkle.consistency_proof_by(0, 5, sub)


@st.composite
def index_and_size(draw):
    n = draw(st.integers(1, MAX_N))
    return draw(st.integers(0, n - 1)), n


@st.composite
def two_sizes(draw):
    n = draw(st.integers(1, MAX_N))
    return draw(st.integers(1, n)), n


@settings(max_examples=300, deadline=None)
@given(index_and_size())
def test_inclusion_equals_reference_and_verifies(args) -> None:
    m, n = args
    root = merkle.tree_hash(n, read)
    assert root == mth(LEAVES[:n])
    proof = merkle.inclusion_proof(m, n, read)
    assert proof == path(m, LEAVES[:n])
    merkle.verify_inclusion(m, n, LEAVES[m], proof, root)


@settings(max_examples=300, deadline=None)
@given(two_sizes())
def test_consistency_equals_reference_and_verifies(args) -> None:
    m, n = args
    proof = merkle.consistency_proof(m, n, read)
    assert proof == (subproof(m, LEAVES[:n], True) if m < n else [])
    merkle.verify_consistency(m, n, mth(LEAVES[:m]), mth(LEAVES[:n]), proof)


@settings(max_examples=300, deadline=None)
@given(index_and_size(), two_sizes())
def test_plans_with_a_shared_right_edge_equal_the_reference(incl, cons) -> None:
    """What a log does with a cached right edge: the plan's stored hashes, plus the one
    cut-off sibling taken from right_edge of the tree size, give the reference proof."""
    m, n = incl
    edge = merkle.right_edge(read(merkle.frontier_indexes(n)))
    plan = merkle.inclusion_plan(m, n)
    assert merkle.proof_from(plan, read(plan.stored), edge) == path(m, LEAVES[:n])
    m2, n2 = cons
    edge2 = merkle.right_edge(read(merkle.frontier_indexes(n2)))
    plan2 = merkle.consistency_plan(m2, n2)
    expected = subproof(m2, LEAVES[:n2], True) if m2 < n2 else []
    assert merkle.proof_from(plan2, read(plan2.stored), edge2) == expected


@settings(max_examples=200, deadline=None)
@given(st.integers(1, MAX_N))
def test_right_edge_is_the_hash_of_each_frontier_suffix(n) -> None:
    levels = merkle.frontier_levels(n)
    edge = merkle.right_edge(read(merkle.frontier_indexes(n)))
    assert edge[0] == mth(LEAVES[:n])
    start = 0
    for k, level in enumerate(levels):
        assert edge[k] == mth(LEAVES[start:n])
        start += 1 << level


def _flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8 % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


@settings(max_examples=200, deadline=None)
@given(index_and_size(), st.integers(0, 255), st.data())
def test_inclusion_mutations_rejected(args, bit, data) -> None:
    m, n = args
    root = merkle.tree_hash(n, read)
    proof = merkle.inclusion_proof(m, n, read)
    leaf = LEAVES[m]
    bad: list[tuple[int, int, bytes, list[bytes], bytes]] = [
        (m, n, leaf, proof, _flip(root, bit)),
        (m, n, _flip(leaf, bit), proof, root),
        (m, n, leaf, proof + [LEAVES[0]], root),
        (m, 0, leaf, proof, root),
        (m + 1, n, leaf, proof, root),
    ]
    # A size is only meaningful with the root signed for it (a checkpoint binds the two), so
    # a changed size is checked against that size's root. Against the old root, sizes whose
    # trees share a proof shape cannot be told apart by any RFC 9162 verifier.
    if n < MAX_N:
        bad.append((m, n + 1, leaf, proof, mth(LEAVES[: n + 1])))
    if n - 1 > m:
        bad.append((m, n - 1, leaf, proof, mth(LEAVES[: n - 1])))
    if m > 0:
        bad.append((m - 1, n, leaf, proof, root))
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bad.append((m, n, leaf, proof[:i] + [_flip(proof[i], bit)] + proof[i + 1 :], root))
        bad.append((m, n, leaf, proof[:-1], root))
    for case in bad:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(*case)


@settings(max_examples=200, deadline=None)
@given(two_sizes(), st.integers(0, 255), st.data())
def test_consistency_mutations_rejected(args, bit, data) -> None:
    m, n = args
    r1, r2 = mth(LEAVES[:m]), mth(LEAVES[:n])
    proof = merkle.consistency_proof(m, n, read)
    bad = [
        (m, n, _flip(r1, bit), r2, proof),
        (m, n, r1, _flip(r2, bit), proof),
        (0, n, r1, r2, proof),
        (m, n, r1, r2, proof + [LEAVES[1]]),
    ]
    # As for inclusion: a changed size is checked against the root of that size.
    if m < n:
        bad += [(m + 1, n, mth(LEAVES[: m + 1]), r2, proof)]
        if n < MAX_N:
            bad += [(m, n + 1, r1, mth(LEAVES[: n + 1]), proof)]
        if n - 1 > m:
            bad += [(m, n - 1, r1, mth(LEAVES[: n - 1]), proof)]
    if m > 1:
        bad.append((m - 1, n, mth(LEAVES[: m - 1]), r2, proof))
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bad.append((m, n, r1, r2, proof[:i] + [_flip(proof[i], bit)] + proof[i + 1 :]))
        bad.append((m, n, r1, r2, proof[:-1]))
    for s1, s2, a, b, p in bad:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(s1, s2, a, b, p)


def test_generation_refuses_impossible_requests() -> None:
    for m, n in [(0, 0), (5, 5), (-1, 3)]:
        with pytest.raises(merkle.ProofError):
            merkle.inclusion_proof(m, n, read)
    for m, n in [(0, 5), (6, 5)]:
        with pytest.raises(merkle.ProofError):
            merkle.consistency_proof(m, n, read)
