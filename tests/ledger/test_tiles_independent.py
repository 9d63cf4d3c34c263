"""Tiles written by `ledger.tiles.sync`, read back by a second reader written here from
c2sp.org/tlog-tiles and RFC 6962 with hashlib alone (and the Ed25519 primitive for the
checkpoint's signature), for a log of 70,000 entries: the spec's own example size, so level-2
tiles and partial tiles on three levels. Then a second sync after more appends writes only
the files that changed.

Building the log (bulk append, no receipts) takes about 9 s on the CI machine, the first sync
about 3 s (one fsync per file); the whole module about 20 s.
"""

from __future__ import annotations

import base64
import hashlib
import random
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.checkpoint import parse_checkpoint
from ledger.log import Submission
from ledger.note import split
from ledger.tiles import TileReader
from ledger.tiles.sync import sync

from ..ledger_helpers import new_signer, open_log

SIZE = 70_000
MORE = 300


# --- the independent reader: c2sp.org/tlog-tiles and RFC 6962, hashlib only ----------------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def index_path(n: int) -> str:
    """<N>: zero-padded 3-digit path elements, all but the last beginning with x."""
    groups = []
    while True:
        groups.append(f"{n % 1000:03d}")
        n //= 1000
        if n == 0:
            break
    groups.reverse()
    return "/".join([*("x" + g for g in groups[:-1]), groups[-1]])


def tile_path(level: int | str, n: int, width: int) -> str:
    return f"tile/{level}/{index_path(n)}" + ("" if width == 256 else f".p/{width}")


def expected_tiles(size: int) -> dict[str, tuple[int | str, int, int]]:
    """Every tile path of a tree of `size`: floor(s / 256^(l+1)) full tiles per level and a
    partial one of width floor(s / 256^l) mod 256 when that is not zero; bundles as level 0."""
    out: dict[str, tuple[int | str, int, int]] = {}
    level = 0
    while size // 256**level:
        for name in [level, "entries"] if level == 0 else [level]:
            full = size // 256 ** (level + 1)
            partial = (size // 256**level) % 256
            for n in range(full):
                out[tile_path(name, n, 256)] = (name, n, 256)
            if partial:
                out[tile_path(name, full, partial)] = (name, full, partial)
        level += 1
    return out


class Reader:
    """Reads a tiled log from a directory, trusting nothing but the log's public key."""

    def __init__(self, root_dir: Path, vkey: str) -> None:
        self.dir = root_dir
        name, key_id_hex, key64 = vkey.split("+", 2)
        raw = base64.b64decode(key64)
        assert raw[0] == 0x01 and len(raw) == 33  # Ed25519, signed-note type 0x01
        assert sha256(name.encode() + b"\n" + raw)[:4].hex() == key_id_hex
        self.name, self.key_id, self.key = name, bytes.fromhex(key_id_hex), raw[1:]

    def checkpoint(self) -> tuple[str, int, bytes]:
        note = (self.dir / "checkpoint").read_text(encoding="utf-8")
        text, _, sigs = note.rpartition("\n\n")
        text += "\n"
        for line in sigs.splitlines():
            dash, name, sig64 = line.split(" ")
            raw = base64.b64decode(sig64)
            if dash == "\u2014" and name == self.name and raw[:4] == self.key_id:
                Ed25519PublicKey.from_public_bytes(self.key).verify(raw[4:], text.encode())
                origin, size, root64 = text.splitlines()[:3]
                return origin, int(size), base64.b64decode(root64)
        raise AssertionError("the checkpoint has no signature by the log's key")

    def tile(self, level: int, n: int, width: int) -> list[bytes]:
        data = (self.dir / tile_path(level, n, width)).read_bytes()
        assert len(data) == 32 * width
        return [data[i : i + 32] for i in range(0, len(data), 32)]

    def bundle(self, n: int, width: int) -> list[bytes]:
        data = (self.dir / tile_path("entries", n, width)).read_bytes()
        out, pos = [], 0
        while pos < len(data):
            (length,) = struct.unpack(">H", data[pos : pos + 2])
            out.append(data[pos + 2 : pos + 2 + length])
            pos += 2 + length
        assert pos == len(data) and len(out) == width
        return out


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1 MTH over leaf hashes: split at the largest power of two < n."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


class Paths:
    """RFC 6962 section 2.1.1 PATH(m, D[n]) over one list of leaf hashes, each subtree's
    MTH computed once for all the paths asked for."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = leaves
        self.memo: dict[tuple[int, int], bytes] = {}

    def mth(self, lo: int, hi: int) -> bytes:
        if (lo, hi) not in self.memo:
            if hi - lo == 1:
                self.memo[lo, hi] = self.leaves[lo]
            else:
                k = 1 << ((hi - lo - 1).bit_length() - 1)
                h = sha256(b"\x01" + self.mth(lo, lo + k) + self.mth(lo + k, hi))
                self.memo[lo, hi] = h
        return self.memo[lo, hi]

    def path(self, m: int, lo: int = 0, hi: int | None = None) -> list[bytes]:
        hi = len(self.leaves) if hi is None else hi
        if hi - lo == 1:
            return []
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if m < k:
            return self.path(m, lo, lo + k) + [self.mth(lo + k, hi)]
        return self.path(m - k, lo + k, hi) + [self.mth(lo, lo + k)]


def root_from_path(index: int, size: int, leaf: bytes, proof: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2, written out."""
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        assert sn != 0
        if fn & 1 or fn == sn:
            r = sha256(b"\x01" + p + r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = sha256(b"\x01" + r + p)
        fn >>= 1
        sn >>= 1
    assert sn == 0
    return r


# --- the log ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("tiles")
    signer = new_signer()
    log = open_log(f"sqlite:///{d / 'log.db'}", signer)
    rng = random.Random(6962)
    for start in range(0, SIZE, 10_000):
        subs = [
            Submission("record", f"hosp-{i % 7}", rng.randbytes(32), subject=rng.randbytes(32))
            for i in range(start, min(start + 10_000, SIZE))
        ]
        assert all(not isinstance(r, Exception) for r in log.append_batch(subs, receipts=False))
    first = sync(log, d / "out")
    yield log, signer, d / "out", first
    log.close()


def test_the_tree_is_the_spec_example(synced) -> None:
    """c2sp.org/tlog-tiles: "a tree of size 70,000 will be represented by 273 full level 0
    tiles, one partial level 0 tile of width 112, one full level 1 tile, one partial level 1
    tile of width 17, and one partial level 2 tile of width 1"."""
    _, _, out, first = synced
    on_disk = {str(p.relative_to(out)) for p in (out / "tile").rglob("*") if p.is_file()}
    want = expected_tiles(SIZE)
    assert on_disk == set(want)
    levels = {lvl: sorted(w for name, _, w in want.values() if name == lvl) for lvl in (0, 1, 2)}
    assert levels == {0: [112] + [256] * 273, 1: [17, 256], 2: [1]}
    assert "tile/0/273.p/112" in want and "tile/1/001.p/17" in want and "tile/2/000.p/1" in want
    assert set(first.written) == set(want) | {"checkpoint"} and first.written[-1] == "checkpoint"


def test_independent_reader_recomputes_the_root_and_the_upper_tiles(synced) -> None:
    _, signer, out, _ = synced
    r = Reader(out, signer.verifier.vkey())
    origin, size, root = r.checkpoint()
    assert (origin, size) == (signer.name, SIZE)
    want = expected_tiles(size)
    leaves = [
        h for name, n, w in sorted(v for v in want.values() if v[0] == 0) for h in r.tile(0, n, w)
    ]
    assert len(leaves) == SIZE
    assert mth(leaves) == root
    # Level l, tile n, hash i = MTH(D[(n*256 + i) * 256^l : (n*256 + i + 1) * 256^l]).
    for name, n, width in want.values():
        if name in ("entries", 0):
            continue
        span = 256**name
        for i, h in enumerate(r.tile(name, n, width)):
            lo = (n * 256 + i) * span
            assert h == mth(leaves[lo : lo + span]), (name, n, i)
    # Every entry bundle hashes to its level-0 tile.
    for name, n, width in want.values():
        if name == "entries":
            entries = r.bundle(n, width)
            assert [sha256(b"\x00" + e) for e in entries] == leaves[n * 256 : n * 256 + width]


def test_inclusion_from_tiles_including_partial_tiles(synced) -> None:
    """Proofs for sampled entries, among them entries of the partial level-0 tile and of the
    range only the partial level-1 and level-2 tiles cover: the independent RFC 6962 PATH,
    and ledger's TileReader reading the same files, agree and lead to the signed root."""
    log, signer, out, _ = synced
    r = Reader(out, signer.verifier.vkey())
    _, size, root = r.checkpoint()
    leaves = [h for n in range(273) for h in r.tile(0, n, 256)] + r.tile(0, 273, 112)
    ours = TileReader(size, root, lambda p: (out / p).read_bytes())
    rng = random.Random(9162)
    sample = {0, 1, 255, 256, 65_535, 65_536, 69_887, 69_888, 69_999}
    sample |= {rng.randrange(size) for _ in range(40)}
    paths = Paths(leaves)
    entries = {n: r.bundle(n, 256 if n < 273 else 112) for n in {i // 256 for i in sample}}
    for i in sorted(sample):
        entry = entries[i // 256][i % 256]
        leaf = sha256(b"\x00" + entry)
        assert leaf == leaves[i]
        proof = paths.path(i)
        assert root_from_path(i, size, leaf, proof) == root
        assert ours.inclusion_proof(i) == proof
        assert log.entries(i, i + 1) == [entry]
    assert ours.tree_root() == root


def test_tile_reader_refuses_a_wrong_tile(synced, tmp_path: Path) -> None:
    """A tile changed on the server: TileReader's authentication fails, it answers nothing."""
    import shutil

    from ledger.tiles import TileError

    _, signer, out, _ = synced
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    _, size, root = Reader(copy, signer.verifier.vkey()).checkpoint()
    victim = copy / "tile" / "0" / "005"
    data = bytearray(victim.read_bytes())
    data[40] ^= 1
    victim.write_bytes(bytes(data))
    reader = TileReader(size, root, lambda p: (copy / p).read_bytes())
    assert len(reader.inclusion_proof(100)) == 17  # tiles untouched: fine
    with pytest.raises(TileError, match="does not hash to its parent"):
        reader.inclusion_proof(5 * 256 + 3)
    edge = copy / "tile" / "1" / "001.p" / "17"
    edge.write_bytes(edge.read_bytes()[:-1] + b"\x00")
    with pytest.raises(TileError, match="do not fold to its root"):
        TileReader(size, root, lambda p: (copy / p).read_bytes()).inclusion_proof(SIZE - 1)


def test_second_sync_writes_only_what_changed(synced) -> None:
    log, _, out, _ = synced
    before = {
        str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in out.rglob("*")
        if p.is_file()
    }
    rng = random.Random(1)
    log.append_batch([Submission("record", "hosp-1", rng.randbytes(32)) for _ in range(MORE)])
    second = sync(log, out)
    new_size = SIZE + MORE
    assert second.size == new_size
    old, new = set(expected_tiles(SIZE)), set(expected_tiles(new_size))
    assert set(second.written) == (new - old) | {"checkpoint"}
    assert sorted(new - old) == [
        "tile/0/273",
        "tile/0/274.p/156",
        "tile/1/001.p/18",
        "tile/entries/273",
        "tile/entries/274.p/156",
    ]
    # The partial tiles of tiles now full are gone; a narrower partial of a still-partial
    # tile stays for clients of the older checkpoint.
    assert set(second.removed) == {"tile/0/273.p/112", "tile/entries/273.p/112"}
    after = {
        str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in out.rglob("*")
        if p.is_file()
    }
    for name, stamp in before.items():
        if name in second.removed:
            assert name not in after
        elif name != "checkpoint":
            assert after[name] == stamp, f"{name} was rewritten"
    assert "tile/1/001.p/17" in after
    third = sync(log, out)
    assert third.written == () and third.removed == () and third.unchanged == len(new)
    # The reader agrees with the log at the new size, from the files.
    cp = parse_checkpoint(split((out / "checkpoint").read_text())[0])
    reader = TileReader(cp.size, cp.root, lambda p: (out / p).read_bytes())
    assert reader.consistency_proof(SIZE) == log.consistency_proof(SIZE, new_size)
    assert reader.entries(274) == log.entries(274 * 256, new_size)
