"""Tile layout (paths, which tiles a tree has, bundles), TileReader against the public Tessera
test log (a C2SP tlog-tiles log written by transparency-dev/tessera), and a log's tiles
served by path and synced to a directory."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ledger import merkle
from ledger.checkpoint import parse_checkpoint
from ledger.note import Verifier, open_note
from ledger.tiles import (
    ENTRIES,
    Tile,
    TileError,
    TileReader,
    encode_index,
    format_bundle,
    parse_bundle,
    parse_path,
    tiles,
)
from ledger.tiles.sync import LogTiles, sync

from ..ledger_helpers import new_signer, open_log, submission

TESSERA_VKEY = "example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx"
TESSERA_ENTRIES = (
    b"one two three four five six seven eit nain ten ileven twelf threeten fourten fivten".split()
)


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "000"), (7, "007"), (999, "999"), (1000, "x001/000"), (1234067, "x001/x234/067")],
)
def test_index_encoding(n: int, text: str) -> None:
    assert encode_index(n) == text
    assert parse_path(f"tile/0/{text}") == Tile(0, n)


def test_paths_round_trip() -> None:
    for t in [Tile(0, 0), Tile(0, 273, 112), Tile(2, 0, 1), Tile(ENTRIES, 5), Tile(63, 10**9, 9)]:
        assert parse_path(t.path()) == t
    assert Tile(1, 1, 17).path() == "tile/1/001.p/17"
    assert Tile(ENTRIES, 273, 112).path() == "tile/entries/273.p/112"


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/1",
        "tile/00/001",
        "tile/64/000",
        "tile/0/x000/001",  # a leading zero group is not how 1 is written
        "tile/0/001/002",
        "tile/0/001.p/256",
        "tile/0/001.p/0",
        "tile/0/001.p/012",
        "tile/data/000",
        "/tile/0/000",
        "tile/0/000/",
        "tile/entries/x1/000",
    ],
)
def test_bad_paths(path: str) -> None:
    with pytest.raises(TileError):
        parse_path(path)


def test_tiles_of_a_size() -> None:
    assert list(tiles(0)) == []
    assert [t.path() for t in tiles(256)] == ["tile/0/000", "tile/1/000.p/1", "tile/entries/000"]
    assert [t.path() for t in tiles(1)] == ["tile/0/000.p/1", "tile/entries/000.p/1"]
    big = list(tiles(70_000))
    assert sum(t.level == 0 and t.full for t in big) == 273
    assert [t for t in big if not t.full] == [
        Tile(0, 273, 112),
        Tile(1, 1, 17),
        Tile(2, 0, 1),
        Tile(ENTRIES, 273, 112),
    ]


def test_bundles() -> None:
    entries = [b"", b"a", b"x" * 300]
    data = format_bundle(entries)
    assert data[:2] == b"\x00\x00" and data[2:5] == b"\x00\x01a" and data[5:7] == b"\x01\x2c"
    assert parse_bundle(data, Tile(ENTRIES, 0, 3)) == entries
    for bad in (data[:-1], data + b"\x00", data[:4]):
        with pytest.raises(TileError):
            parse_bundle(bad, Tile(ENTRIES, 0, 3))
    with pytest.raises(TileError, match="entries, not 4"):
        parse_bundle(data, Tile(ENTRIES, 0, 4))
    with pytest.raises(TileError, match="uint16"):
        format_bundle([b"x" * 65536])


# --- the public Tessera log ----------------------------------------------------------------


def test_tessera_log_through_tile_reader(vectors: Path) -> None:
    """Tessera's tiles and bundles are byte for byte what layout builds from the same
    entries, and TileReader proves every entry against every one of its checkpoints."""
    log_dir = vectors / "tessera-log"
    v = Verifier.from_vkey(TESSERA_VKEY)
    leaves = merkle.leaf_hashes(TESSERA_ENTRIES)
    for size in range(1, 16):
        assert (log_dir / f"tile/0/000.p/{size}").read_bytes() == b"".join(leaves[:size])
        assert (log_dir / f"tile/entries/000.p/{size}").read_bytes() == format_bundle(
            TESSERA_ENTRIES[:size]
        )
        cp = parse_checkpoint(open_note((log_dir / f"checkpoint.{size}").read_text(), [v]).text)
        reader = TileReader(cp.size, cp.root, lambda p: (log_dir / p).read_bytes())
        assert reader.tree_root() == cp.root
        assert reader.entries(0) == TESSERA_ENTRIES[:size]
        for i in range(size):
            merkle.verify_inclusion(i, size, leaves[i], reader.inclusion_proof(i), cp.root)
        for old in range(1, size):
            old_cp = parse_checkpoint(
                open_note((log_dir / f"checkpoint.{old}").read_text(), [v]).text
            )
            proof = reader.consistency_proof(old)
            merkle.verify_consistency(old, size, old_cp.root, cp.root, proof)


def test_tile_reader_refuses_a_root_the_tiles_do_not_have(vectors: Path) -> None:
    log_dir = vectors / "tessera-log"
    reader = TileReader(15, b"\x00" * 32, lambda p: (log_dir / p).read_bytes())
    with pytest.raises(TileError, match="do not fold"):
        reader.inclusion_proof(3)


# --- a log's tiles ----------------------------------------------------------------------------


@pytest.fixture
def log(tmp_path: Path):
    lg = open_log(f"sqlite:///{tmp_path / 'log.db'}", new_signer())
    yield lg
    lg.close()


def _grow(log, n: int) -> None:
    rng = random.Random(n)
    for _ in range(n):
        log.append(submission(rng.randbytes(16)))


def test_log_tiles_by_path(log) -> None:
    _grow(log, 300)
    lt = LogTiles(log)
    level0 = lt.get("tile/0/000")
    assert level0 is not None and len(level0) == 8192
    assert level0[:32] == merkle.leaf_hash(log.entries(0, 1)[0])
    assert lt.get("tile/0/001.p/44") == b"".join(merkle.leaf_hashes(log.entries(256, 300)))
    assert lt.get("tile/1/000.p/1") == log.root(256)
    bundle = lt.get("tile/entries/001.p/44")
    assert bundle is not None and parse_bundle(bundle, Tile(ENTRIES, 1, 44)) == log.entries(
        256, 300
    )
    # Narrower partial tiles of sizes the log passed are there too; beyond its size, nothing.
    assert lt.get("tile/0/001.p/10") == b"".join(merkle.leaf_hashes(log.entries(256, 266)))
    for missing in ("tile/0/001.p/45", "tile/0/001", "tile/1/000", "tile/0/002.p/1", "nope"):
        assert lt.get(missing) is None


def test_sync_refuses_another_logs_directory(log, tmp_path: Path) -> None:
    _grow(log, 3)
    out = tmp_path / "out"
    sync(log, out)
    other = open_log(f"sqlite:///{tmp_path / 'other.db'}", new_signer("other.example/log"))
    _grow(other, 3)
    with pytest.raises(TileError, match="holds the tiles of"):
        sync(other, out)
    other.close()
    # Same origin and key, another tree (a replaced database): refused too.
    twin = open_log(f"sqlite:///{tmp_path / 'twin.db'}", log.signer)
    _grow(twin, 5)
    with pytest.raises(TileError, match="does not extend"):
        sync(twin, out)
    twin.close()


def test_sync_of_an_empty_log_writes_the_checkpoint_only(log, tmp_path: Path) -> None:
    result = sync(log, tmp_path / "out")
    assert result.written == ("checkpoint",) and result.size == 0
    assert (tmp_path / "out" / "checkpoint").read_text() == log.checkpoint()


def test_sync_while_the_log_grows(log, tmp_path: Path) -> None:
    """Each sync writes a consistent tree: its checkpoint's tiles are all there."""
    out = tmp_path / "out"
    for _ in range(4):
        _grow(log, 97)
        sync(log, out)
        cp = parse_checkpoint(
            open_note((out / "checkpoint").read_text(), [log.signer.verifier]).text
        )
        reader = TileReader(cp.size, cp.root, lambda p: (out / p).read_bytes())
        assert reader.tree_root() == cp.root
        last = (cp.size - 1) // 256
        assert reader.entries(last) == log.entries(last * 256, cp.size)
    assert not list(out.rglob("*.tmp"))
