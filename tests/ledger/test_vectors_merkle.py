"""Public vectors: transparency-dev/merkle proofs, RFC 6962 roots, the Tessera test log."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import pytest

from ledger import merkle
from ledger.checkpoint import parse_checkpoint
from ledger.note import Verifier, open_note

TESSERA_VKEY = "example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx"


def _cases(vectors: Path, kind: str) -> list[tuple[str, dict]]:
    root = vectors / "merkle" / kind
    files = sorted(root.rglob("*.json"))
    return [(str(p.relative_to(root)), json.loads(p.read_text())) for p in files]


def _b64(s: str | None) -> bytes:
    return base64.b64decode(s) if s else b""


def test_inclusion_vectors(vectors: Path) -> None:
    cases = _cases(vectors, "inclusion")
    assert len(cases) > 50
    for name, c in cases:
        proof = [_b64(h) for h in (c["proof"] or [])]
        try:
            merkle.verify_inclusion(
                c["leafIdx"], c["treeSize"], _b64(c["leafHash"]), proof, _b64(c["root"])
            )
            ok = True
        except merkle.ProofError:
            ok = False
        assert ok != c["wantErr"], f"{name}: {c['desc']}"


def test_consistency_vectors(vectors: Path) -> None:
    cases = _cases(vectors, "consistency")
    assert len(cases) > 50
    for name, c in cases:
        proof = [_b64(h) for h in (c["proof"] or [])]
        try:
            merkle.verify_consistency(
                c["size1"], c["size2"], _b64(c["root1"]), _b64(c["root2"]), proof
            )
            ok = True
        except merkle.ProofError:
            ok = False
        assert ok != c["wantErr"], f"{name}: {c['desc']}"


def _stored(leaves: list[bytes]) -> dict[int, bytes]:
    hashes: dict[int, bytes] = {}
    frontier: list[bytes] = []
    for i, leaf in enumerate(leaves):
        new, frontier = merkle.append_leaf(frontier, i, leaf)
        hashes.update(new)
    return hashes


def test_rfc6962_roots(vectors: Path) -> None:
    data = json.loads((vectors / "merkle" / "rfc6962-roots.json").read_text())
    leaves = [merkle.leaf_hash(bytes.fromhex(h)) for h in data["leaf_inputs_hex"]]
    hashes = _stored(leaves)
    for size, want in data["roots_hex_by_size"].items():
        got = merkle.tree_hash(int(size), lambda ix: [hashes[i] for i in ix])
        assert got.hex() == want, size


def _tessera_entries(log_dir: Path) -> list[bytes]:
    raw = (log_dir / "tile" / "entries" / "000.p" / "15").read_bytes()
    out, pos = [], 0
    while pos < len(raw):
        (n,) = struct.unpack(">H", raw[pos : pos + 2])
        out.append(raw[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


def test_tessera_log(vectors: Path) -> None:
    log_dir = vectors / "tessera-log"
    v = Verifier.from_vkey(TESSERA_VKEY)
    entries = _tessera_entries(log_dir)
    assert entries[:3] == [b"one", b"two", b"three"] and len(entries) == 15
    leaves = [merkle.leaf_hash(e) for e in entries]
    assert b"".join(leaves) == (log_dir / "tile" / "0" / "000.p" / "15").read_bytes()
    hashes = _stored(leaves)
    prev = None
    for size in range(16):
        cp = parse_checkpoint(open_note((log_dir / f"checkpoint.{size}").read_text(), [v]).text)
        assert cp.origin == "example.com/log/testdata" and cp.size == size
        assert merkle.tree_hash(size, lambda ix: [hashes[i] for i in ix]) == cp.root
        if prev is not None and prev.size > 0:
            proof = merkle.consistency_proof(prev.size, size, lambda ix: [hashes[i] for i in ix])
            merkle.verify_consistency(prev.size, size, prev.root, cp.root, proof)
        prev = cp
    final = parse_checkpoint(open_note((log_dir / "checkpoint").read_text(), [v]).text)
    assert final.size == 15 and final.root == prev.root


def test_tessera_checkpoint_flipped_byte_fails(vectors: Path) -> None:
    note = (vectors / "tessera-log" / "checkpoint").read_text()
    v = Verifier.from_vkey(TESSERA_VKEY)
    flipped = note.replace("\n15\n", "\n16\n")
    with pytest.raises(ValueError):
        open_note(flipped, [v])
