"""Files at rest: the data directory is the owner's alone, and the server says so when it is not.

The database holds sealed Bundles, salts and the pseudonym key; `vault.key` unwraps every
Bundle's key. A group- or world-readable copy of either on a shared host is a disclosure.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from exchange.config import Settings, exposed_state
from tests.api_helpers import observation_bundle, open_api
from tests.http.test_serve_uvicorn import ROOT, free_port, serving


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _state(data: Path) -> None:
    """A data directory with a database that has a WAL, a log key and a vault key."""
    with open_api(data) as api:
        assert api.post(observation_bundle(), api.credential()).status_code == 201
        files = {p.name: mode(p) for p in data.iterdir() if p.is_file()}
        assert {"medledger.db-wal", "medledger.db-shm"} <= files.keys()


def test_new_state_is_created_private_whatever_the_umask(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with umask(0o002):
        _state(data)
    assert mode(data) == 0o700
    for name in ("medledger.db", "log.key", "vault.key"):
        assert mode(data / name) == 0o600, name
    assert exposed_state(Settings(data_dir=data)) == []


def test_the_wal_and_shm_files_are_private_too(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with umask(0o002), open_api(data) as api:
        assert api.post(observation_bundle(), api.credential()).status_code == 201
        for name in ("medledger.db-wal", "medledger.db-shm"):
            assert mode(data / name) == 0o600, name


def test_exposed_state_names_each_readable_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _state(data)
    os.chmod(data, 0o755)
    os.chmod(data / "vault.key", 0o640)
    os.chmod(data / "medledger.db", 0o644)
    found = "\n".join(exposed_state(Settings(data_dir=data)))
    assert str(data) in found and "755" in found
    assert str(data / "vault.key") in found and "640" in found
    assert str(data / "medledger.db") in found and "644" in found
    assert "chmod" in found


def _serve(data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exchange.cli", "serve", "--data", str(data),
         "--port", str(free_port()), "--intake-workers", "0", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_production_refuses_readable_state(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _state(data)
    os.chmod(data, 0o750)
    os.chmod(data / "vault.key", 0o644)
    os.chmod(data / "medledger.db", 0o604)
    refused = _serve(data, "--production")
    assert refused.returncode == 3, refused.stderr
    assert "refusing to start" in refused.stderr
    for exposed in (data, data / "vault.key", data / "medledger.db"):
        assert f"{exposed} is open to group or others" in refused.stderr


def test_by_default_readable_state_is_a_warning(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _state(data)
    os.chmod(data / "vault.key", 0o644)
    with serving(data, "--intake-workers", "0") as (_, proc):
        pass
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert "warning" in err and str(data / "vault.key") in err
