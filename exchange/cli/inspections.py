"""`medledger inspect draw|check`: "double random, one open" inspection draws.

`draw --seed S --institutions N --entries M [--org ORG]` appends the seed to the log as an
`inspection` entry (sender ORG, default `log`), then draws N institutions of the registry and
M entries of each from that entry (exchange.inspections.draw) and prints the draw as JSON.
A retry of the same draw appends nothing and prints the same draw.
`check (--index I | --seed S) [--draw FILE]` re-draws from the logged seed and prints it;
with `--draw`, compares it with a draw printed before.
Exit codes: 0 ok (check: the draw holds); 1 usage (bad seed or counts, the seed logged with
other counts, no such seed entry); 2 database unavailable; 3 the --draw file is not JSON;
4 the draw does not hold (it differs from the re-draw, or the stored seed document does not
match its entry).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from exchange.cli.exits import (
    EXIT_MALFORMED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    EXIT_VERIFY_FAILED,
    exit_code,
)
from exchange.cli.institutions import open_log_of
from exchange.config import Environment, add_state_options
from exchange.errors import MedledgerError
from exchange.inspections import draw as inspections
from ledger.errors import LedgerUnavailable

PROG = "medledger inspect"


def register(sub: argparse._SubParsersAction[Any], env: Environment) -> None:
    p = sub.add_parser("inspect", help="random inspection draws bound to a logged seed")
    actions = p.add_subparsers(dest="action", required=True)
    d = actions.add_parser("draw", help="log a seed, then draw institutions and entries from it")
    d.add_argument("--seed", required=True, help="the published seed (printable ASCII)")
    d.add_argument("--institutions", required=True, type=int, help="how many institutions")
    d.add_argument("--entries", required=True, type=int, help="how many entries of each")
    d.add_argument("--org", default="log", help="the inspecting organisation (entry sender)")
    add_state_options(d, env)
    d.set_defaults(func=run_draw)
    c = actions.add_parser("check", help="re-draw from a logged seed (and compare)")
    which = c.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, help="the seed entry's index")
    which.add_argument("--seed", help="the seed, as logged")
    c.add_argument("--draw", type=argparse.FileType("rb"), help="a draw printed before (JSON)")
    add_state_options(c, env)
    c.set_defaults(func=run_check)


def _print(draw: inspections.Draw) -> None:
    print(json.dumps(draw.to_json(), ensure_ascii=False, indent=2))


def run_draw(args: argparse.Namespace) -> int:
    try:
        request = inspections.Request(args.seed, args.institutions, args.entries)
        log = open_log_of(args)
        try:
            index = inspections.publish(log, request, args.org)
            drawn = inspections.redraw(log, index)
        finally:
            log.close()
    except MedledgerError as e:
        print(f"{PROG}: {e.diagnostics}", file=sys.stderr)
        return exit_code(e)
    except inspections.Mismatch as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_VERIFY_FAILED
    except (LedgerUnavailable, SQLAlchemyError) as e:
        print(f"{PROG}: the database cannot be written: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    _print(drawn)
    return EXIT_OK


def run_check(args: argparse.Namespace) -> int:
    try:
        expected = None if args.draw is None else json.loads(args.draw.read())
    except ValueError as e:
        print(f"{PROG}: {args.draw.name} is not a draw (JSON): {e}", file=sys.stderr)
        return EXIT_MALFORMED
    try:
        log = open_log_of(args)
        try:
            index = args.index
            if index is None:
                index = inspections.find_seed(log.engine, args.seed)
                if index is None:
                    print(f"{PROG}: no entry logged the seed {args.seed!r}", file=sys.stderr)
                    return EXIT_USAGE
            drawn = inspections.redraw(log, index)
        finally:
            log.close()
        if expected is not None:
            inspections.compare(expected, drawn)
    except MedledgerError as e:
        print(f"{PROG}: {e.diagnostics}", file=sys.stderr)
        return exit_code(e)
    except inspections.Mismatch as e:
        print(f"{PROG}: the draw does not hold: {e}", file=sys.stderr)
        return EXIT_VERIFY_FAILED
    except (LedgerUnavailable, SQLAlchemyError) as e:
        print(f"{PROG}: the database cannot be read: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    _print(drawn)
    return EXIT_OK
