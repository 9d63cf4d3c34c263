"""Where a log instance keeps its state: the --data / --db / --key-file options of every command."""

from __future__ import annotations

import argparse
import os
import stat
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from exchange.keys.keyring import Keyring, KeyringError, open_keyring
from ledger import store
from ledger.log import Log
from ledger.store import make_engine, sqlite_url

if TYPE_CHECKING:
    from exchange.vault.vault import MasterKey

DEFAULT_DATA_DIR = Path("medledger-data")
DEFAULT_ORIGIN = "medledger.example/log"


@dataclass(frozen=True)
class Settings:
    """One log instance's configuration.

    With `db_url` unset the embedded SQLite database lives in `data_dir`, beside the log's
    signing key `data_dir/log.key` (created on first use). With `db_url` (PostgreSQL) the key
    comes from `key_file`, which must already exist unless `data_dir` holds it.
    """

    data_dir: Path = DEFAULT_DATA_DIR
    db_url: str | None = None
    key_file: Path | None = None
    origin: str = DEFAULT_ORIGIN
    # How long a Bulk Data export job and its files are kept after the kick-off.
    export_ttl: timedelta = timedelta(hours=24)

    @property
    def database_url(self) -> str:
        return self.db_url or sqlite_url(self.data_dir)

    @property
    def signing_key_path(self) -> Path:
        return self.key_file or self.data_dir / "log.key"

    @property
    def vault_key_path(self) -> Path:
        """The vault's master key (base64), beside the signing key (exchange.vault)."""
        return self.signing_key_path.parent / "vault.key"

    def vault_master_key(self, *, vault_is_empty: bool = False) -> MasterKey:
        """MEDLEDGER_VAULT_KEY, else `vault_key_path`, created on first use (mode 0600). With
        an explicit --key-file it is created only while the vault holds no key yet, so a
        forgotten key file is never silently replaced. Losing it loses every stored Bundle:
        back it up apart from the database (docs/privacy.md)."""
        from exchange.vault.vault import load_master_key

        create = self.key_file is None or vault_is_empty
        return load_master_key(self.vault_key_path, create=create)

    @property
    def witness_path(self) -> Path:
        """The log's last checkpoint, also kept beside its key (ledger.witness)."""
        return self.signing_key_path.parent / "checkpoint"

    def open_engine(self) -> Engine:
        """The database's engine; with `data_dir` the directory is made first, mode 0700."""
        if self.db_url is None:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return make_engine(self.database_url)

    def open_log(self) -> Log:
        """Opens (creating on first use) the log with its signing key and its witness file,
        which makes the log refuse to append after the database was rolled back or replaced."""
        return self.open_log_with_keys()[0]

    def open_log_with_keys(self) -> tuple[Log, Keyring]:
        """The log and its keyring: every checkpoint is signed by each key active at its size
        (`log.key` and the keys added since, `keys/<key id>.key` beside it; docs/operations.md)."""
        engine = self.open_engine()
        store.create_schema(engine)
        ring = open_keyring(
            engine, self.origin, self.signing_key_path, create=self.key_file is None
        )
        with engine.connect() as conn:
            head = store.read_head(conn)
            keys = ring.keyset(conn)
        active = keys.active_at(0 if head is None else head[1])
        held = [s for k in active if (s := ring.signer_for(k.verifier.key_id)) is not None]
        if not held:
            raise KeyringError(
                f"none of the log's active keys is held in {ring.first_key} or {ring.keys_dir}"
            )
        log = Log(
            engine,
            held[0],
            origin=self.origin,
            witness=self.witness_path,
            signers_at=ring.signers_at,
            verifiers=keys.verifiers(),
        )
        return log, ring


def exposed_state(settings: Settings) -> list[str]:
    """The log's private files that group or others may open, each with the command that
    closes it: the data directory, the SQLite database with its -wal and -shm files, and
    vault.key. (A log key so exposed is refused outright: ledger.keys.load_signer.)"""
    private: list[tuple[Path, int]] = []
    if settings.db_url is None:
        private.append((settings.data_dir, 0o700))
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database:
        private += [(Path(url.database + suffix), 0o600) for suffix in ("", "-wal", "-shm")]
    private.append((settings.vault_key_path, 0o600))
    found = []
    for path, wanted in private:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            found.append(
                f"{path} is open to group or others (mode {mode:o}): run chmod {wanted:o} {path}"
            )
    return found


def add_state_options(parser: argparse.ArgumentParser) -> None:
    """The options every command that touches a log's local state takes."""
    g = parser.add_argument_group("log state")
    g.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("MEDLEDGER_DATA", DEFAULT_DATA_DIR)),
        help="directory of the embedded SQLite database and log.key (default ./medledger-data)",
    )
    g.add_argument(
        "--db",
        default=os.environ.get("MEDLEDGER_DB"),
        help="database URL instead of --data, e.g. postgresql+psycopg://user@host/db",
    )
    g.add_argument("--key-file", type=Path, help="the log's PKCS#8 Ed25519 key (with --db)")
    g.add_argument(
        "--origin",
        default=os.environ.get("MEDLEDGER_ORIGIN", DEFAULT_ORIGIN),
        help="the log's checkpoint origin and key name (default %(default)s)",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings(data_dir=args.data, db_url=args.db, key_file=args.key_file, origin=args.origin)
