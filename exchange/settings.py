"""Where a log instance keeps its state: the --data / --db / --key-file options of every command."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from ledger.keys import load_or_create_signer, load_signer
from ledger.log import Log
from ledger.store import make_engine, sqlite_url

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

    @property
    def database_url(self) -> str:
        return self.db_url or sqlite_url(self.data_dir)

    @property
    def signing_key_path(self) -> Path:
        return self.key_file or self.data_dir / "log.key"

    @property
    def witness_path(self) -> Path:
        """The log's last checkpoint, also kept beside its key (ledger.witness)."""
        return self.signing_key_path.parent / "checkpoint"

    def open_log(self) -> Log:
        """Opens (creating on first use) the log with its signing key and its witness file,
        which makes the log refuse to append after the database was rolled back or replaced."""
        if self.db_url is None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.key_file is not None:
            signer = load_signer(self.key_file, self.origin)
        else:
            signer = load_or_create_signer(self.signing_key_path, self.origin)
        return Log(
            make_engine(self.database_url), signer, origin=self.origin, witness=self.witness_path
        )


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
