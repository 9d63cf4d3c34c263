"""Auditing a log from its C2SP tiles alone: ledger.tiles.source over a real HTTP server
(the standard library's http.server serving a directory ledger.tiles.sync wrote) and over the
directory itself.

A real log of 3,000 entries (12 bundles, the last partial; level-0 tiles 000..010 and
011.p/184; level-1 000.p/11). The audit passes, resumes, and starts --from an entry; a
flipped byte anywhere in a tile is exit class 4 (the tamper finding, code "tile") or, where
it breaks a length prefix, 3 (malformed), never a pass; truncated or garbage tiles and
answers past their caps are 3; a host that is down, a missing tile and a run out of time
are 2.
"""

from __future__ import annotations

import random
import shutil
import socket
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.audit import SourceMalformed, SourceUnavailable, audit, parse_state
from ledger.tiles import TILE_WIDTH, parse_path
from ledger.tiles.source import open_tiles
from ledger.tiles.sync import sync

from ..ledger_helpers import new_signer, open_log, submission
from ..tile_helpers import serve_directory

SIZE = 3000


def _grow(log, n: int, seed: int) -> None:
    rng = random.Random(seed)
    while n:
        k = min(n, rng.randint(50, 400))
        log.append_batch([submission(rng.randbytes(16)) for _ in range(k)], receipts=False)
        n -= k


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A log of SIZE entries and its tiles, synced once; tests copy the directory."""
    d = tmp_path_factory.mktemp("tiles")
    signer = new_signer()
    log = open_log(f"sqlite:///{d / 'log.db'}", signer)
    _grow(log, SIZE, 1)
    sync(log, d / "clean")
    yield log, signer, d / "clean"
    log.close()


@pytest.fixture
def tiles(built, tmp_path: Path):
    log, signer, clean = built
    out = tmp_path / "tiles"
    shutil.copytree(clean, out)
    return log, signer, out


def test_the_tiles_hold_the_layout_the_docstring_names(tiles) -> None:
    _, _, d = tiles
    names = {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()}
    assert {"tile/0/010", "tile/0/011.p/184", "tile/1/000.p/11", "tile/entries/011.p/184"} <= names


def test_audit_from_tiles_over_http(tiles) -> None:
    log, signer, d = tiles
    with serve_directory(d) as url:
        src = open_tiles(url, timeout=60)
        try:
            r = audit(src, [signer.verifier])
        finally:
            src.close()
    assert r.ok, r.error
    assert (r.size, r.root, r.entries_checked) == (SIZE, log.root(SIZE), SIZE)
    assert r.checkpoint == (d / "checkpoint").read_text()
    assert r.state is not None and r.state.size == SIZE


def test_audit_from_gzipped_tiles(tiles) -> None:
    _, signer, d = tiles
    with serve_directory(d, "gzip") as url:
        src = open_tiles(url)
        try:
            assert audit(src, [signer.verifier]).ok
        finally:
            src.close()


def test_audit_resumes_from_its_state_and_proves_consistency_from_tiles(built, tmp_path) -> None:
    """Grows a log of its own (the module's log stays at SIZE for the other tests)."""
    _, _, clean = built
    signer = new_signer()
    log = open_log(f"sqlite:///{tmp_path / 'log.db'}", signer)
    try:
        _grow(log, 700, 2)
        d = tmp_path / "tiles"
        sync(log, d)
        first = audit(open_tiles(str(d)), [signer.verifier])
        assert first.ok and first.state is not None
        state = parse_state(first.state.to_json(), tmp_path / "state", [signer.verifier])
        _grow(log, 900, 3)
        sync(log, d)
        with serve_directory(d) as url:
            src = open_tiles(url)
            try:
                again = audit(src, [signer.verifier], state=state)
            finally:
                src.close()
        assert again.ok, again.error
        assert again.entries_checked == 900 and again.start == 700
        assert again.consistency is not None and again.consistency[:2] == (700, 1600)
    finally:
        log.close()


def test_audit_from_an_entry_binds_the_tree_before_it_by_an_inclusion_proof(tiles) -> None:
    _, signer, d = tiles
    r = audit(open_tiles(str(d)), [signer.verifier], from_index=1000)
    assert r.ok and r.start == 1000 and r.entries_checked == SIZE - 1000


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("path", "offset", "index"),
    [
        ("tile/entries/001", 2 + 40, 256),  # inside entry 256's bytes (after its length)
        ("tile/entries/011.p/184", 2 + 40, 2816),  # the partial bundle's first entry
        ("tile/0/002", 100, 512),  # a full level-0 tile: named by its first entry
        ("tile/0/011.p/184", 7, SIZE - 1),  # the right edge: named by the last entry
        ("tile/1/000.p/11", 300, SIZE - 1),
    ],
)
def test_a_flipped_byte_in_a_tile_is_the_tamper_finding(tiles, path, offset, index) -> None:
    _, signer, d = tiles
    _flip(d / path, offset)
    with serve_directory(d) as url:
        src = open_tiles(url)
        try:
            r = audit(src, [signer.verifier])
        finally:
            src.close()
    assert r.status == "failed"  # exit 4
    assert r.error is not None and r.error.code == "tile" and r.error.index == index
    assert r.state is None


def test_a_checkpoint_of_another_tree_over_these_tiles_fails(tiles, tmp_path) -> None:
    log, signer, d = tiles
    other = open_log(f"sqlite:///{tmp_path / 'other.db'}", signer)
    try:
        _grow(other, SIZE, 9)  # same key, same size, other entries: a split view
        (d / "checkpoint").write_text(other.checkpoint())
    finally:
        other.close()
    r = audit(open_tiles(str(d)), [signer.verifier])
    assert r.status == "failed" and r.error is not None and r.error.code == "tile"


_TILE_FILES = sorted(
    [f"tile/0/{i:03d}" for i in range(11)]
    + [f"tile/entries/{i:03d}" for i in range(11)]
    + ["tile/0/011.p/184", "tile/entries/011.p/184", "tile/1/000.p/11"]
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(which=st.sampled_from(_TILE_FILES), at=st.integers(0, 10**6), bit=st.integers(0, 7))
def test_no_flipped_bit_in_any_tile_passes(tiles, which: str, at: int, bit: int) -> None:
    """For every tile and every bit in it: the audit fails (4) or the tile is malformed (3,
    a length prefix of a bundle broken); it never passes and never raises anything else."""
    _, signer, d = tiles
    path = d / which
    clean = path.read_bytes()
    data = bytearray(clean)
    data[at % len(data)] ^= 1 << bit
    path.write_bytes(bytes(data))
    try:
        r = audit(open_tiles(str(d)), [signer.verifier])
        assert r.status == "failed" and r.error is not None and r.error.code == "tile"
    except SourceMalformed:
        assert parse_path(which).level == -1  # only a bundle can stop parsing
    finally:
        path.write_bytes(clean)


@pytest.mark.parametrize(
    ("path", "damage"),
    [
        ("tile/0/003", lambda b: b[:-1]),  # truncated hash tile
        ("tile/1/000.p/11", lambda b: b + b"\0"),  # one byte too many
        ("tile/entries/004", lambda b: b[: len(b) // 2]),  # a bundle cut inside an entry
        ("tile/entries/005", lambda b: b + b"\x00"),  # ends inside a length prefix
        ("tile/entries/011.p/184", lambda b: random.Random(1).randbytes(len(b))),  # garbage
        ("tile/0/004", lambda b: b * 2),  # past the 8,192-byte cap of a hash tile
    ],
)
def test_truncated_or_garbage_tiles_are_malformed(tiles, path, damage) -> None:
    _, signer, d = tiles
    f = d / path
    f.write_bytes(damage(f.read_bytes()))
    for where in ("dir", "http"):
        if where == "dir":
            with pytest.raises(SourceMalformed, match=path.replace(".", r"\.")):
                audit(open_tiles(str(d)), [signer.verifier])
            continue
        with serve_directory(d) as url:
            src = open_tiles(url)
            try:
                with pytest.raises(SourceMalformed):  # exit 3
                    audit(src, [signer.verifier])
            finally:
                src.close()


def test_an_oversized_bundle_answer_is_malformed_before_it_is_read(tiles) -> None:
    _, signer, d = tiles
    (d / "tile/entries/002").write_bytes(b"\0" * (3 << 20))  # past 1 MiB + 2 KiB an entry
    with serve_directory(d) as url:
        src = open_tiles(url)
        try:
            with pytest.raises(SourceMalformed, match="more than"):
                audit(src, [signer.verifier])
        finally:
            src.close()


def test_gzip_that_does_not_inflate_is_malformed(tiles) -> None:
    _, signer, d = tiles
    with serve_directory(d, "gzip") as url:
        (d / "tile/0/001").write_bytes(b"not gzip once the server compresses it")
        src = open_tiles(url)
        try:
            # The server gzips whatever the file holds: this file is 39 bytes, not 8,192.
            with pytest.raises(SourceMalformed):
                audit(src, [signer.verifier])
        finally:
            src.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_host_is_unavailable_not_malformed(tiles) -> None:
    _, signer, _ = tiles
    src = open_tiles(f"http://127.0.0.1:{_closed_port()}/tlog")
    with pytest.raises(SourceUnavailable) as e:
        audit(src, [signer.verifier])
    assert not isinstance(e.value, SourceMalformed)  # exit 2


def test_a_missing_tile_is_unavailable(tiles) -> None:
    _, signer, d = tiles
    (d / "tile/0/007").unlink()
    for make in (lambda: open_tiles(str(d)),):
        with pytest.raises(SourceUnavailable, match="tile/0/007") as e:
            audit(make(), [signer.verifier])
        assert not isinstance(e.value, SourceMalformed)
    with serve_directory(d) as url:
        src = open_tiles(url)
        try:
            with pytest.raises(SourceUnavailable, match="404") as e:
                audit(src, [signer.verifier])
            assert not isinstance(e.value, SourceMalformed)
        finally:
            src.close()


def test_no_directory_is_unavailable(tmp_path) -> None:
    with pytest.raises(SourceUnavailable, match="not a directory"):
        open_tiles(str(tmp_path / "nowhere"))


def test_a_trickling_host_ends_at_the_deadline(tiles) -> None:
    """One byte every 0.2 s keeps each read inside its own limit; the whole run's deadline
    still ends it (exit 2)."""
    _, signer, d = tiles
    with serve_directory(d, "trickle") as url:
        src = open_tiles(url, timeout=1.0)
        t0 = time.monotonic()
        try:
            with pytest.raises(SourceUnavailable, match="time limit") as e:
                audit(src, [signer.verifier])
        finally:
            src.close()
        assert time.monotonic() - t0 < 5
        assert not isinstance(e.value, SourceMalformed)


def test_entries_are_served_in_pages_across_bundles(tiles) -> None:
    log, signer, d = tiles
    src = open_tiles(str(d))
    src.checkpoint()
    assert src.entries(250, 250 + 2 * TILE_WIDTH) == log.entries(250, 250 + 2 * TILE_WIDTH)
    assert src.entries(SIZE - 3, SIZE + 10) == log.entries(SIZE - 3, SIZE)
    assert src.inclusion_proof(17, 2000) == log.inclusion_proof(17, 2000)
    assert src.consistency_proof(1000, SIZE) == log.consistency_proof(1000, SIZE)
    assert src.checkpoints(0, SIZE) is None and src.stored_hashes(0, 10) is None
    assert src.beyond(SIZE) == (None, None)
