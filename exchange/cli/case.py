"""`medledger case export|verify`: a dispute's case package (docs/disputes.md).

    MEDLEDGER_ADMIN_TOKEN=mlt_... medledger case export --by admin-1 \\
        --patient 'urn:oid:2.16.840.1.113883.2.6|P-0042' --org boao-lecheng-intl \\
        --from 2026-03-01 --to 2026-03-31 --out case.zip
    medledger case verify case.zip --key log.vkey
    medledger case verify case.zip --key 'medledger.example/log+5f0e1a2b+AQ...' \\
        --policy witnesses.policy
    medledger case verify case.zip --key log.vkey --json

`export` (an admin, authenticated by its own mlt_ credential in MEDLEDGER_ADMIN_TOKEN) writes
every stored version of the patient's Bundles at ORG whose treatment date is in the period,
the registry's attestations and the patient's accounting, with receipts against the log's
current checkpoint; the export is itself an access entry about each patient the package
names. Exit codes: 0 written; 1 usage or refused (not an admin, the file exists, no record
in the period, an unknown or erased patient); 2 database unavailable; 3 local state missing.

`verify` checks a package offline. Take the log's key from its operator or another trusted
source (GET /v1/log/key), never from the package. Prints one line per member saying what it
proves. Exit codes: 0 every member holds; 1 usage; 3 not a case package (or an unreadable key
or policy); 4 a member does not verify, named on the first line of the error.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from exchange.bootstrap import open_log, open_store
from exchange.cases import CaseError, CaseMalformed, CaseReport, verify_package
from exchange.cli.erase import parse_patient
from exchange.cli.exits import (
    EXIT_MALFORMED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    exit_code,
)
from exchange.config import Environment, add_state_options, settings_from_args
from exchange.disputes import CaseRequest, Period, export_case
from exchange.errors import MedledgerError
from exchange.indexes.derived import Indexes
from exchange.privacy import erasure
from exchange.vault import VaultError
from ledger.errors import LedgerError, LedgerUnavailable
from ledger.policy import Policy, PolicyError, load_policy

MAX_KEY_FILE_BYTES = 64 * 1024


def register(sub: argparse._SubParsersAction[Any], env: Environment) -> None:
    p = sub.add_parser(
        "case",
        help="dispute case packages: export one for a patient, verify one offline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    steps = p.add_subparsers(dest="case_command", required=True)
    x = steps.add_parser(
        "export",
        help="write a patient's case package (admin)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    x.add_argument("--patient", required=True, metavar="SYSTEM|VALUE", help="Patient.identifier")
    x.add_argument("--org", required=True, help="the hospital that submitted the patient")
    x.add_argument("--from", dest="start", type=_day, help="first treatment date (YYYY-MM-DD)")
    x.add_argument("--to", dest="end", type=_day, help="last treatment date (YYYY-MM-DD)")
    x.add_argument("--out", required=True, type=Path, help="the package to write (.zip, new)")
    x.add_argument("--by", required=True, metavar="ADMIN", help="the acting admin's client id")
    x.add_argument("--json", action="store_true", help="machine-readable output")
    add_state_options(x, env)
    x.set_defaults(func=run_export)
    v = steps.add_parser(
        "verify",
        help="re-check every receipt, commitment, proof and signature of a package",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument("package", type=Path, help="the case package (.zip)")
    v.add_argument(
        "--key",
        action="append",
        required=True,
        metavar="VKEY",
        help="the log's verifier key, as text or a file of one key per line (repeatable)",
    )
    v.add_argument("--policy", type=Path, help="a witness policy the newest checkpoint must meet")
    v.add_argument("--json", action="store_true", help="machine-readable output")
    v.set_defaults(func=run_verify)


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def run_export(args: argparse.Namespace) -> int:
    try:
        patient = parse_patient(args.patient)
        req = CaseRequest(args.org, patient, Period(args.start, args.end))
    except (ValueError, MedledgerError) as e:
        return _fail_export(args, EXIT_USAGE, str(e))
    if args.out.exists():
        return _fail_export(args, EXIT_USAGE, f"{args.out} exists: name a new file with --out")
    settings = settings_from_args(args)
    try:
        engine, opened = open_store(settings)
        log, _ = open_log(settings, engine)
        try:
            admin = erasure.admin_by_token(engine, args.by, args.environment.admin_token)
            done = export_case(opened, Indexes(opened), log, req, admin, purpose="HLEGAL")
        finally:
            log.close()
    except erasure.NotAllowed as e:
        return _fail_export(args, EXIT_USAGE, str(e))
    except MedledgerError as e:
        return _fail_export(args, exit_code(e), e.diagnostics)
    except (LedgerUnavailable, SQLAlchemyError) as e:
        return _fail_export(args, EXIT_UNAVAILABLE, f"the database is unavailable: {e}")
    except (LedgerError, VaultError) as e:
        return _fail_export(args, EXIT_MALFORMED, str(e))
    try:
        with args.out.open("xb") as f:
            f.write(done.package)
    except OSError as e:
        return _fail_export(args, EXIT_USAGE, f"cannot write {args.out}: {e.strerror or e}")
    doc = {
        "out": str(args.out),
        "bytes": len(done.package),
        "documents": done.documents,
        "disclosures": done.disclosures,
        "checkpoint_size": done.checkpoint_size,
        "access_entries": done.access_entries,
    }
    print(
        json.dumps(doc)
        if args.json
        else f"wrote {args.out}: {done.documents} document(s), {done.disclosures} access "
        f"entries, receipts against checkpoint size {done.checkpoint_size}; the export is "
        f"recorded as access entry {', '.join(map(str, done.access_entries))}"
    )
    return EXIT_OK


def _fail_export(args: argparse.Namespace, code: int, message: str) -> int:
    if args.json:
        print(json.dumps({"exit": code, "error": message}))
    else:
        print(f"medledger case export: {message}", file=sys.stderr)
    return code


def run_verify(args: argparse.Namespace) -> int:
    try:
        keys = _keys(args.key)
        policy = _policy(args.policy)
        report = verify_package(args.package, keys, policy)
    except CaseError as e:
        return _fail(args, e.exit_code, str(e), e.member)
    except OSError as e:
        return _fail(args, EXIT_MALFORMED, f"cannot read {args.package}: {e.strerror or e}", None)
    _print(args, report)
    return EXIT_OK


def _keys(values: list[str]) -> list[str]:
    """Vkey texts from --key values: the text itself, or a file of one key per line."""
    out: list[str] = []
    for value in values:
        path = Path(value)
        if "+" in value and not path.is_file():
            out.append(value)
            continue
        try:
            with path.open("rb") as f:
                text = f.read(MAX_KEY_FILE_BYTES + 1)
            if len(text) > MAX_KEY_FILE_BYTES:
                raise ValueError(f"over {MAX_KEY_FILE_BYTES:,} bytes")
            lines = text.decode("utf-8").splitlines()
        except (OSError, ValueError) as e:
            raise CaseMalformed(
                None, f"--key {value!r} is neither a verifier key nor a file ({e})"
            ) from e
        keys = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        if not keys:
            raise CaseMalformed(None, f"--key file {value} holds no key")
        out += keys
    return out


def _policy(path: Path | None) -> Policy | None:
    if path is None:
        return None
    try:
        return load_policy(path)
    except (OSError, PolicyError) as e:
        raise CaseMalformed(None, f"--policy {path}: {e}") from e


def _print(args: argparse.Namespace, report: CaseReport) -> None:
    if args.json:
        out = {
            "result": "ok",
            "exit": EXIT_OK,
            "origin": report.origin,
            "checkpoint_size": report.checkpoint_size,
            "latest_size": report.latest_size,
            "witnesses": list(report.witnesses),
            "members": [{"member": f.member, "proves": f.proves} for f in report.findings],
        }
        print(json.dumps(out, indent=1, ensure_ascii=False))
        return
    print(
        f"OK: case package of log {report.origin}, receipts against size "
        f"{report.checkpoint_size}, consistent with size {report.latest_size}"
        + (f", witnessed by {', '.join(report.witnesses)}" if report.witnesses else "")
    )
    for line in report.lines():
        print(f"  {line}")


def _fail(args: argparse.Namespace, code: int, message: str, member: str | None) -> int:
    if args.json:
        out = {"result": "malformed" if code == EXIT_MALFORMED else "failed", "exit": code}
        print(json.dumps({**out, "member": member, "error": message}, indent=1, ensure_ascii=False))
    else:
        print(f"medledger case verify: {message}", file=sys.stderr)
    return code
