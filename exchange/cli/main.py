"""`medledger`: a thin command line over the library. Each command group lives in its own module.

Exit codes everywhere: 0 ok; 1 usage; 2 network/unavailable; 3 malformed input or local state;
4 verification failed; 5 proven log misbehaviour.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_UNAVAILABLE = 2
EXIT_MALFORMED = 3
EXIT_VERIFY_FAILED = 4
EXIT_MISBEHAVIOUR = 5

# Modules that add subcommands: each has register(subparsers) -> None.
COMMAND_MODULES = (
    "exchange.cli.serve",
    "exchange.cli.clients",
    "exchange.cli.audit",
    "exchange.cli.adapt",
    "exchange.cli.recipients",
    "exchange.cli.institutions",
    "exchange.cli.keys",
    "exchange.cli.erase",
    "exchange.cli.report",
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
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
