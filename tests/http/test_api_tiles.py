"""/tlog: the log's C2SP tiles over HTTP, byte for byte what `tiles sync` writes, with the
caching headers a CDN needs, and enough for an audit from the tiles alone.

A log of 602 entries (600 appended in batches, two submitted as Bundles): level-0 tiles 000,
001 and 002.p/90, level 1 000.p/2, entry bundles likewise.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exchange.app import create_app
from exchange.config import Settings
from ledger.audit import audit
from ledger.tiles.source import open_tiles
from ledger.tiles.sync import sync
from tests.api_helpers import Api, is_outcome, observation_bundle, open_api, served
from tests.ledger_helpers import submission

IMMUTABLE = "public, max-age=31536000, immutable"


def _grow(api: Api, n: int) -> None:
    for start in range(0, n, 200):
        batch = [submission(os.urandom(16)) for _ in range(min(200, n - start))]
        api.services.log.append_batch(batch, receipts=False)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with open_api(tmp_path / "data") as a:
        _grow(a, 600)
        headers = a.credential()
        for value in ("120.5", "121.5"):
            assert a.post(observation_bundle(value), headers).status_code == 201
        yield a


def test_every_tile_over_http_is_what_sync_writes(api: Api, tmp_path: Path) -> None:
    out = tmp_path / "tiles"
    written = sync(api.services.log, out).written
    assert "tile/0/002.p/90" in written and "tile/1/000.p/2" in written
    assert "tile/entries/002.p/90" in written
    for path in written:
        r = api.client.get(f"/tlog/{path}")
        assert r.status_code == 200, path
        assert r.content == (out / path).read_bytes(), path
        if path == "checkpoint":
            assert r.headers["content-type"].startswith("text/plain")
            assert r.headers["cache-control"] == "public, max-age=10"
            continue
        assert r.headers["content-type"] == "application/octet-stream"
        full = ".p/" not in path
        assert r.headers["cache-control"] == (IMMUTABLE if full else "public, max-age=10"), path
    assert api.client.get("/tlog/checkpoint").text == api.services.log.checkpoint()
    nonsense = {"Authorization": "Bearer nonsense"}  # public: a credential is not even read
    assert api.client.get("/tlog/tile/0/001", headers=nonsense).is_success


def test_tiles_beyond_the_tree_or_off_the_spec_are_404(api: Api) -> None:
    # A narrower partial tile of the right edge stays readable (an older checkpoint needs it).
    assert api.client.get("/tlog/tile/0/002.p/40").status_code == 200
    assert api.client.get("/tlog/tile/entries/002.p/1").status_code == 200
    for path in (
        "tile/0/002",  # not full yet
        "tile/0/002.p/91",  # wider than the tree
        "tile/0/003",
        "tile/1/000",
        "tile/2/000.p/1",
        "tile/entries/003.p/1",
        "tile/0/1",  # not three digits
        "tile/0/x000/001",  # a leading zero group
        "tile/0/000.p/256",
        "tile/64/000",
        "tile/data/000",
        "tile/",
    ):
        r = api.client.get(f"/tlog/{path}")
        assert r.status_code == 404, path
        assert "tile/" in is_outcome(r)["issue"][0]["diagnostics"]


def test_an_audit_from_the_served_tiles_alone_passes(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data"), public_url="http://testserver")
    log = app.services.log
    log.append_batch([submission(os.urandom(16)) for _ in range(700)], receipts=False)
    with served(app) as base:
        source = open_tiles(f"{base}/tlog/", timeout=60)
        result = audit(source, [log.signer.verifier])
        assert result.status == "ok", result.error
        assert (result.size, result.entries_checked) == (700, 700)
        # The log grows under the reader: the next audit resumes from the state it kept.
        log.append_batch([submission(os.urandom(16)) for _ in range(60)], receipts=False)
        again = audit(open_tiles(f"{base}/tlog"), [log.signer.verifier], state=result.state)
        assert again.status == "ok" and again.size == 760 and again.entries_checked == 60
        assert httpx.get(f"{base}/tlog/tile/0/002.p/188").status_code == 200
