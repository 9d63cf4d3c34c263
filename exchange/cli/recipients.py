"""`medledger recipients set|show`: where a data recipient is, the legal basis for it, and
where it receives deliveries.

Every disclosure to a recipient outside China passes the cross-border gate
(:mod:`exchange.consent.crossborder`); an unrecorded recipient has no legal basis and gets
nothing. A recipient with an endpoint (``--endpoint``: a FHIR R4 base or ``mllp://host:port``)
is delivered the records its patients consent to (exchange.outbox); its credentials are sealed
by the vault (exchange.outbox.endpoints).
Exit codes: 0 ok; 1 usage (a bad country, basis or endpoint setting, named by its option);
2 database unavailable; 3 not recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from exchange.bootstrap import open_store
from exchange.cli.exits import EXIT_MALFORMED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from exchange.config import Environment, add_state_options, settings_from_args
from exchange.consent.crossborder import (
    BASIS_KINDS,
    LegalBasis,
    Recipient,
    recipient_of,
    set_recipient,
)
from exchange.delivery.endpoints import Endpoint, EndpointError, parse_endpoint
from exchange.outbox.endpoints import describe, endpoint_of, set_endpoint
from ledger.errors import LedgerUnavailable

EPILOG = """\
examples:
  medledger recipients set --org insurer-kr --country KR --basis standard-contract \\
      --reference 琼网信备2026-0042
  medledger recipients set --org assist-de --country DE --basis emergency
  medledger recipients set --org seoul-uh --country KR --basis standard-contract \\
      --reference 琼网信备2026-0043 --endpoint https://fhir.seoul-uh.example/r4 \\
      --endpoint-client-id medledger --endpoint-key medledger-smart.pem
  medledger recipients set --org busan-mc --country KR --basis emergency \\
      --endpoint mllp://hl7.busan-mc.example:2575 --message ADT_A08
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
    e = s.add_argument_group("delivery endpoint (kept unless given; docs/delivery.md)")
    e.add_argument("--endpoint", help="https://…/fhir (a FHIR R4 base) or mllp://host:port")
    e.add_argument("--endpoint-token", help="a FHIR endpoint's static bearer token")
    e.add_argument("--endpoint-client-id", help="SMART Backend Services: our client id there")
    e.add_argument("--endpoint-key", type=Path, help="SMART Backend Services: private key (PEM)")
    e.add_argument("--endpoint-key-id", help="the key's id there (default: its JWK thumbprint)")
    e.add_argument("--message", help="an mllp:// endpoint's message: ORU_R01 (default), "
                   "MDM_T02 or ADT_A08")  # fmt: skip
    e.add_argument("--no-endpoint", action="store_true", help="remove the endpoint")
    add_state_options(s, env)
    s.set_defaults(func=run_set)
    show = actions.add_parser("show", help="print a recipient's record")
    show.add_argument("--org", required=True)
    show.add_argument("--json", action="store_true", help="print JSON")
    add_state_options(show, env)
    show.set_defaults(func=run_show)


def _endpoint(args: argparse.Namespace) -> Endpoint | None:
    """The endpoint the options describe (EndpointError names the option at fault)."""
    key_pem = None
    if args.endpoint_key is not None:
        try:
            key_pem = args.endpoint_key.read_bytes()
        except OSError as e:
            raise EndpointError("endpoint_key", f"cannot read {args.endpoint_key}: {e}") from None
    return parse_endpoint(
        args.endpoint,
        token=args.endpoint_token,
        client_id=args.endpoint_client_id,
        key_pem=key_pem,
        key_id=args.endpoint_key_id,
        message=args.message,
    )


def run_set(args: argparse.Namespace) -> int:
    basis = None if args.basis is None else LegalBasis(args.basis, args.reference)
    options = (args.endpoint_token, args.endpoint_client_id, args.endpoint_key,
               args.endpoint_key_id, args.message)  # fmt: skip
    try:
        if args.endpoint is None and any(v is not None for v in options):
            raise EndpointError("endpoint", "the endpoint options go with --endpoint URL")
        if args.endpoint is not None and args.no_endpoint:
            raise EndpointError("endpoint", "--endpoint and --no-endpoint exclude each other")
        endpoint = None if args.endpoint is None else _endpoint(args)
    except EndpointError as e:
        option = "--" + e.field.replace("_", "-")
        print(f"medledger recipients: {option}: {e.reason}", file=sys.stderr)
        return EXIT_USAGE
    try:
        engine, opened = open_store(settings_from_args(args))
        set_recipient(engine, Recipient(args.org, args.country, basis))
        if endpoint is not None or args.no_endpoint:
            set_endpoint(engine, opened, args.org, endpoint)
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
        engine, opened = open_store(settings_from_args(args))
        found = recipient_of(engine, args.org)
        reached = endpoint_of(engine, opened, args.org)
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
        **(describe(reached.endpoint) if reached is not None else {"endpoint": None}),
    }
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
    else:
        for k, v in info.items():
            print(f"{k}: {v if v is not None else '-'}")
    return EXIT_OK
