"""``python -m ledger.witness``: run a witness without the rest of medledger.

    python -m ledger.witness init --data DIR --name NAME
    python -m ledger.witness vkey --data DIR
    python -m ledger.witness serve --data DIR --log VKEY [--log VKEY ...] [--host H] [--port P]

init prints the new witness's verifier key; serve prints ``listening on <url>`` once bound
and serves until interrupted. Exit codes: 0 ok, 1 usage, 2 the address cannot be bound,
3 the data directory or a log key is unusable.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import WitnessSetupError, WitnessStoreError, init, serve, vkey


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m ledger.witness", description=__doc__.split("\n")[0]
    )
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", help="create a witness key and print its verifier key")
    p.add_argument("--data", type=Path, required=True, metavar="DIR")
    p.add_argument("--name", required=True, help="the witness's key name, e.g. witness.example/w1")
    p = sub.add_parser("vkey", help="print the witness's verifier key")
    p.add_argument("--data", type=Path, required=True, metavar="DIR")
    p = sub.add_parser("serve", help="serve POST /add-checkpoint")
    p.add_argument("--data", type=Path, required=True, metavar="DIR")
    p.add_argument("--log", action="append", required=True, metavar="VKEY", help="a log to follow")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8742)
    args = ap.parse_args(argv)
    try:
        if args.command == "init":
            print(init(args.data, args.name))
        elif args.command == "vkey":
            print(vkey(args.data))
        else:
            return _serve(args)
    except (WitnessSetupError, WitnessStoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    return 0


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        server = serve(args.data, args.log, args.host, args.port)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port}: {e.strerror}", file=sys.stderr)
        return 2
    print(f"witness {server.witness.verifier.vkey()}", flush=True)
    print(f"listening on {server.url}", flush=True)
    server.serve_until_signalled()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
