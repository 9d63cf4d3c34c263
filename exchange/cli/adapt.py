"""`medledger adapt TARGET --in FILE...`: run an adapter offline on Bundle files.

Each target names a function `adapt(bundles: list[bytes], options: AdaptOptions) -> bytes`
in its adapter module; the CLI only reads files and writes the result.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.base import AdaptError, AdaptOptions
from exchange.cli.exits import EXIT_MALFORMED, EXIT_OK
from exchange.config import Environment

TARGETS = {
    "ips": "adapters.ips",
    "hl7v2": "adapters.hl7v2",
    "epcis": "adapters.epcis",
    "e2b": "adapters.e2b",
}


def register(sub: argparse._SubParsersAction[Any], env: Environment) -> None:
    p = sub.add_parser(
        "adapt",
        help="turn Bundle files into IPS, HL7 v2.5.1, EPCIS 2.0 or E2B(R3), offline",
        description="Runs an adapter on FHIR R4 Bundle files and writes the result.",
        epilog="example: medledger adapt hl7v2 --in encounter.json --message ORU_R01 "
        "--now 2026-11-28T10:00:00Z --control-id MSG0001",
    )
    p.add_argument("target", choices=sorted(TARGETS))
    p.add_argument(
        "--in",
        dest="inputs",
        type=Path,
        action="append",
        required=True,
        metavar="FILE",
        help="a Bundle file (repeat for several)",
    )
    p.add_argument("--out", type=Path, help="write here instead of standard output")
    p.add_argument("--message", help="HL7 v2 message: ORU_R01, ADT_A08, MDM_T02, RDS_O13")
    p.add_argument("--now", help="RFC 3339 time to stamp the output with (default: now)")
    p.add_argument("--control-id", help="message control id / document id to use")
    p.add_argument("--language", help="language of added translations, e.g. en, ko, ru, ar, th")
    p.add_argument(
        "--location",
        metavar="GLN",
        help="EPCIS: the site's location (GLN, SGLN URN or GLN Digital Link) for Bundles that "
        "name no GLN of their own",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        bundles = [path.read_bytes() for path in args.inputs]
    except OSError as e:
        print(f"medledger adapt: cannot read {e.filename}: {e.strerror}", file=sys.stderr)
        return EXIT_MALFORMED
    now = datetime.fromisoformat(args.now.replace("Z", "+00:00")) if args.now else datetime.now(UTC)
    options = AdaptOptions(
        now=now,
        message=args.message,
        control_id=args.control_id,
        language=args.language,
        location=args.location,
    )
    module = importlib.import_module(TARGETS[args.target])
    try:
        out: bytes = module.adapt(bundles, options)
    except AdaptError as e:
        print(f"medledger adapt {args.target}: {e}", file=sys.stderr)
        return EXIT_MALFORMED
    if args.out:
        args.out.write_bytes(out)
    else:
        sys.stdout.buffer.write(out)
    return EXIT_OK
