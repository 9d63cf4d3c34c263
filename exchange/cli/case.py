"""`medledger case verify`: check a dispute's case package offline (docs/disputes.md).

    medledger case verify case.zip --key log.vkey
    medledger case verify case.zip --key 'medledger.example/log+5f0e1a2b+AQ...' \\
        --policy witnesses.policy
    medledger case verify case.zip --key log.vkey --json

Take the log's key from its operator or another trusted source (GET /v1/log/key), never from
the package. Prints one line per member saying what it proves. Exit codes: 0 every member
holds; 1 usage; 3 not a case package (or an unreadable key or policy); 4 a member does not
verify, named on the first line of the error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from exchange.cases import CaseError, CaseMalformed, CaseReport, verify_package
from exchange.cli.exits import EXIT_MALFORMED, EXIT_OK
from exchange.config import Environment
from ledger.policy import Policy, PolicyError, load_policy

MAX_KEY_FILE_BYTES = 64 * 1024


def register(sub: argparse._SubParsersAction[Any], env: Environment) -> None:
    del env  # a package is verified offline: no store, no settings
    p = sub.add_parser(
        "case",
        help="dispute case packages: verify one offline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    steps = p.add_subparsers(dest="case_command", required=True)
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
