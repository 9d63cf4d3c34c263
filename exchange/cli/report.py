"""`medledger report quality --org ORG --period 2026 [--plot FILE] [--json]`.

Computes an institution's quality indicators from the Bundles in the log's database (the same
derived index and rules as `GET /fhir/MeasureReport`, docs/institutions.md) and prints a table
of numerator, denominator and score per indicator; `--plot out.png|out.svg` also draws the
indicators' monthly scores over the period.
Exit codes: 0 ok; 1 usage (bad period or plot file name); 2 database unavailable; 3 the
organisation is neither in the registry nor a sender of any Bundle, or the log's keys are
missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from exchange.bootstrap import open_services
from exchange.cli.exits import EXIT_MALFORMED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from exchange.config import Environment, add_state_options, settings_from_args
from exchange.http.routes.quality import known_org
from exchange.keys.keyring import KeyringError
from exchange.quality import facts as quality_facts
from exchange.quality import indicators as quality
from exchange.quality.plot import plot_indicators
from exchange.vault import VaultError
from ledger.errors import LedgerUnavailable

PLOT_FORMATS = (".png", ".svg")


def _period(text: str) -> tuple[date, date]:
    try:
        return quality.parse_period(text)
    except quality.PeriodError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(sub: argparse._SubParsersAction[Any], env: Environment) -> None:
    p = sub.add_parser("report", help="reports computed from the ledger")
    kinds = p.add_subparsers(dest="report", required=True)
    q = kinds.add_parser("quality", help="an institution's quality indicators over a period")
    q.add_argument("--org", required=True, help="the institution (its sender id)")
    q.add_argument(
        "--period",
        required=True,
        type=_period,
        help="YYYY, YYYY-MM, YYYY-MM-DD or START..END (inclusive days)",
    )
    q.add_argument("--plot", type=Path, help="also draw the monthly scores: FILE.png or FILE.svg")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    add_state_options(q, env)
    # The same as --data, under the name some deployments script with.
    q.add_argument("--data-dir", dest="data", type=Path, default=argparse.SUPPRESS, help="= --data")
    q.set_defaults(func=run_quality)


def quality_rows(
    reports: list[dict[str, object]],
) -> list[dict[str, object]]:
    """(indicator, title, numerator, denominator, score) of each MeasureReport."""
    rows = []
    for report in reports:
        groups: Any = report["group"]  # a MeasureReport as exchange.quality.indicators made it
        (group,) = groups
        pops = {p["code"]["coding"][0]["code"]: p["count"] for p in group["population"]}
        score = group.get("measureScore", {}).get("value")
        rows.append(
            {
                "indicator": group["id"],
                "title": group["code"]["text"],
                "numerator": pops["numerator"],
                "denominator": pops["denominator"],
                "score": score,
            }
        )
    return rows


def format_table(org: str, start: date, end: date, rows: list[dict[str, object]]) -> str:
    head = f"Quality indicators of {org}, {start.isoformat()} to {end.isoformat()}"
    lines = [head, f"{'indicator':<20} {'numerator':>9} {'denominator':>11} {'score':>7}  title"]
    for r in rows:
        score = "-" if r["score"] is None else f"{r['score']:.4f}"
        lines.append(
            f"{r['indicator']!s:<20} {r['numerator']!s:>9} {r['denominator']!s:>11} "
            f"{score:>7}  {r['title']}"
        )
    return "\n".join(lines)


def run_quality(args: argparse.Namespace) -> int:
    start, end = args.period
    if args.plot is not None and args.plot.suffix.lower() not in PLOT_FORMATS:
        print(f"medledger report: --plot {args.plot}: name a .png or .svg file", file=sys.stderr)
        return EXIT_USAGE
    now = datetime.now(UTC)
    try:
        # The service's own way of opening a log: the stored Bundles are sealed, and only an
        # open vault reads them (exchange.vault).
        services = open_services(settings_from_args(args))
        try:
            engine = services.engine
            if not known_org(engine, args.org):
                print(
                    f"medledger report: {args.org} is neither in the registry nor a sender",
                    file=sys.stderr,
                )
                return EXIT_MALFORMED
            services.indexes.fresh(quality_facts.QUALITY)
            facts = quality_facts.episode_facts(services.vault, args.org, now)
        finally:
            services.close()
    except (KeyringError, VaultError) as e:
        print(f"medledger report: the log's local state is unusable: {e}", file=sys.stderr)
        return EXIT_MALFORMED
    except (LedgerUnavailable, SQLAlchemyError, OSError) as e:
        print(f"medledger report: the database cannot be read: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    rows = quality_rows(quality.indicator_reports(args.org, start, end, facts, now=now))
    if args.plot is not None:
        try:
            plot_indicators(quality.INDICATORS, quality.in_period(facts, start, end), args.plot)
        except OSError as e:
            print(f"medledger report: cannot write {args.plot}: {e}", file=sys.stderr)
            return EXIT_USAGE
    if args.json:
        period = {"start": start.isoformat(), "end": end.isoformat()}
        print(json.dumps({"org": args.org, "period": period, "indicators": rows}, indent=2))
    else:
        print(format_table(args.org, start, end, rows))
        if args.plot is not None:
            print(f"plot written to {args.plot}")
    return EXIT_OK
