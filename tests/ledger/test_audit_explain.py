"""ledger/audit/explain.py: the steps it writes out are the verifier's, to the last hash."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.audit import explain_consistency, explain_inclusion
from ledger.encoding import b64

N = 200
LEAVES = [merkle.leaf_hash(b"%d" % i) for i in range(N)]
STORED: dict[int, bytes] = {}
_frontier: list[bytes] = []
for _i, _leaf in enumerate(LEAVES):
    _new, _frontier = merkle.append_leaf(_frontier, _i, _leaf)
    STORED.update(_new)


def read(indexes: list[int]) -> list[bytes]:
    return [STORED[i] for i in indexes]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, N).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))))
def test_inclusion_steps_end_at_the_root(case: tuple[int, int]) -> None:
    index, size = case
    proof = merkle.inclusion_proof(index, size, read)
    lines = explain_inclusion(index, size, LEAVES[index], proof)
    assert len(lines) == len(proof) + 2  # the leaf, one line a proof hash, the root
    assert lines[-1] == f"root = {b64(merkle.tree_hash(size, read))}"
    too_long = explain_inclusion(index, size, LEAVES[index], [*proof, LEAVES[0]])
    assert too_long[-1] == f"step {len(proof) + 1}: inclusion proof is too long — fails"
    if proof:
        too_short = explain_inclusion(index, size, LEAVES[index], proof[:-1])
        assert too_short[-1] == f"step {len(proof)}: inclusion proof is too short — fails"


@settings(max_examples=200, deadline=None)
@given(st.integers(2, N).flatmap(lambda n: st.tuples(st.integers(1, n - 1), st.just(n))))
def test_consistency_steps_end_at_both_signed_roots(case: tuple[int, int]) -> None:
    size1, size2 = case
    root1, root2 = merkle.tree_hash(size1, read), merkle.tree_hash(size2, read)
    proof = merkle.consistency_proof(size1, size2, read)
    lines = explain_consistency(size1, size2, root1, root2, proof)
    assert lines[-2] == f"old root {b64(root1)} = signed {b64(root1)} (size {size1})"
    assert lines[-1] == f"new root {b64(root2)} = signed {b64(root2)} (size {size2})"
    wrong = explain_consistency(size1, size2, root1, LEAVES[0], proof)
    assert wrong[-1] == f"new root {b64(root2)} ≠ signed {b64(LEAVES[0])} (size {size2})"
    assert explain_consistency(size1, size2, root1, root2, [*proof, LEAVES[0]])[-1].endswith(
        "consistency proof is too long — fails"
    )
