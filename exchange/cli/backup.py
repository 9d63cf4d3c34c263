"""`medledger backup`: a consistent copy of a log's state while it serves (docs/operations.md).

    medledger backup --data ./medledger-data --out /backups/2026-12-07
    medledger backup --data ./medledger-data --out /backups/2026-12-07 \\
        --vault-key-out /vault-backups/2026-12-07.vault.key
    medledger backup --db postgresql+psycopg://medledger@db/medledger \\
        --key-file /etc/medledger/log.key --out /backups/2026-12-07

Writes, into the new directory --out: the `checkpoint` file, then the SQLite database (an
online backup: consistent while the service writes), then `log.key` and `keys/*.key`. The
vault's master key is never written there: whoever holds a database and its vault key reads
every stored Bundle, so it goes, with --vault-key-out, to a separate place. A PostgreSQL
database is copied by the server's own tools (pg_dump or base backups with WAL archiving),
after this command has copied the key files and checkpoint. Exit codes: 0 written; 1 usage
(the target exists, the vault key into the backup); 3 a file cannot be read or written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from exchange.cli.exits import EXIT_MALFORMED, EXIT_OK, EXIT_USAGE
from exchange.config import Environment, add_state_options, settings_from_args
from exchange.store.backup import BackupError, backup


def register(sub: argparse._SubParsersAction[Any], env: Environment) -> None:
    p = sub.add_parser(
        "backup",
        help="copy the log's database, checkpoint and signing keys while it serves",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, type=Path, help="a new directory for the backup")
    p.add_argument(
        "--vault-key-out",
        type=Path,
        help="also copy the vault key to this new file, kept apart from the backup",
    )
    add_state_options(p, env)
    p.set_defaults(func=run_backup)


def run_backup(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.out.exists():
        return _fail(EXIT_USAGE, f"{args.out} exists: back up into a new directory")
    if not settings.signing_key_path.exists():
        return _fail(EXIT_MALFORMED, f"no signing key at {settings.signing_key_path}")
    try:
        done = backup(
            settings.database_url,
            settings.signing_key_path,
            args.out,
            settings.vault_key_path,
            args.vault_key_out,
        )
    except BackupError as e:
        code = EXIT_USAGE if "must not go into" in str(e) else EXIT_MALFORMED
        return _fail(code, str(e))
    print(f"backed up into {done.out}: {', '.join(done.files)}")
    if not done.database:
        print(
            "  the PostgreSQL database is not in it: dump it now, after these files, with\n"
            f"  pg_dump --format=custom --file {done.out}/medledger.dump '<the database URL>'"
        )
    if done.vault_key is None:
        print(
            f"  the vault key is not in it: keep a copy of {settings.vault_key_path} (or "
            "MEDLEDGER_VAULT_KEY) apart from every database backup"
        )
    else:
        print(f"  the vault key is in {done.vault_key}: keep it apart from the backup")
    return EXIT_OK


def _fail(code: int, message: str) -> int:
    print(f"medledger backup: {message}", file=sys.stderr)
    return code
