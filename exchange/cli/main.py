"""`medledger`: a thin command line over the library. Each command group lives in its own module.

Exit codes everywhere (exchange.cli.exits): 0 ok; 1 usage; 2 network/unavailable; 3 malformed
input or local state; 4 verification failed; 5 proven log misbehaviour; 6 not witnessed
enough. The environment is read once, here (exchange.config.Environment), and gives the
options' defaults.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from exchange import __version__
from exchange.cli import (
    access,
    adapt,
    audit,
    backup,
    case,
    clients,
    deliveries,
    erase,
    inspections,
    institutions,
    keys,
    practitioners,
    recipients,
    report,
    serve,
    tiles,
    verify,
    witness,
)
from exchange.cli.exits import EXIT_USAGE
from exchange.config import Environment

# The command groups, each a module with register(subparsers, environment) -> None.
COMMANDS = (
    serve,
    clients,
    verify,
    audit,
    adapt,
    recipients,
    access,
    deliveries,
    institutions,
    practitioners,
    inspections,
    keys,
    backup,
    erase,
    report,
    case,
    tiles,
    witness,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="medledger",
        description="Cross-border medical record exchange and traceability ledger.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"medledger {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    env = Environment.read()
    for command in COMMANDS:
        command.register(sub, env)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
