"""`medledger serve` (the clients commands are in exchange/cli_clients.py).

Exit codes: 0 ok; 1 usage; 2 database or port unavailable; 3 local state unusable (key file,
a database of another log, a rolled-back database).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy.exc import SQLAlchemyError
from uvicorn.config import LOGGING_CONFIG

from exchange.app import create_app
from exchange.bootstrap import WitnessPolicyError, open_services
from exchange.cli.exits import EXIT_MALFORMED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from exchange.config import (
    LOG_FORMATS,
    Environment,
    Settings,
    add_state_options,
    configure_json_logging,
    exposed_state,
    json_logging,
    settings_from_args,
)
from exchange.demo import instructions, seed
from exchange.errors import MedledgerError
from exchange.http.connections import ConnectionLimits, protocol_class
from exchange.http.public import (
    LOOPBACK_PROXIES,
    default_public_url,
    parse_proxies,
    parse_public_url,
)
from exchange.http.ratelimit import RateLimit
from exchange.intake import IntakeLimits
from exchange.intake.runner import IntakeRunner
from exchange.vault import VaultError
from ledger.errors import LedgerError, LedgerUnavailable
from ledger.store import durability_problems

SERVE_EPILOG = """\
examples:
  medledger serve --demo                       # SQLite under ./medledger-data, sample data
  medledger serve --data /var/lib/medledger --host 0.0.0.0 --port 8443
  medledger serve --db postgresql+psycopg://medledger@db/medledger --key-file /etc/medledger/log.key
"""


def register(sub: argparse._SubParsersAction[Any], env: Environment) -> None:
    p = sub.add_parser(
        "serve",
        help="run the exchange service (FHIR API and log reads)",
        description="Runs the HTTP service: POST /fhir/Bundle, GET /fhir/Bundle/{id}, "
        "GET /fhir/metadata and the log's public reads under /v1/log.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_state_options(p, env)
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
        default=env.production,
        help="refuse to start when the database could lose committed entries in a crash "
        "(PostgreSQL fsync, synchronous_commit, full_page_writes; SQLite WAL + synchronous=FULL) "
        "or when the data directory, the database files or vault.key are open to group or "
        "others, instead of warning; also MEDLEDGER_PRODUCTION=1",
    )
    p.add_argument(
        "--rate-limit",
        type=float,
        default=float(env.rate_limit or "50"),
        metavar="PER_S",
        help="requests per second each client may sustain (%(default)s; 0 disables)",
    )
    p.add_argument(
        "--burst",
        type=int,
        default=int(env.burst or "100"),
        help="requests each client may send at once above its rate (%(default)s)",
    )
    p.add_argument(
        "--export-ttl",
        type=float,
        default=float(env.export_ttl or "24"),
        metavar="HOURS",
        help="how long a Bulk Data export and its files are kept after the kick-off "
        "(%(default)s hours)",
    )
    p.add_argument(
        "--mllp-port",
        type=int,
        metavar="N",
        help="also listen for HL7 v2 over MLLP from registered home hospitals on this port "
        "(`medledger clients mllp`; docs/delivery.md)",
    )
    p.add_argument(
        "--delivery-give-up",
        type=float,
        default=float(env.delivery_give_up or "24"),
        metavar="HOURS",
        help="how long a delivery to a home hospital is retried before it fails "
        "(%(default)s hours; docs/delivery.md)",
    )
    p.add_argument(
        "--delivery-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long one delivery attempt may take (%(default)s s); a delivery a killed "
        "server was sending is taken up again after twice that and 5 s",
    )
    p.add_argument(
        "--public-url",
        default=env.public_url,
        metavar="URL",
        help="the base URL clients reach the service at, e.g. https://ledger.example: every "
        "absolute URL it gives out (the SMART token audience, Bulk Data and search links) is "
        "built on it, never on the request's Host (default http://HOST:PORT; "
        "MEDLEDGER_PUBLIC_URL)",
    )
    p.add_argument(
        "--trust-proxy",
        nargs="?",
        const=LOOPBACK_PROXIES,
        metavar="ADDRS",
        help="a reverse proxy at these addresses (comma-separated, networks allowed; "
        f"default {LOOPBACK_PROXIES}) sets X-Forwarded-Proto, X-Forwarded-Host and "
        "X-Forwarded-For: take the scheme, host and client address from them on its requests "
        "only",
    )
    p.add_argument(
        "--max-in-flight",
        type=int,
        default=128,
        metavar="N",
        help="submissions served at once (%(default)s); one client may hold at most half, "
        "less while others submit (429 beyond)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds a request's line and headers may take to arrive (%(default)s; 408 after)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=20.0,
        metavar="S",
        help="seconds a request body may take, plus one per KiB received (%(default)s; then 408)",
    )
    p.add_argument(
        "--max-header-bytes",
        type=int,
        default=32 * 1024,
        metavar="N",
        help="largest request line and headers accepted (%(default)s; 431 beyond)",
    )
    p.add_argument(
        "--policy",
        type=Path,
        default=Path(env.policy) if env.policy else None,
        metavar="FILE",
        help="a witness policy (C2SP tlog-policy; its witness lines carry URLs): offer every "
        "new checkpoint to its witnesses and serve the newest one its quorum cosigned at "
        "/v1/log/checkpoint (MEDLEDGER_POLICY; docs/witness.md)",
    )
    p.add_argument(
        "--log-format",
        default=env.log_format or "text",
        metavar="{text,json}",
        help="text (the default) or json: one JSON object per line on stderr (time, level, "
        "logger, message) for a log collector (MEDLEDGER_LOG_FORMAT; docs/operations.md, "
        '"Logging")',
    )
    p.add_argument(
        "--access-log",
        action="store_true",
        help="log every request line (off by default: search URLs may carry identifiers)",
    )
    p.set_defaults(func=run_serve)


log = logging.getLogger("medledger.serve")


def _fail(message: str, code: int) -> int:
    if json_logging():
        log.error("%s", message)
    else:
        print(f"medledger: {message}", file=sys.stderr)
    return code


def _warn(message: str) -> None:
    if json_logging():
        log.warning("%s", message)
    else:
        print(f"medledger: warning: {message}", file=sys.stderr)


def _default_workers() -> int:
    cpus = os.cpu_count() or 1
    return cpus if cpus > 1 else 0


def run_serve(args: argparse.Namespace) -> int:

    if args.log_format not in LOG_FORMATS:
        return _fail(
            f"--log-format (or MEDLEDGER_LOG_FORMAT) {args.log_format!r} is not one of "
            f"{', '.join(LOG_FORMATS)}",
            EXIT_USAGE,
        )
    if args.log_format == "json":
        configure_json_logging()
    if args.export_ttl <= 0:
        return _fail("--export-ttl must be a positive number of hours", EXIT_USAGE)
    if args.db is not None and args.key_file is None:
        # Else the key files would be made, or silently reused, in ./medledger-data.
        return _fail(
            "--db needs --key-file: the log's signing key, with vault.key and checkpoint "
            "beside it; create them once with `medledger keys init --key-file PATH`",
            EXIT_USAGE,
        )
    if args.delivery_give_up <= 0:
        return _fail("--delivery-give-up must be a positive number of hours", EXIT_USAGE)
    if args.mllp_port is not None and not 0 < args.mllp_port < 65536:
        return _fail(f"--mllp-port {args.mllp_port} is not a port (1-65535)", EXIT_USAGE)
    if args.delivery_timeout <= 0:
        return _fail("--delivery-timeout must be a positive number of seconds", EXIT_USAGE)
    settings = replace(
        settings_from_args(args),
        export_ttl=timedelta(hours=args.export_ttl),
        policy=args.policy,
        delivery_give_up=timedelta(hours=args.delivery_give_up),
        delivery_timeout=args.delivery_timeout,
    )
    try:
        rate_limit = RateLimit(args.rate_limit, args.burst) if args.rate_limit > 0 else None
        limits = ConnectionLimits(args.header_timeout, args.body_timeout, args.max_header_bytes)
        public_url = parse_public_url(args.public_url or default_public_url(args.host, args.port))
        proxies = () if args.trust_proxy is None else parse_proxies(args.trust_proxy)
        if args.max_in_flight < 1:
            raise ValueError(f"--max-in-flight must be at least 1, not {args.max_in_flight}")
    except ValueError as e:
        return _fail(str(e), EXIT_USAGE)
    workers = _default_workers() if args.intake_workers is None else max(0, args.intake_workers)
    # First: the intake workers warm while the store opens and the app loads, so the server
    # is ready soon after it binds (benchmarks/startup.py).
    intake = IntakeRunner(IntakeLimits(), workers)
    intake.start()
    try:
        services = open_services(settings, intake=intake, max_in_flight=args.max_in_flight)
    except (LedgerError, SQLAlchemyError, VaultError, WitnessPolicyError) as e:
        intake.close()
        return _open_failure(e)

    durability = durability_problems(services.engine)
    exposed = exposed_state(settings)
    if args.production and (durability or exposed):
        services.close()
        lost = [f"{p}: a crash could lose acknowledged entries" for p in durability]
        return _fail("refusing to start in production mode: " + "; ".join(lost + exposed),
                     EXIT_MALFORMED)  # fmt: skip
    for problem in durability:
        _warn(f"{problem}: a crash could lose entries")
    for problem in exposed:
        _warn(problem)
    if services.log.read_only_reason:
        _warn(f"serving reads only: {services.log.read_only_reason}")
    if args.host in ("0.0.0.0", "::") and args.public_url is None:
        _warn(f"absolute URLs (the SMART token audience among them) name {public_url}: give "
              "--public-url, the address clients use")  # fmt: skip
    mllp = None if args.mllp_port is None else (args.host, args.mllp_port)
    app = create_app(
        settings, services=services, rate_limit=rate_limit, public_url=public_url,
        trusted_proxies=proxies, mllp=mllp, outbox_process=True,
    )  # fmt: skip
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    base_url = f"http://{shown_host}:{args.port}"
    vkey = services.log.signer.verifier.vkey()
    if args.demo:
        try:
            demo = seed(services, _demo_dir(settings))
        except (MedledgerError, LedgerError) as e:
            services.close()
            return _fail(f"cannot seed the demo: {e}", EXIT_MALFORMED)
        print(instructions(demo, base_url, vkey), flush=True)
    print(
        f"medledger: log {services.log.origin} ({services.log.size()} entries), key {vkey}",
        flush=True,
    )
    if services.witnesses is not None:
        policy = services.witnesses.policy
        named = ", ".join(f"{w.name} {w.url}" for w in policy.witnesses if w.url)
        print(f"medledger: witnesses {named}; quorum {policy.quorum}", flush=True)
    print(f"medledger: serving {base_url}/fhir (Ctrl-C to stop)", flush=True)
    if public_url != base_url:
        print(f"medledger: public URL {public_url}", flush=True)
    print(f"medledger: vault master key {services.vault.master.id}: keep a backup apart from "
          "the database; without it no stored Bundle can be read", flush=True)  # fmt: skip
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        access_log=args.access_log,
        # With JSON logs uvicorn's records go to the root logger's JSON handler, not its own.
        log_config=None if args.log_format == "json" else LOGGING_CONFIG,
        http=protocol_class(limits),
        # X-Forwarded-* is applied by the app, and only from --trust-proxy (exchange.public).
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit:
        pass  # uvicorn exits when it cannot bind; reported below
    if not server.started:
        return _fail(f"could not serve on {args.host}:{args.port}", EXIT_UNAVAILABLE)
    return EXIT_OK


def _open_failure(e: Exception) -> int:
    if isinstance(e, LedgerUnavailable):
        return _fail(str(e), EXIT_UNAVAILABLE)
    if isinstance(e, SQLAlchemyError):
        return _fail(f"the database cannot be opened: {e}", EXIT_UNAVAILABLE)
    return _fail(str(e), EXIT_MALFORMED)  # LedgerError, VaultError, a policy: the local state


def _demo_dir(settings: Settings) -> Path:
    return settings.data_dir / "demo"
