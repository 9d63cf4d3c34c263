"""`medledger recipients set|show`: where a data recipient is and the legal basis for it.

Every disclosure to a recipient outside China passes the cross-border gate
(:mod:`exchange.crossborder`); an unrecorded recipient has no legal basis and gets nothing.
Exit codes: 0 ok; 1 usage (a bad country or basis); 2 database unavailable; 3 not recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from exchange.bootstrap import open_engine
from exchange.cli.exits import EXIT_MALFORMED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from exchange.config import Environment, add_state_options, settings_from_args
from exchange.consent.crossborder import (
    BASIS_KINDS,
    LegalBasis,
    Recipient,
    recipient_of,
    set_recipient,
)
from ledger.errors import LedgerUnavailable

EPILOG = """\
examples:
  medledger recipients set --org insurer-kr --country KR --basis standard-contract \\
      --reference 琼网信备2026-0042
  medledger recipients set --org assist-de --country DE --basis emergency
  medledger recipients show --org insurer-kr --json
"""


def register(sub: argparse._SubParsersAction[Any], env: Environment) -> None:
    p = sub.add_parser(
        "recipients",
        help="record where data recipients are and the legal basis of transfers to them",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", required=True)
    s = actions.add_parser("set", help="record or replace a recipient")
    s.add_argument("--org", required=True, help="the recipient's Organization id")
    s.add_argument("--country", required=True, help="ISO 3166-1 alpha-2, e.g. KR")
    s.add_argument("--basis", choices=BASIS_KINDS, help="the PIPL art. 38 legal basis")
    s.add_argument("--reference", help="the filing, assessment or certification number")
    add_state_options(s, env)
    s.set_defaults(func=run_set)
    show = actions.add_parser("show", help="print a recipient's record")
    show.add_argument("--org", required=True)
    show.add_argument("--json", action="store_true", help="print JSON")
    add_state_options(show, env)
    show.set_defaults(func=run_show)


def _engine(args: argparse.Namespace) -> Engine:
    return open_engine(settings_from_args(args))


def run_set(args: argparse.Namespace) -> int:
    basis = None if args.basis is None else LegalBasis(args.basis, args.reference)
    try:
        engine = _engine(args)
        set_recipient(engine, Recipient(args.org, args.country, basis))
    except ValueError as e:
        print(f"medledger recipients: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (LedgerUnavailable, SQLAlchemyError) as e:
        print(f"medledger recipients: the database cannot be written: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    engine.dispose()
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    try:
        engine = _engine(args)
        found = recipient_of(engine, args.org)
    except (LedgerUnavailable, SQLAlchemyError) as e:
        print(f"medledger recipients: the database cannot be read: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    engine.dispose()
    if found is None:
        print(
            f"medledger recipients: {args.org} is not recorded: record it with "
            "`medledger recipients set`",
            file=sys.stderr,
        )
        return EXIT_MALFORMED
    info = {
        "org": found.org,
        "country": found.country,
        "basis": found.basis.kind if found.basis else None,
        "reference": found.basis.reference if found.basis else None,
    }
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
    else:
        for k, v in info.items():
            print(f"{k}: {v if v is not None else '-'}")
    return EXIT_OK
