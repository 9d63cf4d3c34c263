"""RFC 6962 Merkle tree hashing, stored-hash layout, and proofs.

Hashes follow RFC 6962 section 2.1 (also RFC 9162 section 2.1): a leaf hash is
SHA-256(0x00 || data) and an interior node is SHA-256(0x01 || left || right).

The tree is stored as in golang.org/x/mod/sumdb/tlog: every hash of a complete subtree is
written once, at a fixed position ("stored hash index"), when its last leaf arrives. A tree
of n leaves then needs about 2n stored hashes, and any root or proof is assembled from
O(log n) of them, whose positions are computed up front so a store can fetch them in one
query. Functions here are pure: they compute positions and fold hashes; reading is the
caller's job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32

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

    Level L's n-th hash is written right after level L+1's (2n+1)-th hash; level 0's n-th
    hash sits at n + n/2 + n/4 + ... plus the hashes of higher levels completed before it.
    That sum is m + m/2 + m/4 + ... = 2m - popcount(m) for m = (n+1)*2^level - 1, the closed
    form of the Go checksum database's tlog StoredHashIndex.
    """
    m = ((n + 1) << level) - 1
    return 2 * m - m.bit_count() + level


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


# --- subtree hashes, inclusion and consistency proofs (RFC 6962 section 2.1.1, 2.1.2) ------


def _subtree_indexes(lo: int, hi: int, need: list[int]) -> None:
    """Append the stored indexes whose fold is the hash of leaves [lo, hi)."""
    while lo < hi:
        k = 1 << ((hi - lo).bit_length() - 1)
        level = k.bit_length() - 1
        # Largest complete subtree starting at lo that fits, aligned to its size.
        while lo & (k - 1):
            k >>= 1
            level -= 1
        need.append(stored_hash_index(level, lo >> level))
        lo += k


def _subtree_hash(lo: int, hi: int, take: Callable[[], Hash]) -> Hash:
    """Fold the hashes _subtree_indexes(lo, hi) asked for, taking them in order from `take`."""
    parts = []
    while lo < hi:
        k = 1 << ((hi - lo).bit_length() - 1)
        while lo & (k - 1):
            k >>= 1
        parts.append(take())
        lo += k
    return fold_frontier(parts)


def tree_hash_indexes(n: int) -> list[int]:
    """Stored indexes needed for the root of a tree of n leaves (at most log2(n)+1)."""
    need: list[int] = []
    _subtree_indexes(0, n, need)
    return need


def tree_hash(n: int, read: HashReader) -> Hash:
    """The root of the first n leaves (RFC 6962 MTH), from O(log n) stored hashes."""
    if n == 0:
        return empty_root()
    return _subtree_hash(0, n, iter(read(tree_hash_indexes(n))).__next__)


def _path_indexes(index: int, level: int, size: int, need: list[int]) -> tuple[int, int]:
    """Append the stored indexes of the audit path of the complete subtree (level, index) in
    the tree of `size` leaves, from its sibling up to the root's child.

    RFC 6962 section 2.1 splits a tree at the largest power of two below its size, so every
    subtree in it is aligned: the path is, level by level, the sibling of the subtree holding
    the target, cut off at `size` and left out where it would start at or beyond `size`.
    At most one sibling is cut off; it is the fold of several stored hashes. Returns its
    position in the path and how many stored hashes it takes, or (-1, 0).
    """
    cut = (-1, 0)
    position = 0
    while (1 << level) < size:
        sibling = index ^ 1
        lo = sibling << level
        if lo < size:
            if lo + (1 << level) <= size:
                need.append(stored_hash_index(level, sibling))
            else:
                before = len(need)
                _subtree_indexes(lo, size, need)
                cut = (position, len(need) - before)
            position += 1
        index >>= 1
        level += 1
    return cut


def _fold_cut(hashes: Sequence[Hash], cut: tuple[int, int]) -> list[Hash]:
    """The proof from its stored hashes: the cut-off sibling's pieces folded into one."""
    at, count = cut
    if count == 0:
        return list(hashes)
    return [*hashes[:at], fold_frontier(hashes[at : at + count]), *hashes[at + count :]]


def _inclusion_plan(index: int, size: int) -> tuple[list[int], tuple[int, int]]:
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not in a tree of size {size}")
    need: list[int] = []
    return need, _path_indexes(index, 0, size, need)


def inclusion_proof_indexes(index: int, size: int) -> list[int]:
    """Stored indexes needed for the audit path of leaf `index` in a tree of `size` leaves."""
    return _inclusion_plan(index, size)[0]


def inclusion_proof(index: int, size: int, read: HashReader) -> list[Hash]:
    """RFC 6962 section 2.1.1 PATH(index, D[0:size]): leaf's sibling first, root's child last."""
    need, cut = _inclusion_plan(index, size)
    return _fold_cut(read(need), cut)


def inclusion_proof_from(index: int, size: int, hashes: Sequence[Hash]) -> list[Hash]:
    """PATH(index, D[0:size]) from the hashes at inclusion_proof_indexes(index, size), in order.

    For callers that computed the indexes already (one read for a whole batch's receipts).
    """
    return _fold_cut(hashes, _inclusion_plan(index, size)[1])


def _consistency_plan(size1: int, size2: int) -> tuple[list[int], tuple[int, int]]:
    """PROOF(size1, D[0:size2]) of RFC 6962 section 2.1.2, as stored indexes.

    The proof is the largest complete subtree ending at size1 — left out when it is the whole
    old tree, whose root the verifier already has — followed by that subtree's audit path in
    the new tree: the decomposition RFC 9162 section 2.1.4.2 verifies against.
    """
    if not 0 < size1 <= size2:
        raise ProofError(f"no consistency proof from size {size1} to size {size2}")
    need: list[int] = []
    if size1 == size2:
        return need, (-1, 0)
    level = (size1 & -size1).bit_length() - 1
    index = (size1 - 1) >> level
    if index == 0:
        return need, _path_indexes(index, level, size2, need)
    need.append(stored_hash_index(level, index))
    at, count = _path_indexes(index, level, size2, need)
    return need, (at + 1 if count else at, count)


def consistency_proof_indexes(size1: int, size2: int) -> list[int]:
    """Stored indexes needed for the consistency proof between sizes 0 < size1 <= size2."""
    return _consistency_plan(size1, size2)[0]


def consistency_proof(size1: int, size2: int, read: HashReader) -> list[Hash]:
    """RFC 6962 section 2.1.2 PROOF(size1, D[0:size2])."""
    need, cut = _consistency_plan(size1, size2)
    return _fold_cut(read(need), cut)


# --- verification (RFC 9162 section 2.1.3.2 and 2.1.4.2) ---------------------------------


def root_from_inclusion_proof(index: int, size: int, leaf: Hash, proof: Sequence[Hash]) -> Hash:
    """The root implied by an audit path, RFC 9162 section 2.1.3.2; raises ProofError."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not in a tree of size {size}")
    if any(len(p) != HASH_SIZE for p in proof):
        raise ProofError("proof hash of wrong length")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return r


def verify_inclusion(index: int, size: int, leaf: Hash, proof: Sequence[Hash], root: Hash) -> None:
    """Checks that `leaf` is at `index` in the tree of `size` leaves with `root`."""
    if len(leaf) != HASH_SIZE or len(root) != HASH_SIZE:
        raise ProofError("hash of wrong length")
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofError(
            f"inclusion proof for index {index} does not lead to the root of size {size}"
        )


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
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: its root is the first node
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != root1:
        raise ProofError(f"consistency proof does not match the root of size {size1}")
    if sr != root2:
        raise ProofError(f"consistency proof does not match the root of size {size2}")
