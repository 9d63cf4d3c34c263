"""Proof checks written out step by step, for people: each hash an RFC 9162 check computes.

explain_inclusion and explain_consistency walk the same steps as merkle.verify_inclusion and
merkle.verify_consistency and say, one line a step, which sibling was hashed on which side and
what came out, ending in the root it reached beside the signed one. They explain; verdicts are
merkle's.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..encoding import b64
from ..merkle import Hash, ProofError, consistency_steps, inclusion_steps, node_hash


def _short(h: bytes) -> str:
    return h.hex()[:12] + "…"


def explain_inclusion(index: int, size: int, leaf: Hash, proof: Sequence[Hash]) -> list[str]:
    """The hash steps of an RFC 9162 section 2.1.3.2 inclusion check, one line each."""
    lines = [
        f"leaf {index} of {size}: SHA-256(0x00 ‖ entry) = {_short(leaf)}  "
        "(below, · is the hash of the step before)"
    ]
    r, step = leaf, 0
    try:
        for step, (side, p) in enumerate(inclusion_steps(index, size, proof), 1):
            if side == "left":
                r = node_hash(p, r)
                lines.append(
                    f"step {step}: sibling on the left  {_short(p)} → "
                    f"SHA-256(0x01 ‖ {_short(p)} ‖ ·) = {_short(r)}"
                )
            else:
                r = node_hash(r, p)
                lines.append(
                    f"step {step}: sibling on the right {_short(p)} → "
                    f"SHA-256(0x01 ‖ · ‖ {_short(p)}) = {_short(r)}"
                )
    except ProofError as e:
        lines.append(f"step {step + 1}: {e} — fails")
        return lines
    lines.append(f"root = {b64(r)}")
    return lines


def explain_consistency(
    size1: int, size2: int, root1: Hash, root2: Hash, proof: Sequence[Hash]
) -> list[str]:
    """The hash steps of an RFC 9162 section 2.1.4.2 consistency check, one line each."""
    lines = [f"consistency {size1} → {size2}: {len(proof)} proof hashes"]
    if not 0 < size1 < size2 or not proof:
        lines.append("nothing to step through (equal sizes, size 0 or an empty proof)")
        return lines
    if size1 & (size1 - 1) == 0:
        lines.append(f"size {size1} is a power of two: its root {_short(root1)} starts the path")
    fr = sr = root1
    step = 0
    try:
        for step, (kind, c) in enumerate(consistency_steps(size1, size2, root1, proof)):
            if kind == "start":
                fr = sr = c
                lines.append(f"start: old = new = {_short(fr)}")
            elif kind == "both":
                fr, sr = node_hash(c, fr), node_hash(c, sr)
                lines.append(
                    f"step {step}: {_short(c)} on the left of both → "
                    f"old {_short(fr)}, new {_short(sr)}"
                )
            else:
                sr = node_hash(sr, c)
                lines.append(f"step {step}: {_short(c)} on the right of new → new {_short(sr)}")
    except ProofError as e:
        lines.append(f"step {step + 1}: {e} — fails")
        return lines
    lines.append(
        f"old root {b64(fr)} {'=' if fr == root1 else '≠'} signed {b64(root1)} (size {size1})"
    )
    lines.append(
        f"new root {b64(sr)} {'=' if sr == root2 else '≠'} signed {b64(root2)} (size {size2})"
    )
    return lines
