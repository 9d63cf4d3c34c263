"""`medledger institutions register-key|set|show`: the signed institution registry.

`set` signs a record (JSON file, fields of `exchange.institutions.Institution`) with the
admin's Ed25519 private key (PEM, PKCS#8) and appends it; `show --as-of DATE` replays the
log to answer what the registry said on that day.
Exit codes: 0 ok; 1 usage (bad record, key or signature); 2 database unavailable; 3 unknown org.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from sqlalchemy.exc import SQLAlchemyError

from exchange.bootstrap import open_engine, open_log
from exchange.cli.exits import EXIT_MALFORMED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from exchange.config import Environment, add_state_options, settings_from_args
from exchange.registry import institutions
from ledger.errors import LedgerUnavailable
from ledger.log import Log


def register(sub: argparse._SubParsersAction[Any], env: Environment) -> None:
    p = sub.add_parser("institutions", help="change or show the signed institution registry")
    actions = p.add_subparsers(dest="action", required=True)
    k = actions.add_parser("register-key", help="register an admin's Ed25519 key (PEM)")
    k.add_argument("--admin", required=True)
    k.add_argument("--key", required=True, type=Path, help="the admin's private key (PEM)")
    add_state_options(k, env)
    k.set_defaults(func=run_register_key)
    s = actions.add_parser("set", help="sign and append a new record for an institution")
    s.add_argument("--record", required=True, type=Path, help="the record as JSON")
    s.add_argument("--admin", required=True)
    s.add_argument("--key", required=True, type=Path, help="the admin's private key (PEM)")
    add_state_options(s, env)
    s.set_defaults(func=run_set)
    show = actions.add_parser("show", help="print a record (replayed from the log)")
    show.add_argument("--org", required=True)
    show.add_argument("--as-of", type=date.fromisoformat, help="YYYY-MM-DD (default: now)")
    add_state_options(show, env)
    show.set_defaults(func=run_show)


def open_log_of(args: argparse.Namespace) -> Log:
    settings = settings_from_args(args)
    return open_log(settings, open_engine(settings))[0]


def private_key(path: Path) -> Ed25519PrivateKey:
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def run_register_key(args: argparse.Namespace) -> int:
    try:
        key = private_key(args.key)
        log = open_log_of(args)
        institutions.register_admin_key(log.engine, args.admin, key.public_key())
        log.close()
    except (ValueError, OSError) as e:
        print(f"medledger institutions: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (LedgerUnavailable, SQLAlchemyError) as e:
        print(f"medledger institutions: the database cannot be written: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return EXIT_OK


def run_set(args: argparse.Namespace) -> int:
    def append(data: Any, key: Ed25519PrivateKey, log: Log) -> int:
        record = institutions.Institution.from_json(data)
        return institutions.append_attestation(
            log, institutions.sign_attestation(record, args.admin, key)
        )

    return sign_and_append(args, "institutions", append)


def sign_and_append(
    args: argparse.Namespace, command: str, append: Callable[[Any, Ed25519PrivateKey, Log], int]
) -> int:
    """`set` of a registry command: `append(the --record JSON, the --key, the log)` signs and
    appends the record; bad input exits 1, an unwritable database 2."""
    try:
        data = json.loads(args.record.read_text())
        key = private_key(args.key)
        log = open_log_of(args)
        try:
            index = append(data, key, log)
        finally:
            log.close()
    except (ValueError, KeyError, TypeError, OSError) as e:
        print(f"medledger {command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (LedgerUnavailable, SQLAlchemyError) as e:
        print(f"medledger {command}: the database cannot be written: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print(f"appended as ledger entry {index}")
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    try:
        log = open_log_of(args)
        try:
            registry = institutions.registry_as_of(log, args.as_of)
        finally:
            log.close()
    except institutions.RegistryError as e:
        print(f"medledger institutions: the log does not replay: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (LedgerUnavailable, SQLAlchemyError) as e:
        print(f"medledger institutions: the database cannot be read: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    found = registry.get(args.org)
    if found is None:
        print(f"medledger institutions: {args.org} is not in the registry", file=sys.stderr)
        return EXIT_MALFORMED
    print(json.dumps(found.to_json(), ensure_ascii=False, indent=2))
    return EXIT_OK
