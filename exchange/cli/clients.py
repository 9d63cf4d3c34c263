"""`medledger clients add|list|revoke|rotate|mllp`: API clients and their credentials.

A thin layer over exchange.auth. A credential is printed once (by add and rotate) and kept
only as its SHA-256. revoke and rotate take effect on the next request of a running server:
it reads the credential epoch those commands bump before it trusts a cached credential.

Exit codes: 0 ok; 1 usage (an unknown role, a missing or malformed org, a bad --expires, an
unreadable file, --jwks and --jwks-url together); 2 the database is unavailable; 3 malformed
input or local state (a JWKS or JWKS URL that cannot be registered, an unknown or revoked client
id, no database where --data points).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from exchange.bootstrap import open_engine
from exchange.cli.exits import EXIT_MALFORMED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from exchange.config import Environment, Settings, add_state_options, settings_from_args
from exchange.consent.crossborder import recipient_of
from exchange.identity import clients as auth
from exchange.identity.mllp import register_sender
from exchange.identity.smart import JwksError
from ledger.errors import LedgerUnavailable
from ledger.store import sqlite_url

EXPIRES_HELP = (
    "when the credential stops working: a duration from now (90d, 12h, 30m) or an RFC 3339 "
    "time with its offset (default: never)"
)


JWKS_URL_HELP = (
    "instead of --jwks: the https URL the client publishes its JWKS at (http only on a "
    "loopback host); the server fetches it when the client asks for a token, and again "
    "when an assertion names a kid it lacks (docs/smart.md)"
)


def register(sub: argparse._SubParsersAction[Any], env: Environment) -> None:
    clients = sub.add_parser("clients", help="API clients and their bearer credentials")
    csub = clients.add_subparsers(dest="clients_command", required=True)
    add = csub.add_parser(
        "add",
        help="register a client and print its credential (once)",
        description="Registers an API client. Its credential is printed once; the database "
        "keeps only its SHA-256.",
        epilog="example: medledger clients add --name 'Boao HIS' --role hospital "
        "--org boao-lecheng-intl --expires 365d --json",
    )
    add_state_options(add, env)
    add.add_argument("--name", required=True, help="a label for people reading the list")
    add.add_argument("--role", required=True, choices=auth.ROLES)
    add.add_argument(
        "--org",
        help="the organisation the client acts for (required for hospital, insurer and "
        "regulator): a FHIR id, as in Organization/<org>",
    )
    keys = add.add_mutually_exclusive_group()
    keys.add_argument(
        "--jwks",
        type=Path,
        metavar="FILE",
        help="a JWKS file of the client's public keys (EC P-384, RSA, Ed25519; each with a "
        "unique kid), for SMART Backend Services tokens at POST /auth/token",
    )
    keys.add_argument("--jwks-url", metavar="URL", help=JWKS_URL_HELP)
    add.add_argument("--expires", metavar="WHEN", help=EXPIRES_HELP)
    add.add_argument("--json", action="store_true", help="print JSON")
    add.set_defaults(func=run_add)

    ls = csub.add_parser(
        "list", help="list registered clients and their status (never their credentials)"
    )
    add_state_options(ls, env)
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=run_list)

    revoke = csub.add_parser(
        "revoke",
        help="revoke a client: its credential, SMART keys and access tokens stop working",
        description="Revokes a client for good. Its mlt_ credential, its issued SMART access "
        "tokens and its JWKS stop working on the next request, also of a running server. "
        "Revoking a revoked client changes nothing (exit 0).",
    )
    add_state_options(revoke, env)
    revoke.add_argument("client_id", help="as medledger clients list shows it (cl-…)")
    revoke.add_argument("--json", action="store_true", help="print JSON")
    revoke.set_defaults(func=run_revoke)

    rotate = csub.add_parser(
        "rotate",
        help="give a client a new credential (the old one dies), or replace its JWKS",
        description="Without --jwks or --jwks-url: prints a new mlt_ credential once; the old "
        "one stops working on the next request. With either: replaces the client's SMART keys; "
        "assertions signed by the old keys are refused and the access tokens they got stop "
        "working. Either way the client's issued SMART access tokens die.",
    )
    add_state_options(rotate, env)
    rotate.add_argument("client_id", help="as medledger clients list shows it (cl-…)")
    which = rotate.add_mutually_exclusive_group()
    which.add_argument("--expires", metavar="WHEN", help=EXPIRES_HELP)
    which.add_argument("--jwks", type=Path, metavar="FILE", help="the client's new JWKS file")
    which.add_argument("--jwks-url", metavar="URL", help="the client's new JWKS URL")
    rotate.add_argument("--json", action="store_true", help="print JSON")
    rotate.set_defaults(func=run_rotate)

    mllp = csub.add_parser(
        "mllp",
        help="let a home hospital send HL7 v2 over MLLP as this hospital client",
        description="Messages to `serve --mllp-port` from this peer address, or naming this "
        "sending facility (MSH-4), are submitted as the hospital client. A peer address is "
        "the stronger: MSH-4 is what the sender says it is (docs/threat-model.md).",
    )
    add_state_options(mllp, env)
    mllp.add_argument("client_id", help="a hospital client, as medledger clients list shows it")
    by = mllp.add_mutually_exclusive_group(required=True)
    by.add_argument("--peer", metavar="ADDRESS", help="the sender's IP address")
    by.add_argument("--facility", metavar="MSH4", help="MSH-4's first component")
    mllp.add_argument("--json", action="store_true", help="print JSON")
    mllp.set_defaults(func=run_mllp)


def _fail(message: str, code: int) -> int:
    print(f"medledger: {message}", file=sys.stderr)
    return code


def _open_tables(settings: Settings, *, create: bool) -> Engine:
    """The database with the exchange's tables; with `create`, a new SQLite one if absent."""
    if settings.db_url is None:
        if not create and not Path(sqlite_url(settings.data_dir)[len("sqlite:///") :]).is_file():
            raise FileNotFoundError(f"no medledger database in {settings.data_dir}")
    return open_engine(settings)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _Usage(f"cannot read the {what} {path}: {e}") from None


class _Usage(Exception):
    pass


def _expiry(text: str | None) -> int | None:
    return None if text is None else auth.expiry(text, datetime.now(UTC))


def _show(info: dict[str, Any], as_json: bool, note: str | None = None) -> None:
    if as_json:
        print(json.dumps(info))
        return
    for k, v in info.items():
        print(f"{k}: {v if v is not None else '-'}")
    if note:
        print(note)


def _when(expires: int | None) -> str | None:
    if expires is None:
        return None
    return datetime.fromtimestamp(expires, UTC).isoformat().replace("+00:00", "Z")


def _guarded(args: argparse.Namespace, *, create: bool, work: Any) -> int:
    """Runs `work(engine)` with every failure mapped to its exit code."""
    engine = None
    try:
        engine = _open_tables(settings_from_args(args), create=create)
        return int(work(engine))
    except (_Usage, auth.ClientError) as e:
        return _fail(str(e), EXIT_USAGE)
    except (JwksError, auth.ClientStateError, FileNotFoundError) as e:
        return _fail(str(e), EXIT_MALFORMED)
    except (LedgerUnavailable, SQLAlchemyError) as e:
        return _fail(f"the database cannot be used: {e}", EXIT_UNAVAILABLE)
    finally:
        if engine is not None:
            engine.dispose()


def run_add(args: argparse.Namespace) -> int:
    try:
        expires = _expiry(args.expires)
    except auth.ClientError as e:
        return _fail(str(e), EXIT_USAGE)

    def work(engine: Engine) -> int:
        jwks = _read(args.jwks, "JWKS file") if args.jwks is not None else None
        client, token = auth.register_client(
            engine, args.name, args.role, args.org, jwks, expires, args.jwks_url
        )
        info = {
            "client_id": client.client_id,
            "token": token,
            "name": client.name,
            "role": client.role,
            "org": client.org,
            "expires": _when(expires),
        }
        if args.jwks_url is not None:
            info["jwks_url"] = args.jwks_url
        _show(info, args.json, "The token is shown only now: store it. The server keeps only "
              "its hash.")  # fmt: skip
        if client.role == "insurer" and client.org and recipient_of(engine, client.org) is None:
            # Else its searches answer an empty searchset, like an insurer without claims.
            print(
                f"medledger clients: note: {client.org} is not a recorded recipient yet, so no "
                "patient's data can be provided to it: record where it is and the legal basis "
                f"with\n  medledger recipients set --org {client.org} --country CC --basis BASIS"
                " (docs/insurer-pull.md)",
                file=sys.stderr,
            )
        return EXIT_OK

    return _guarded(args, create=True, work=work)


def run_list(args: argparse.Namespace) -> int:
    def work(engine: Engine) -> int:
        now = time.time()
        rows = [
            {
                "client_id": c.client_id,
                "name": c.name,
                "role": c.role,
                "org": c.org,
                "status": c.status(now),
                "created": c.created,
                "expires": _when(c.expires),
                "revoked": c.revoked,
                "smart": c.smart,
            }
            for c in auth.list_clients(engine)
        ]
        if args.json:
            print(json.dumps(rows))
        for r in [] if args.json else rows:
            print(f"{r['client_id']}  {r['role']:<9}  {r['status']:<7}  {r['org'] or '-':<24}  "
                  f"{r['name']}")  # fmt: skip
        return EXIT_OK

    return _guarded(args, create=True, work=work)


def run_revoke(args: argparse.Namespace) -> int:
    def work(engine: Engine) -> int:
        if auth.revoke_client(engine, args.client_id):
            note = "Its credential, SMART keys and access tokens no longer work."
        else:
            note = "It was revoked already."
        _show({"client_id": args.client_id, "revoked": True}, args.json, note)
        return EXIT_OK

    return _guarded(args, create=False, work=work)


def run_rotate(args: argparse.Namespace) -> int:
    try:
        expires = _expiry(args.expires)
    except auth.ClientError as e:
        return _fail(str(e), EXIT_USAGE)

    def work(engine: Engine) -> int:
        if args.jwks is not None or args.jwks_url is not None:
            jwks = _read(args.jwks, "JWKS file") if args.jwks is not None else None
            auth.replace_jwks(engine, args.client_id, jwks, args.jwks_url)
            info = {"client_id": args.client_id, "jwks": "replaced"}
            _show(info, args.json, "Assertions signed by the old keys are refused from now on.")
            return EXIT_OK
        token = auth.rotate_token(engine, args.client_id, expires)
        info = {"client_id": args.client_id, "token": token, "expires": _when(expires)}
        _show(info, args.json, "The new token is shown only now: store it. The old one no "
              "longer works.")  # fmt: skip
        return EXIT_OK

    return _guarded(args, create=False, work=work)


def run_mllp(args: argparse.Namespace) -> int:
    kind, value = ("peer", args.peer) if args.peer is not None else ("facility", args.facility)

    def work(engine: Engine) -> int:
        try:
            register_sender(engine, args.client_id, kind, value)
        except ValueError as e:
            raise _Usage(str(e)) from None
        _show({"client_id": args.client_id, kind: value}, args.json, "HL7 v2 is taken from it.")
        return EXIT_OK

    return _guarded(args, create=False, work=work)
