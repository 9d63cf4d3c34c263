"""Every setting of a log instance, and every environment variable the exchange reads.

:class:`Environment` reads the environment, once per process start (`medledger` reads it
before it parses its arguments): nothing else in the exchange looks at os.environ.
:class:`Settings` is one log instance's configuration, made from the command line and the
environment (:func:`settings_from_args`) or directly. docs/operations.md lists each
variable.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from ledger.store import make_engine, sqlite_url

DEFAULT_DATA_DIR = Path("medledger-data")
DEFAULT_ORIGIN = "medledger.example/log"
VAULT_KEY_ENV = "MEDLEDGER_VAULT_KEY"
INSTITUTIONS_STRICT_ENV = "MEDLEDGER_INSTITUTIONS_STRICT"
ADMIN_TOKEN_ENV = "MEDLEDGER_ADMIN_TOKEN"


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Environment:
    """The environment variables the exchange reads (docs/operations.md), read once."""

    data: str | None = None  # MEDLEDGER_DATA: --data
    db: str | None = None  # MEDLEDGER_DB: --db
    origin: str | None = None  # MEDLEDGER_ORIGIN: --origin
    vault_key: str | None = field(default=None, repr=False)  # MEDLEDGER_VAULT_KEY
    institutions_strict: bool = False  # MEDLEDGER_INSTITUTIONS_STRICT
    production: bool = False  # MEDLEDGER_PRODUCTION: serve --production
    rate_limit: str | None = None  # MEDLEDGER_RATE_LIMIT: serve --rate-limit
    burst: str | None = None  # MEDLEDGER_RATE_BURST: serve --burst
    export_ttl: str | None = None  # MEDLEDGER_EXPORT_TTL: serve --export-ttl
    delivery_give_up: str | None = None  # MEDLEDGER_DELIVERY_GIVE_UP: serve --delivery-give-up
    public_url: str | None = None  # MEDLEDGER_PUBLIC_URL: serve --public-url
    policy: str | None = None  # MEDLEDGER_POLICY: serve --policy
    token: str | None = field(default=None, repr=False)  # MEDLEDGER_TOKEN: audit --token
    admin_token: str | None = field(default=None, repr=False)  # MEDLEDGER_ADMIN_TOKEN: erase
    log_format: str | None = None  # MEDLEDGER_LOG_FORMAT: serve --log-format

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> Environment:
        env = os.environ if environ is None else environ
        return cls(
            data=env.get("MEDLEDGER_DATA"),
            db=env.get("MEDLEDGER_DB"),
            origin=env.get("MEDLEDGER_ORIGIN"),
            vault_key=env.get(VAULT_KEY_ENV) or None,
            institutions_strict=_flag(env.get(INSTITUTIONS_STRICT_ENV)),
            production=env.get("MEDLEDGER_PRODUCTION", "") not in ("", "0"),
            rate_limit=env.get("MEDLEDGER_RATE_LIMIT"),
            burst=env.get("MEDLEDGER_RATE_BURST"),
            export_ttl=env.get("MEDLEDGER_EXPORT_TTL"),
            delivery_give_up=env.get("MEDLEDGER_DELIVERY_GIVE_UP"),
            public_url=env.get("MEDLEDGER_PUBLIC_URL"),
            policy=env.get("MEDLEDGER_POLICY") or None,
            token=env.get("MEDLEDGER_TOKEN"),
            admin_token=env.get(ADMIN_TOKEN_ENV),
            log_format=env.get("MEDLEDGER_LOG_FORMAT") or None,
        )


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
    # The vault's master key, base64 (MEDLEDGER_VAULT_KEY); None: the file vault.key.
    vault_key: str | None = field(default=None, repr=False)
    # A sender without an institution registry record is refused (MEDLEDGER_INSTITUTIONS_STRICT).
    institutions_strict: bool = False
    # A witness policy (C2SP tlog-policy, MEDLEDGER_POLICY): its witnesses cosign the log's
    # checkpoints, and readers are served the newest one its quorum cosigned.
    policy: Path | None = None
    # Deliveries to home hospitals (exchange.outbox): the first wait after a failed attempt,
    # the longest wait, when to give up (MEDLEDGER_DELIVERY_GIVE_UP), one attempt's timeout
    # (seconds) and how often the outbox is looked at (seconds).
    delivery_first_wait: timedelta = timedelta(seconds=1)
    delivery_max_wait: timedelta = timedelta(hours=1)
    delivery_give_up: timedelta = timedelta(hours=24)
    delivery_timeout: float = 30.0
    delivery_poll: float = 1.0

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

    @property
    def checkpoint_path(self) -> Path:
        """The log's last checkpoint, also kept beside its key (ledger.last_checkpoint)."""
        return self.signing_key_path.parent / "checkpoint"

    @property
    def witnessed_path(self) -> Path:
        """The newest checkpoint the policy's quorum cosigned, kept beside the last one, so
        a restarted server serves it before its witnesses answer again."""
        return self.signing_key_path.parent / "witnessed-checkpoint"

    def open_engine(self) -> Engine:
        """The database's engine; with `data_dir` the directory is made first, mode 0700."""
        if self.db_url is None:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return make_engine(self.database_url)


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


def add_state_options(parser: argparse.ArgumentParser, env: Environment) -> None:
    """The options every command that touches a log's local state takes."""
    g = parser.add_argument_group("log state")
    g.add_argument(
        "--data",
        type=Path,
        default=Path(env.data) if env.data else DEFAULT_DATA_DIR,
        help="directory of the embedded SQLite database and log.key (default ./medledger-data)",
    )
    g.add_argument(
        "--db",
        default=env.db,
        help="database URL instead of --data, e.g. postgresql+psycopg://user@host/db",
    )
    g.add_argument("--key-file", type=Path, help="the log's PKCS#8 Ed25519 key (with --db)")
    parser.set_defaults(environment=env)
    g.add_argument(
        "--origin",
        default=env.origin or DEFAULT_ORIGIN,
        help="the log's checkpoint origin and key name (default %(default)s)",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    env: Environment = args.environment
    return Settings(
        data_dir=args.data,
        db_url=args.db,
        key_file=args.key_file,
        origin=args.origin,
        vault_key=env.vault_key,
        institutions_strict=env.institutions_strict,
    )


# --- logs ------------------------------------------------------------------------------------

LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, RFC 3339, milliseconds), level, logger, message,
    and the traceback as `exception` when there is one. The message is the record's own: the
    exchange logs no patient data (docs/operations.md, "Logging"), and a newline inside it is
    escaped, so a line is always one record."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        out = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_json_logging(level: int = logging.INFO) -> None:
    """Every record of the process, the server's own included, to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def json_logging() -> bool:
    """Whether configure_json_logging set up this process: then what a command would print to
    stderr for the operator goes through logging instead, so every stderr line is JSON."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
