"""`medledger serve` (the clients commands are in exchange/cli_clients.py).

Exit codes: 0 ok; 1 usage; 2 database or port unavailable; 3 local state unusable (key file,
a database of another log, a rolled-back database).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from exchange.cli import EXIT_MALFORMED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from exchange.outcome import ApiError
from exchange.ratelimit import RateLimit
from exchange.settings import Settings, add_state_options, settings_from_args
from exchange.vault import VaultError
from ledger.errors import LedgerError, LedgerUnavailable
from ledger.store import durability_problems

SERVE_EPILOG = """\
examples:
  medledger serve --demo                       # SQLite under ./medledger-data, sample data
  medledger serve --data /var/lib/medledger --host 0.0.0.0 --port 8443
  medledger serve --db postgresql+psycopg://medledger@db/medledger --key-file /etc/medledger/log.key
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the exchange service (FHIR API and log reads)",
        description="Runs the HTTP service: POST /fhir/Bundle, GET /fhir/Bundle/{id}, "
        "GET /fhir/metadata and the log's public reads under /v1/log.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_state_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (%(default)s)")
    p.add_argument(
        "--demo",
        action="store_true",
        help="register a sample hospital, insurer and auditor, submit sample Bundles of each "
        "kind, and print credentials and commands to try",
    )
    p.add_argument(
        "--intake-workers",
        type=int,
        default=None,
        metavar="N",
        help="processes that validate submissions (default: one per CPU when there are "
        "several; 0 validates in the server process)",
    )
    p.add_argument(
        "--production",
        action="store_true",
        default=os.environ.get("MEDLEDGER_PRODUCTION", "") not in ("", "0"),
        help="refuse to start when the database could lose committed entries in a crash "
        "(PostgreSQL fsync, synchronous_commit, full_page_writes; SQLite WAL + synchronous=FULL) "
        "instead of warning; also MEDLEDGER_PRODUCTION=1",
    )
    p.add_argument(
        "--rate-limit",
        type=float,
        default=float(os.environ.get("MEDLEDGER_RATE_LIMIT", "50")),
        metavar="PER_S",
        help="requests per second each client may sustain (%(default)s; 0 disables)",
    )
    p.add_argument(
        "--burst",
        type=int,
        default=int(os.environ.get("MEDLEDGER_RATE_BURST", "100")),
        help="requests each client may send at once above its rate (%(default)s)",
    )
    p.add_argument(
        "--export-ttl",
        type=float,
        default=float(os.environ.get("MEDLEDGER_EXPORT_TTL", "24")),
        metavar="HOURS",
        help="how long a Bulk Data export and its files are kept after the kick-off "
        "(%(default)s hours)",
    )
    p.add_argument(
        "--access-log",
        action="store_true",
        help="log every request line (off by default: search URLs may carry identifiers)",
    )
    p.set_defaults(func=run_serve)


def _fail(message: str, code: int) -> int:
    print(f"medledger: {message}", file=sys.stderr)
    return code


def _default_workers() -> int:
    cpus = os.cpu_count() or 1
    return cpus if cpus > 1 else 0


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from exchange.app import create_app
    from exchange.demo import instructions, seed
    from exchange.services import open_services

    if args.export_ttl <= 0:
        return _fail("--export-ttl must be a positive number of hours", EXIT_USAGE)
    settings = replace(settings_from_args(args), export_ttl=timedelta(hours=args.export_ttl))
    workers = _default_workers() if args.intake_workers is None else max(0, args.intake_workers)
    try:
        services = open_services(settings, intake_workers=workers)
    except LedgerUnavailable as e:
        return _fail(str(e), EXIT_UNAVAILABLE)
    except LedgerError as e:
        return _fail(str(e), EXIT_MALFORMED)
    except SQLAlchemyError as e:
        return _fail(f"the database cannot be opened: {e}", EXIT_UNAVAILABLE)
    except VaultError as e:
        return _fail(str(e), EXIT_MALFORMED)
    problems = durability_problems(services.engine)
    if problems and args.production:
        services.close()
        return _fail(
            "refusing to start in production mode: "
            + "; ".join(problems)
            + ": a crash could lose acknowledged entries",
            EXIT_MALFORMED,
        )
    for problem in problems:
        print(f"medledger: warning: {problem}: a crash could lose entries", file=sys.stderr)
    if services.log.read_only_reason:
        print(f"medledger: warning: serving reads only: {services.log.read_only_reason}",
              file=sys.stderr)
    try:
        rate_limit = RateLimit(args.rate_limit, args.burst) if args.rate_limit > 0 else None
    except ValueError as e:
        services.close()
        return _fail(str(e), EXIT_USAGE)
    app = create_app(settings, services=services, rate_limit=rate_limit)
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    base_url = f"http://{shown_host}:{args.port}"
    vkey = services.log.signer.verifier.vkey()
    if args.demo:
        try:
            demo = seed(services, _demo_dir(settings))
        except (ApiError, LedgerError) as e:
            services.close()
            return _fail(f"cannot seed the demo: {e}", EXIT_MALFORMED)
        print(instructions(demo, base_url, vkey), flush=True)
    print(f"medledger: log {services.log.origin} ({services.log.size()} entries), key {vkey}",
          flush=True)
    print(f"medledger: serving {base_url}/fhir (Ctrl-C to stop)", flush=True)
    print(f"medledger: vault master key {services.vault.master.id}: keep a backup apart from "
          "the database; without it no stored Bundle can be read", flush=True)  # fmt: skip
    server = uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=args.port, access_log=args.access_log)
    )
    try:
        server.run()
    except SystemExit:
        pass  # uvicorn exits when it cannot bind; reported below
    if not server.started:
        return _fail(f"could not serve on {args.host}:{args.port}", EXIT_UNAVAILABLE)
    return EXIT_OK


def _demo_dir(settings: Settings) -> Path:
    return settings.data_dir / "demo"
