"""RFC 6962 Merkle tree hashing, stored-hash layout, and proofs.

Hashes follow RFC 6962 section 2.1 (also RFC 9162 section 2.1): a leaf hash is
SHA-256(0x00 || data) and an interior node is SHA-256(0x01 || left || right).

The tree is stored as in golang.org/x/mod/sumdb/tlog: every hash of a complete subtree is
written once, at a fixed position ("stored hash index"), when its last leaf arrives. A tree
of n leaves then needs about 2n stored hashes, and any root or proof is assembled from
O(log n) of them, whose positions are computed up front so a store can fetch them in one
query. Functions here are pure: they compute positions and fold hashes; reading is the
caller's job.

Beside the server's side (append, proofs from stored hashes) stands the auditor's: hashing a
run of leaves in bulk (complete_subtrees, subtree_levels, extend_frontier), checking the
stored hashes a block of leaves wrote (postorder_levels), and rebuilding frontiers and proofs
from subtree hashes (frontier_from_inclusion, frontier_prefix, consistency_proof_by).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from operator import itemgetter
from typing import Literal, NamedTuple

HASH_SIZE = 32
_sha256 = hashlib.sha256

Hash = bytes
HashReader = Callable[[Sequence[int]], Sequence[Hash]]
"""Returns the stored hashes at the given stored-hash indexes, in the same order."""


class ProofError(ValueError):
    """A proof, or the sizes and indexes it is asked to bind, does not verify."""


def empty_root() -> Hash:
    """The root of the empty tree: SHA-256 of the empty string (RFC 6962 section 2.1)."""
    return hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> Hash:
    """SHA-256(0x00 || data), RFC 6962 section 2.1."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: Hash, right: Hash) -> Hash:
    """SHA-256(0x01 || left || right), RFC 6962 section 2.1."""
    return hashlib.sha256(b"\x01" + left + right).digest()


# --- stored-hash layout ------------------------------------------------------------------


def stored_hash_index(level: int, n: int) -> int:
    """Position of the hash of the n-th complete subtree of height `level`.

    The positions are a dense order in which hashes are written as leaves arrive: leaf i's
    hash, then the hashes of the subtrees leaf i completes, lowest first. Level L's n-th hash
    is written right after level L+1's (2n+1)-th hash; level 0's n-th hash sits at
    n + n/2 + n/4 + ... plus the hashes of higher levels completed before it. That sum is
    m + m/2 + m/4 + ... = 2m - popcount(m) for m = (n+1)*2^level - 1, the closed form of the
    Go checksum database's tlog StoredHashIndex.

    split_stored_hash_index is its inverse.
    """
    m = ((n + 1) << level) - 1
    return 2 * m - m.bit_count() + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """The inverse of stored_hash_index: the (level, n) of the hash stored at `index`.

    That is, split_stored_hash_index(stored_hash_index(level, n)) == (level, n) for every
    level and n >= 0, and stored_hash_index(*split_stored_hash_index(i)) == i for every i >= 0.
    The hash at `index` is written with leaf k, the last leaf whose own hash is stored at or
    before it; it is then the (index - stored_hash_index(0, k))-th hash leaf k writes: level
    L = that difference, subtree n = k >> L.
    """
    if index < 0:
        raise ValueError(f"stored hash index {index} is negative")
    # Leaf k's own hash is at 2k - popcount(k) <= 2k, so the leaf sought is at least
    # index // 2 (where Go's SplitStoredHashIndex starts too) and about log2(index) leaves past
    # it at most: leaf k writes 1 + (trailing zeros of k+1) hashes.
    k = index // 2
    at = stored_hash_index(0, k)
    while True:
        nxt = at + 1 + ((k + 1) & -(k + 1)).bit_length() - 1
        if nxt > index:
            break
        k, at = k + 1, nxt
    level = index - at
    return level, k >> level


def stored_hash_count(n: int) -> int:
    """How many stored hashes a tree of n leaves has."""
    if n == 0:
        return 0
    count = stored_hash_index(0, n - 1) + 1
    i = n - 1
    while i & 1:
        count += 1
        i >>= 1
    return count


@lru_cache(maxsize=32)
def postorder_levels(
    height: int,
) -> tuple[Callable[[Sequence[Hash | None]], tuple[Hash | None, ...]], ...]:
    """Per level, a getter of that level's hashes among the stored hashes of an aligned block.

    The 2^(height+1) - 1 hashes that an aligned block of 2^height leaves writes are stored in
    post-order (leaf by leaf, each followed by the subtrees it completes), so level L's hashes
    are at fixed offsets from the block's first: postorder_levels(h)[L](rows) are they, left
    to right, equal to subtree_levels(leaves)[L].
    """
    positions: list[list[int]] = [[] for _ in range(height + 1)]
    p = 0
    for i in range(1 << height):
        positions[0].append(p)
        p += 1
        level = 0
        while i & 1:
            level += 1
            i >>= 1
            positions[level].append(p)
            p += 1
    return tuple(
        (lambda rows, _i=pos[0]: (rows[_i],)) if len(pos) == 1 else itemgetter(*pos)
        for pos in positions
    )


def frontier_indexes(n: int) -> list[int]:
    """Stored-hash indexes of the maximal complete subtrees of a tree of n leaves, left to right.

    These are the only hashes needed to extend the tree (append) or to compute its root.
    """
    out = []
    start = 0
    for level in range(n.bit_length() - 1, -1, -1):
        if n >> level & 1:
            out.append(stored_hash_index(level, start >> level))
            start += 1 << level
    return out


def frontier_levels(n: int) -> list[int]:
    """Heights of the maximal complete subtrees of a tree of n leaves, left to right."""
    return [lvl for lvl in range(n.bit_length() - 1, -1, -1) if n >> lvl & 1]


def fold_frontier(frontier: Sequence[Hash]) -> Hash:
    """The root of a tree given its maximal complete subtrees' hashes, left to right."""
    if not frontier:
        return empty_root()
    h = frontier[-1]
    for left in reversed(frontier[:-1]):
        h = node_hash(left, h)
    return h


def append_leaf(
    frontier: list[Hash], size: int, leaf: Hash
) -> tuple[list[tuple[int, Hash]], list[Hash]]:
    """Extend a tree of `size` leaves by one leaf.

    Returns the new stored hashes as (stored index, hash) pairs — the leaf's and those of
    the subtrees it completes — and the new frontier. Pure: `frontier` is not modified.
    """
    new = [(stored_hash_index(0, size), leaf)]
    frontier = list(frontier)
    h = leaf
    level = 0
    n = size
    while n & 1:
        h = node_hash(frontier.pop(), h)
        level += 1
        n >>= 1
        new.append((stored_hash_index(level, n), h))
    frontier.append(h)
    return new, frontier


def frontier_prefix(size: int, upto: int) -> tuple[int, int]:
    """(m, t): the largest m <= upto whose tree is the first t frontier subtrees of `size`."""
    m = t = 0
    for level in frontier_levels(size):
        if m + (1 << level) > upto:
            break
        m += 1 << level
        t += 1
    return m, t


# --- hashing many leaves at once ---------------------------------------------------------


def leaf_hashes(entries: Iterable[bytes]) -> list[Hash]:
    """leaf_hash of each entry, in order."""
    return [_sha256(b"\x00" + d).digest() for d in entries]


def complete_subtrees(lo: int, hi: int) -> Iterator[tuple[int, int]]:
    """Splits leaves [lo, hi) into maximal aligned complete subtrees: (start, height) pairs."""
    while lo < hi:
        height = (hi - lo).bit_length() - 1
        if lo:
            height = min(height, (lo & -lo).bit_length() - 1)
        yield lo, height
        lo += 1 << height


def subtree_levels(leaves: list[Hash]) -> list[list[Hash]]:
    """All levels of the perfect tree over 2^k leaf hashes, leaves first, root last."""
    levels = [leaves]
    cur = leaves
    while len(cur) > 1:
        cur = [_sha256(b"\x01" + a + b).digest() for a, b in zip(cur[::2], cur[1::2], strict=True)]
        levels.append(cur)
    return levels


def extend_frontier(frontier: Sequence[Hash], size: int, leaves: Sequence[Hash]) -> list[Hash]:
    """The frontier after appending `leaves` to a tree of `size`: append_leaf for many leaves,
    hashing each complete subtree they fill in one go. Pure: `frontier` is not modified."""
    f = list(frontier)
    for start, height in complete_subtrees(size, size + len(leaves)):
        off = start - size
        h = subtree_levels(list(leaves[off : off + (1 << height)]))[-1][0]
        k = start >> height
        while k & 1:
            h = node_hash(f.pop(), h)
            k >>= 1
        f.append(h)
    return f


# --- roots, inclusion and consistency proofs (RFC 6962 section 2.1.1, 2.1.2) ------------


def tree_hash_indexes(n: int) -> list[int]:
    """Stored indexes needed for the root of a tree of n leaves (at most log2(n)+1)."""
    return frontier_indexes(n)


def tree_hash(n: int, read: HashReader) -> Hash:
    """The root of the first n leaves (RFC 6962 MTH), from O(log n) stored hashes."""
    return fold_frontier(read(frontier_indexes(n)))


def right_edge(frontier: Sequence[Hash]) -> list[Hash]:
    """The hashes of a tree's right edge: element k is the fold of frontier[k:].

    Each is the hash of the leaves from the k-th maximal complete subtree to the end: the one
    subtree of an audit path that the tree's size cuts off (RFC 6962 section 2.1 splits at
    powers of two, so it is always such a suffix). All proofs against one size share them.
    """
    edge = list(frontier)
    for k in range(len(edge) - 2, -1, -1):
        edge[k] = node_hash(edge[k], edge[k + 1])
    return edge


class ProofPlan(NamedTuple):
    """Where a proof's hashes come from, in proof order: the stored hashes at `stored`, and,
    when `at` >= 0, right_edge(...)[edge] of the tree inserted at position `at`."""

    stored: list[int]
    at: int
    edge: int


def _path_plan(index: int, level: int, size: int, stored: list[int]) -> ProofPlan:
    """The audit path of the complete subtree (level, index) in the tree of `size` leaves,
    from its sibling up to the root's child, appended to `stored`.

    RFC 6962 section 2.1 splits a tree at the largest power of two below its size, so every
    subtree in it is aligned: the path is, level by level, the sibling of the subtree holding
    the target, cut off at `size` and left out where it would start at or beyond `size`.
    A whole sibling is one stored hash, stored_hash_index(level, sibling), written out here
    because this loop is most of a proof's cost. At most one sibling is cut off: the leaves
    from its start to `size`, the right edge from the frontier piece that starts there.
    """
    at = edge = -1
    width = 1 << level
    while width < size:
        lo = (index ^ 1) * width
        if lo < size:
            if lo + width <= size:
                m = lo + width - 1
                stored.append(2 * m - m.bit_count() + level)
            else:
                at, edge = len(stored), (size >> level).bit_count()
        index >>= 1
        level += 1
        width <<= 1
    return ProofPlan(stored, at, edge)


def inclusion_plan(index: int, size: int) -> ProofPlan:
    """The plan of PATH(index, D[0:size]), RFC 6962 section 2.1.1."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not in a tree of size {size}")
    return _path_plan(index, 0, size, [])


def consistency_plan(size1: int, size2: int) -> ProofPlan:
    """The plan of PROOF(size1, D[0:size2]), RFC 6962 section 2.1.2.

    The proof is the largest complete subtree ending at size1 — left out when it is the whole
    old tree, whose root the verifier already has — followed by that subtree's audit path in
    the new tree: the decomposition RFC 9162 section 2.1.4.2 verifies against.
    """
    if not 0 < size1 <= size2:
        raise ProofError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == size2:
        return ProofPlan([], -1, -1)
    level = (size1 & -size1).bit_length() - 1
    index = (size1 - 1) >> level
    return _path_plan(index, level, size2, [stored_hash_index(level, index)] if index else [])


def proof_from(plan: ProofPlan, stored: Sequence[Hash], edge: Sequence[Hash]) -> list[Hash]:
    """The proof from the hashes at plan.stored, in order, and the tree's right_edge."""
    proof = list(stored)
    if plan.at >= 0:
        proof.insert(plan.at, edge[plan.edge])
    return proof


def plan_indexes(plan: ProofPlan, size: int) -> list[int]:
    """Every stored index a plan needs, for one read: plan.stored, then the frontier of
    `size` from the piece where the cut-off sibling starts."""
    if plan.at < 0:
        return plan.stored
    return [*plan.stored, *frontier_indexes(size)[plan.edge :]]


def _proof(plan: ProofPlan, size: int, read: HashReader) -> list[Hash]:
    hashes = read(plan_indexes(plan, size))
    k = len(plan.stored)
    proof = list(hashes[:k])
    if plan.at >= 0:
        proof.insert(plan.at, fold_frontier(hashes[k:]))  # right_edge(frontier)[plan.edge]
    return proof


def inclusion_proof_indexes(index: int, size: int) -> list[int]:
    """Stored indexes needed for the audit path of leaf `index` in a tree of `size` leaves."""
    return plan_indexes(inclusion_plan(index, size), size)


def inclusion_proof(index: int, size: int, read: HashReader) -> list[Hash]:
    """RFC 6962 section 2.1.1 PATH(index, D[0:size]): leaf's sibling first, root's child last."""
    return _proof(inclusion_plan(index, size), size, read)


def consistency_proof_indexes(size1: int, size2: int) -> list[int]:
    """Stored indexes needed for the consistency proof between sizes 0 < size1 <= size2."""
    return plan_indexes(consistency_plan(size1, size2), size2)


def consistency_proof(size1: int, size2: int, read: HashReader) -> list[Hash]:
    """RFC 6962 section 2.1.2 PROOF(size1, D[0:size2])."""
    return _proof(consistency_plan(size1, size2), size2, read)


def consistency_proof_by(size1: int, size2: int, mth: Callable[[int, int], Hash]) -> list[Hash]:
    """RFC 6962 section 2.1.2 PROOF(size1, D[0:size2]), subtree hashes from mth(lo, hi).

    For a reader with the leaves but not the stored hashes (an auditor rebuilding a proof
    from what a server handed out); equal to consistency_proof over the same tree.
    """
    if not 0 < size1 <= size2:
        raise ProofError(f"no consistency proof from size {size1} to size {size2}")

    def sub(m: int, lo: int, hi: int, whole: bool) -> list[Hash]:
        if m == hi - lo:
            return [] if whole else [mth(lo, hi)]
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if m <= k:
            return sub(m, lo, lo + k, whole) + [mth(lo + k, hi)]
        return sub(m - k, lo + k, hi, False) + [mth(lo, lo + k)]

    return sub(size1, 0, size2, True)


# --- verification (RFC 9162 section 2.1.3.2 and 2.1.4.2) ---------------------------------


def inclusion_steps(
    index: int, size: int, proof: Sequence[Hash]
) -> Iterator[tuple[Literal["left", "right"], Hash]]:
    """The walk of RFC 9162 section 2.1.3.2 up leaf `index`'s audit path in a tree of `size`.

    Yields each proof hash with the side it is on: "left", the next hash is node_hash(p, r);
    "right", node_hash(r, p). Raises ProofError where the walk fails: an index not below the
    size (before any step), a hash past the root (too long), or the root not reached at the
    end (too short). The one walk root_from_inclusion_proof, frontier_from_inclusion and
    audit.explain_inclusion take.
    """
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not in a tree of size {size}")
    fn, sn = index, size - 1
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            yield "left", p
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            yield "right", p
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")


def root_from_inclusion_proof(index: int, size: int, leaf: Hash, proof: Sequence[Hash]) -> Hash:
    """The root implied by an audit path, RFC 9162 section 2.1.3.2; raises ProofError."""
    if any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("proof hash of wrong length")
    r = leaf
    for side, p in inclusion_steps(index, size, proof):
        r = node_hash(p, r) if side == "left" else node_hash(r, p)
    return r


def verify_inclusion(index: int, size: int, leaf: Hash, proof: Sequence[Hash], root: Hash) -> None:
    """Checks that `leaf` is at `index` in the tree of `size` leaves with `root`."""
    if len(leaf) != HASH_SIZE or len(root) != HASH_SIZE:
        raise ProofError("hash of wrong length")
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofError(
            f"inclusion proof for index {index} does not lead to the root of size {size}"
        )


def frontier_from_inclusion(
    index: int, size: int, leaf: Hash, proof: Sequence[Hash], root: Hash
) -> list[Hash]:
    """The frontier of the first index+1 leaves, taken from a verified audit path.

    The left siblings on leaf `index`'s path (RFC 9162 section 2.1.3.2) are the maximal
    complete subtrees of [0, index): with the leaf they are everything needed to go on
    hashing from index+1 without reading the leaves before it. Raises ProofError.
    """
    verify_inclusion(index, size, leaf, proof, root)
    lefts = [p for side, p in inclusion_steps(index, size, proof) if side == "left"]
    return append_leaf(lefts[::-1], index, leaf)[1]


def consistency_steps(
    size1: int, size2: int, root1: Hash, proof: Sequence[Hash]
) -> Iterator[tuple[Literal["start", "both", "new"], Hash]]:
    """The walk of RFC 9162 section 2.1.4.2 for a non-empty proof and 0 < size1 < size2.

    Yields first ("start", h): the hash both roots are folded from, the old root itself when
    size1 is a power of two (the proof then leaves it out), else the proof's first hash. Then
    each further hash with what it extends: "both", a left sibling on both paths (old =
    node_hash(c, old), new = node_hash(c, new)); "new", a right sibling of the new tree only
    (new = node_hash(new, c)). Raises ProofError when the proof is too long or too short. The
    one walk verify_consistency and audit.explain_consistency take.
    """
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: its root is the first node
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    yield "start", path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            yield "both", c
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            yield "new", c
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")


def verify_consistency(
    size1: int, size2: int, root1: Hash, root2: Hash, proof: Sequence[Hash]
) -> None:
    """RFC 9162 section 2.1.4.2. Size 0 is refused: a proof from the empty tree proves nothing.

    Equal sizes need an empty proof and equal roots, and nothing else is checked.
    """
    if size1 <= 0:
        raise ProofError("consistency proof from size 0 proves nothing")
    if size1 > size2:
        raise ProofError(f"size1 {size1} is larger than size2 {size2}")
    if size1 == size2:
        if proof:
            raise ProofError("non-empty consistency proof between equal sizes")
        if root1 != root2:
            raise ProofError(f"two different roots for size {size1}")
        return
    if len(root1) != HASH_SIZE or len(root2) != HASH_SIZE:
        raise ProofError("hash of wrong length")
    if any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("proof hash of wrong length")
    if not proof:
        raise ProofError("empty consistency proof")
    fr = sr = root1
    for step, c in consistency_steps(size1, size2, root1, proof):
        if step == "start":
            fr = sr = c
        elif step == "both":
            fr, sr = node_hash(c, fr), node_hash(c, sr)
        else:
            sr = node_hash(sr, c)
    if fr != root1:
        raise ProofError(f"consistency proof does not match the root of size {size1}")
    if sr != root2:
        raise ProofError(f"consistency proof does not match the root of size {size2}")
