"""A consistent copy of a running log's state, for backups (docs/operations.md).

What is copied, and in which order, follows from how the log defends itself against rollback
(ledger.last_checkpoint): the `checkpoint` file is copied first and the database after it, so
the copy's database holds at least the tree its checkpoint file names and opens writable. The
signing keys go with it; the vault's master key never does (whoever holds the database and
that key reads every stored Bundle), so it is copied only to a separate place when asked.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from ledger.keys import create_private_file


class BackupError(Exception):
    """The backup cannot be made (the target exists, a file cannot be read or written)."""


@dataclass(frozen=True)
class Backup:
    """What a backup wrote: files under `out`, the vault key's copy (if any) elsewhere."""

    out: Path
    files: tuple[str, ...]
    database: bool
    vault_key: Path | None


def backup(
    database_url: str,
    key_file: Path,
    out: Path,
    vault_key: Path | None = None,
    vault_key_out: Path | None = None,
) -> Backup:
    """Copies the checkpoint file, then the SQLite database (the online backup API: a
    consistent snapshot while the service writes), then the signing keys, into the new
    directory `out`; with `vault_key_out`, the vault key to that separate new file. A
    PostgreSQL database is not copied here (pg_dump or the server's own backups do that:
    docs/operations.md); its key files and checkpoint are."""
    if out.exists():
        raise BackupError(f"{out} exists: back up into a new directory")
    if vault_key_out is not None and vault_key_out.resolve().is_relative_to(out.resolve()):
        raise BackupError("the vault key must not go into the same backup as the database")
    state = key_file.parent
    out.mkdir(parents=True, mode=0o700)
    written: list[str] = []
    try:
        checkpoint = state / "checkpoint"
        if checkpoint.exists():
            _copy(checkpoint, out / "checkpoint")
            written.append("checkpoint")
        url = make_url(database_url)
        is_sqlite = url.get_backend_name() == "sqlite"
        if is_sqlite and url.database:
            _sqlite_backup(Path(url.database), out / "medledger.db")
            written.append("medledger.db")
        _copy(key_file, out / "log.key")
        written.append("log.key")
        keys = state / "keys"
        if keys.is_dir():
            for k in sorted(keys.glob("*.key")):
                _copy(k, out / "keys" / k.name)
                written.append(f"keys/{k.name}")
        if vault_key_out is not None:
            if vault_key is None or not vault_key.exists():
                raise BackupError("there is no vault key file to copy (MEDLEDGER_VAULT_KEY?)")
            _copy(vault_key, vault_key_out)
    except (OSError, sqlite3.Error) as e:
        raise BackupError(f"the backup into {out} failed: {e}") from e
    return Backup(out, tuple(written), is_sqlite, vault_key_out)


def _copy(src: Path, dst: Path) -> None:
    """A private copy (0600), written whole or not at all."""
    create_private_file(dst, src.read_bytes())


def _sqlite_backup(src: Path, dst: Path) -> None:
    if not src.exists():
        raise BackupError(f"no database at {src}")
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # 0600 before SQLite opens it
    os.close(fd)
    source = sqlite3.connect(src)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)  # pages copied under a read snapshot: consistent while written
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        target.close()
        source.close()
    with open(dst, "rb") as f:
        os.fsync(f.fileno())


__all__ = ["Backup", "BackupError", "backup"]
