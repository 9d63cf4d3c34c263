"""`medledger access explain`: why a client got what it got, read from the access entries.

Every request for patient data, answered or refused, is an access entry (exchange.privacy.
access) whose AuditEvent records the outcome and the reason. `explain` lists one client's, most
recent first, so an operator can answer "why did my search come back empty?" without reading
the server's logs: a refusal says by which rule (no consent, wrong purpose, no recorded
recipient), a disclosure what was disclosed. Patients appear only as a count; the entries hold
nothing else of them. Exit codes: 0 ok; 1 usage (an unknown client, a bad --since);
2 database unavailable; 3 no database where --data points.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from exchange.bootstrap import open_engine
from exchange.cli.exits import EXIT_MALFORMED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from exchange.config import Environment, add_state_options, settings_from_args
from exchange.privacy.access import Request, requests_of
from exchange.store.tables import access_table, clients_table
from ledger.errors import LedgerUnavailable
from ledger.store import sqlite_url

EPILOG = """\
examples:
  medledger access explain --client 3f2a9c1e
  medledger access explain --client 3f2a9c1e --since 2026-11-28
  medledger access explain --client 3f2a9c1e --since 2026-11-28T09:00:00+08:00 --json

Each line is one access entry (one per patient a request concerned, or one naming none):
its ledger index, when, what was asked (action and resource type), the purpose of use, the
outcome (disclosed, refused, failed) and the reason recorded with it.
"""

OUTCOMES = {"0": "disclosed", "4": "refused", "8": "failed", "12": "failed"}


def register(sub: argparse._SubParsersAction[Any], env: Environment) -> None:
    p = sub.add_parser(
        "access",
        help="what a client asked for and why it was answered or refused (access entries)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", required=True)
    e = actions.add_parser(
        "explain",
        help="a client's requests, most recent first, with outcome and reason",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("--client", required=True, metavar="ID", help="the client id (clients list)")
    e.add_argument(
        "--since",
        type=_since,
        metavar="DATE",
        help="only requests at or after DATE (ISO 8601 date or date and time; UTC unless an "
        "offset is given)",
    )
    e.add_argument("--limit", type=_positive, default=100, help="at most N entries (100)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    add_state_options(e, env)
    e.set_defaults(func=run_explain)


def _since(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date (2026-11-28) or date and time "
            "(2026-11-28T09:00:00+08:00)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not positive")
    return n


def _fail(message: str, code: int) -> int:
    print(f"medledger access: {message}", file=sys.stderr)
    return code


def _known(engine: Engine, client_id: str) -> bool:
    """Registered, or named by an access entry (a client deleted since, or a requester the
    service recorded under an id of its own)."""
    with engine.connect() as conn:
        for table in (clients_table, access_table):
            q = select(table.c.client_id).where(table.c.client_id == client_id).limit(1)
            if conn.execute(q).first() is not None:
                return True
    return False


def _json(r: Request) -> dict[str, Any]:
    return {
        "index": r.index,
        "recorded": r.recorded.isoformat(),
        "action": r.action,
        "resource_type": r.resource_type,
        "purpose": r.purpose,
        "outcome": r.outcome,
        "result": OUTCOMES.get(r.outcome, r.outcome),
        "reason": r.detail,
        "patients": r.patients,
    }


def run_explain(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    sqlite_file = Path(sqlite_url(settings.data_dir)[len("sqlite:///") :])
    if settings.db_url is None and not sqlite_file.is_file():
        # A question about a log, not a new one: no empty database is made.
        where = f"no medledger database in {settings.data_dir}: pass --data or --db"
        return _fail(where, EXIT_MALFORMED)
    engine = None
    try:
        engine = open_engine(settings)
        if not _known(engine, args.client):
            return _fail(
                f"no client {args.client!r} is registered or named by an access entry; "
                "`medledger clients list` shows the client ids",
                EXIT_USAGE,
            )
        found = requests_of(engine, args.client, args.since, args.limit)
    except (LedgerUnavailable, SQLAlchemyError) as e:
        return _fail(f"the database cannot be used: {e}", EXIT_UNAVAILABLE)
    finally:
        if engine is not None:
            engine.dispose()
    rows = [_json(r) for r in found]
    if args.json:
        since = None if args.since is None else args.since.isoformat()
        print(json.dumps({"client_id": args.client, "since": since, "requests": rows}))
        return EXIT_OK
    if not rows:
        since = "" if args.since is None else f" since {args.since.isoformat()}"
        print(f"no requests by client {args.client}{since}")
    for r in rows:
        purpose = f" for {r['purpose']}" if r["purpose"] else ""
        patients = f", {r['patients']} patient(s)" if r["patients"] else ""
        print(
            f"{r['recorded']}  entry {r['index']}  {r['action']} {r['resource_type']}{purpose}"
            f": {r['result'].upper()}{patients}: {r['reason']}"
        )
    return EXIT_OK
