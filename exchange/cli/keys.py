"""`medledger keys init|add|retire|list`: the log's key files, and rotation with overlap.

`init` creates the key files of a new log before its first start: the signing key (PKCS#8,
0600) at --key-file (or `log.key` in --data) and the vault's master key `vault.key` beside
it; the log keeps its last checkpoint (`checkpoint`) there too. It never replaces a file.

    medledger keys init --key-file /etc/medledger/log.key
    medledger serve --db postgresql+psycopg://medledger@db/medledger \\
        --key-file /etc/medledger/log.key

`add` generates a key (`keys/<key id>.key` beside log.key, PKCS#8, 0600) and appends its add
entry: from the next checkpoint on, the old and the new key both sign (the overlap). `retire
KEYID` appends the retire entry: checkpoints after it are no longer signed by that key. A
running server picks both up at its next batch. See ledger/keyset.py for the rule verifiers
apply. Exit codes: 0 ok; 1 usage (unknown key, last active key); 2 database unavailable;
3 malformed local state (key files).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from exchange.bootstrap import open_engine, open_log
from exchange.cli.exits import EXIT_MALFORMED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from exchange.config import Environment, add_state_options, settings_from_args
from exchange.keys.keyring import (
    KeyChange,
    Keyring,
    KeyringError,
    add_key,
    current_keyset,
    retire_key,
)
from exchange.vault import VaultError, load_master_key
from ledger.errors import LedgerError, LedgerUnavailable
from ledger.keys import KeyFileError, generate_key_file, load_signer
from ledger.log import Log


def register(sub: argparse._SubParsersAction[Any], env: Environment) -> None:
    p = sub.add_parser(
        "keys",
        help="the log's key files (init) and signing-key rotation (add, retire, list)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", required=True)
    i = actions.add_parser("init", help="create a new log's signing key and vault key")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    add_state_options(i, env)
    i.set_defaults(func=run_init)
    a = actions.add_parser("add", help="generate a key and start signing with it (overlap)")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    add_state_options(a, env)
    a.set_defaults(func=run_add)
    r = actions.add_parser("retire", help="stop signing with a key from the next checkpoint")
    r.add_argument("key_id", metavar="KEYID", help="the key's 8 hex digit id (keys list)")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    add_state_options(r, env)
    r.set_defaults(func=run_retire)
    ls = actions.add_parser("list", help="every key the log ever used, with its lifetime")
    ls.add_argument("--json", action="store_true", help="print the JSON of GET /v1/log/keys")
    add_state_options(ls, env)
    ls.set_defaults(func=run_list)


def _open(args: argparse.Namespace) -> tuple[Log, Keyring]:
    settings = settings_from_args(args)
    return open_log(settings, open_engine(settings))


def _fail(code: int, message: str) -> int:
    print(f"medledger keys: {message}", file=sys.stderr)
    return code


def _change(args: argparse.Namespace, change: KeyChange) -> None:
    if args.json:
        print(json.dumps(change.__dict__, indent=1))
    else:
        print(f"{change.action} key {change.key_id} as ledger entry {change.index}")
        print(f"  vkey: {change.vkey}")


def _run(args: argparse.Namespace, action: str) -> int:
    try:
        log, ring = _open(args)
        try:
            if action == "add":
                change = add_key(log, ring)
            else:
                change = retire_key(log, ring, args.key_id)
        finally:
            log.close()
    except KeyringError as e:
        return _fail(EXIT_USAGE, str(e))
    except KeyFileError as e:
        return _fail(EXIT_MALFORMED, str(e))
    except (LedgerUnavailable, SQLAlchemyError) as e:
        return _fail(EXIT_UNAVAILABLE, f"the database cannot be written: {e}")
    except (LedgerError, OSError) as e:
        return _fail(EXIT_MALFORMED, str(e))
    _change(args, change)
    return EXIT_OK


def run_init(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    key_path, vault_path = settings.signing_key_path, settings.vault_key_path
    for path in (key_path, vault_path):
        if path.exists():
            return _fail(EXIT_USAGE, f"{path} exists: keys init never replaces a key file")
    try:
        generate_key_file(key_path)
        load_master_key(vault_path, create=True)
        vkey = load_signer(key_path, settings.origin).verifier.vkey()
    except (OSError, LedgerError, VaultError) as e:
        return _fail(EXIT_MALFORMED, f"cannot create the key files: {e}")
    files = {
        "signing_key": str(key_path),
        "vault_key": str(vault_path),
        "checkpoint": str(settings.checkpoint_path),
    }
    if args.json:
        print(json.dumps({"vkey": vkey, **files}, indent=1))
        return EXIT_OK
    print(f"created the signing key {key_path} and the vault key {vault_path} (mode 0600)")
    print(f"  the log's verifier key: {vkey}")
    print(f"  the log will keep its last checkpoint in {settings.checkpoint_path}")
    print("  back up log.key and vault.key, never in the same backup as the database:")
    print("  whoever holds both can read every stored Bundle (docs/operations.md)")
    return EXIT_OK


def run_add(args: argparse.Namespace) -> int:
    return _run(args, "add")


def run_retire(args: argparse.Namespace) -> int:
    return _run(args, "retire")


def run_list(args: argparse.Namespace) -> int:
    try:
        log, ring = _open(args)
        try:
            keys = current_keyset(log, ring)
        finally:
            log.close()
    except KeyFileError as e:
        return _fail(EXIT_MALFORMED, str(e))
    except (LedgerUnavailable, SQLAlchemyError) as e:
        return _fail(EXIT_UNAVAILABLE, f"the database cannot be read: {e}")
    except LedgerError as e:
        return _fail(EXIT_MALFORMED, str(e))
    if args.json:
        print(json.dumps(keys.to_json(), indent=1))
        return EXIT_OK
    for k in keys.keys:
        added = "log start" if k.added is None else f"entry {k.added}"
        retired = "" if k.retired is None else f", retired by entry {k.retired}"
        print(f"{k.verifier.key_id.hex()}  {k.status():7}  added {added}{retired}")
        print(f"  {k.verifier.vkey()}")
    return EXIT_OK
