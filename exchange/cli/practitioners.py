"""`medledger practitioners set|show`: practitioners' licences on the ledger.

`set` signs a licence (JSON file, fields of `exchange.registry.practitioners.Licence`) with a
registry admin's Ed25519 private key (PEM, PKCS#8; the key `medledger institutions
register-key` registered) and appends it; `show` prints a practitioner's current licences.
Exit codes: 0 ok; 1 usage (bad licence, key or signature); 2 database unavailable; 3 unknown
practitioner.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.exc import SQLAlchemyError

from exchange.cli.exits import EXIT_MALFORMED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from exchange.cli.institutions import open_log_of, sign_and_append
from exchange.config import Environment, add_state_options
from exchange.registry import institutions, practitioners
from ledger.errors import LedgerUnavailable
from ledger.log import Log


def register(sub: argparse._SubParsersAction[Any], env: Environment) -> None:
    p = sub.add_parser("practitioners", help="record or show practitioners' licences")
    actions = p.add_subparsers(dest="action", required=True)
    s = actions.add_parser("set", help="sign and append a practitioner's licence")
    s.add_argument("--record", required=True, type=Path, help="the licence as JSON")
    s.add_argument("--admin", required=True)
    s.add_argument("--key", required=True, type=Path, help="the admin's private key (PEM)")
    add_state_options(s, env)
    s.set_defaults(func=run_set)
    show = actions.add_parser("show", help="print a practitioner's current licences")
    show.add_argument("--practitioner", required=True)
    add_state_options(show, env)
    show.set_defaults(func=run_show)


def run_set(args: argparse.Namespace) -> int:
    def append(data: Any, key: Ed25519PrivateKey, log: Log) -> int:
        licence = practitioners.Licence.from_json(data)
        return practitioners.append_licence(
            log, practitioners.sign_licence(licence, args.admin, key)
        )

    return sign_and_append(args, "practitioners", append)


def run_show(args: argparse.Namespace) -> int:
    try:
        log = open_log_of(args)
        try:
            found = practitioners.attested_licences(log, args.practitioner)
        finally:
            log.close()
    except institutions.RegistryError as e:
        print(f"medledger practitioners: the log does not match: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (LedgerUnavailable, SQLAlchemyError) as e:
        print(f"medledger practitioners: the database cannot be read: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if not found:
        print(f"medledger practitioners: {args.practitioner} has no licence", file=sys.stderr)
        return EXIT_MALFORMED
    shown = [{"index": a.index, **a.attestation.licence.to_json()} for a in found]
    print(json.dumps(shown, ensure_ascii=False, indent=2))
    return EXIT_OK
