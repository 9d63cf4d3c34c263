"""`medledger erase`: crypto-shredding erasure of a patient, approved by two admins.

    MEDLEDGER_ADMIN_TOKEN=mlt_... medledger erase --patient 'SYSTEM|VALUE' --org ORG --by ADMIN1
    MEDLEDGER_ADMIN_TOKEN=mlt_... medledger erase --confirm REQUEST_ID --by ADMIN2

Each admin runs their step with their own `mlt_` credential in MEDLEDGER_ADMIN_TOKEN (never on
the command line, where other users of the machine could read it); it must be the credential
of the client named by --by, and that client must have role admin. The confirming admin must
be another client than the requesting one. Exit codes: 0 done; 1 usage or refused (not an
admin, same admin twice, wrong credential); 2 database unavailable; 3 unknown patient or
request, or local state (vault key) missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from exchange import vault
from exchange.bootstrap import open_log, open_store
from exchange.cli.exits import EXIT_MALFORMED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from exchange.config import Environment, add_state_options, settings_from_args
from exchange.privacy import erasure
from ledger.errors import LedgerError, LedgerUnavailable


def register(sub: argparse._SubParsersAction[Any], env: Environment) -> None:
    p = sub.add_parser(
        "erase",
        help="erase a patient's stored Bundles (two admins: request, then confirm)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    step = p.add_mutually_exclusive_group(required=True)
    step.add_argument("--patient", metavar="SYSTEM|VALUE", help="request: the Patient.identifier")
    step.add_argument("--confirm", metavar="REQUEST_ID", help="confirm a pending request")
    p.add_argument("--org", help="request: the org that submitted the patient's Bundles")
    p.add_argument("--by", required=True, metavar="ADMIN", help="the acting admin's client id")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_state_options(p, env)
    p.set_defaults(func=run_erase)


def parse_patient(value: str) -> tuple[str, str]:
    """SYSTEM|VALUE, as in the FHIR token search parameter (both parts required)."""
    system, sep, ident = value.partition("|")
    if not sep or not system or not ident:
        raise ValueError(f"--patient {value!r} is not SYSTEM|VALUE (both parts required)")
    return system, ident


def run_erase(args: argparse.Namespace) -> int:
    try:
        patient = parse_patient(args.patient) if args.patient is not None else None
    except ValueError as e:
        return _fail(EXIT_USAGE, str(e))
    if patient is not None and not args.org:
        return _fail(EXIT_USAGE, "--patient needs --org: the org that submitted the patient")
    settings = settings_from_args(args)
    try:
        engine, opened = open_store(settings)
        log, _ = open_log(settings, engine)
        admin = erasure.admin_by_token(engine, args.by, args.environment.admin_token)
        if patient is not None:
            request_id = erasure.request_erasure(opened, args.org, patient, admin)
            return _done(
                args,
                {"request": request_id, "status": "pending", "requested_by": admin.client_id},
                f"erasure request {request_id} recorded; a second admin confirms it with\n"
                f"  medledger erase --confirm {request_id} --by ADMIN",
            )
        done = erasure.confirm_erasure(log, opened, args.confirm, admin)
    except erasure.NotAllowed as e:
        return _fail(EXIT_USAGE, str(e))
    except (erasure.ErasureError, vault.VaultError) as e:
        return _fail(EXIT_MALFORMED, str(e))
    except (LedgerUnavailable, SQLAlchemyError) as e:
        return _fail(EXIT_UNAVAILABLE, f"the database is unavailable: {e}")
    except LedgerError as e:
        return _fail(EXIT_MALFORMED, str(e))
    return _done(
        args,
        {
            "request": done.request_id,
            "status": "erased",
            "index": done.index,
            "keys": done.keys,
            "bundles": done.bundles,
            "index_rows": done.index_rows,
        },
        f"erased: {done.keys} data key(s), {done.bundles} Bundle(s) unreadable, "
        f"{done.index_rows} index row(s) deleted; ledger entry {done.index} records it",
    )


def _done(args: argparse.Namespace, doc: dict[str, object], text: str) -> int:
    print(json.dumps(doc) if args.json else text)
    return EXIT_OK


def _fail(code: int, message: str) -> int:
    print(f"medledger erase: {message}", file=sys.stderr)
    return code
