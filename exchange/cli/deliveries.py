"""`medledger deliveries list|retry`: the outbox of deliveries to home hospitals.

`list` prints the deliveries (all hospitals', or one's with --org), oldest first; `retry ID`
sends a failed delivery again, on a new schedule, under the same identifier (a running server
takes it up at its next look at the outbox). Exit codes: 0 ok; 1 usage (not failed); 2
database unavailable; 3 no such delivery.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from exchange.bootstrap import open_store
from exchange.cli.exits import EXIT_MALFORMED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from exchange.config import Environment, add_state_options, settings_from_args
from exchange.errors import Conflict, NotFound
from exchange.indexes.derived import Indexes
from exchange.outbox.queue import STATUSES, Queue
from ledger.errors import LedgerUnavailable


def register(sub: argparse._SubParsersAction[Any], env: Environment) -> None:
    p = sub.add_parser(
        "deliveries",
        help="list deliveries to home hospitals, or send a failed one again",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("list", help="print the outbox, oldest first")
    ls.add_argument("--org", help="the submitting hospital's deliveries only")
    ls.add_argument("--bundle", help="one Bundle's deliveries")
    ls.add_argument("--recipient", help="one recipient Organization's deliveries")
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--json", action="store_true", help="print design.md's JSON")
    add_state_options(ls, env)
    ls.set_defaults(func=run_list)
    retry = actions.add_parser("retry", help="send a failed delivery again")
    retry.add_argument("id", help="the delivery's id")
    add_state_options(retry, env)
    retry.set_defaults(func=run_retry)


def _queue(args: argparse.Namespace) -> Queue:
    engine, opened = open_store(settings_from_args(args))
    return Queue(opened, Indexes(opened), opened.lookup_key)


def run_list(args: argparse.Namespace) -> int:
    try:
        queue = _queue(args)
        found = queue.list(
            sender=args.org, bundle=args.bundle, recipient=args.recipient, status=args.status
        )
    except (LedgerUnavailable, SQLAlchemyError) as e:
        print(f"medledger deliveries: the database cannot be read: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    queue.engine.dispose()
    if args.json:
        print(json.dumps({"deliveries": [d.json() for d in found]}, ensure_ascii=False))
        return EXIT_OK
    for d in found:
        entry = "-" if d.ledger_index is None else str(d.ledger_index)
        print(f"{d.id}  {d.bundle}/_history/{d.version} -> {d.recipient} ({d.transport})  "
              f"{d.status}  attempts {d.attempts}  entry {entry}"
              + (f"  {d.last_error}" if d.last_error else ""))  # fmt: skip
    return EXIT_OK


def run_retry(args: argparse.Namespace) -> int:
    try:
        queue = _queue(args)
        done = queue.retry(args.id)
    except NotFound as e:
        print(f"medledger deliveries: {e.diagnostics}", file=sys.stderr)
        return EXIT_MALFORMED
    except Conflict as e:
        print(f"medledger deliveries: {e.diagnostics}", file=sys.stderr)
        return EXIT_USAGE
    except (LedgerUnavailable, SQLAlchemyError) as e:
        print(f"medledger deliveries: the database cannot be written: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    queue.engine.dispose()
    print(f"{done.id}: {done.status}, to be sent again")
    return EXIT_OK
