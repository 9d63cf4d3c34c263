"""`medledger witness init|serve|vkey`: a transparency-log witness, the same program as
``python -m ledger.witness`` (docs/witness.md), for whoever has medledger installed.

Thin over ledger.witness: init makes a data directory a witness and prints its verifier key,
vkey prints it again, serve answers POST /add-checkpoint for the logs given by --log until
interrupted. Exit codes: 0 ok; 1 usage; 2 the address cannot be bound; 3 the data directory
or a log key is unusable.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from exchange.cli.exits import EXIT_MALFORMED, EXIT_OK, EXIT_UNAVAILABLE
from exchange.config import Environment
from ledger import witness

EXAMPLES = """\
examples:
  medledger witness init --data /var/lib/witness --name witness.ha.example/w1
  medledger witness serve --data /var/lib/witness --log "$(curl -s $LOG/v1/log/key)" \\
      --host 0.0.0.0 --port 8742
  medledger witness vkey --data /var/lib/witness      # the line for the log's policy file

The log's operator lists the witness in its policy file:
  witness HA <vkey> https://witness.ha.example
"""


def register(sub: argparse._SubParsersAction[Any], env: Environment) -> None:
    p = sub.add_parser(
        "witness",
        help="run a witness that cosigns a log's checkpoints (C2SP tlog-witness)",
        description="A witness: cosigns a log's checkpoints once it has checked that each "
        "extends the last one it saw.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="witness", required=True)
    i = actions.add_parser("init", help="create a witness key and print its verifier key")
    i.add_argument("--data", type=Path, required=True, metavar="DIR")
    i.add_argument("--name", required=True, help="the witness's key name, e.g. witness.example/w1")
    i.set_defaults(func=run_init)
    v = actions.add_parser("vkey", help="print the witness's verifier key")
    v.add_argument("--data", type=Path, required=True, metavar="DIR")
    v.set_defaults(func=run_vkey)
    s = actions.add_parser("serve", help="serve POST /add-checkpoint")
    s.add_argument("--data", type=Path, required=True, metavar="DIR")
    s.add_argument(
        "--log",
        action="append",
        required=True,
        metavar="VKEY",
        help="the verifier key of a log to follow (repeat for several logs)",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (%(default)s)")
    s.add_argument("--port", type=int, default=8742, help="port to listen on (%(default)s)")
    s.set_defaults(func=run_serve)


def _fail(code: int, message: str) -> int:
    print(f"medledger witness: {message}", file=sys.stderr)
    return code


def run_init(args: argparse.Namespace) -> int:
    try:
        print(witness.init(args.data, args.name))
    except (witness.WitnessSetupError, witness.WitnessStoreError, OSError) as e:
        return _fail(EXIT_MALFORMED, str(e))
    return EXIT_OK


def run_vkey(args: argparse.Namespace) -> int:
    try:
        print(witness.vkey(args.data))
    except (witness.WitnessSetupError, witness.WitnessStoreError, OSError) as e:
        return _fail(EXIT_MALFORMED, str(e))
    return EXIT_OK


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        server = witness.serve(args.data, args.log, args.host, args.port)
    except (witness.WitnessSetupError, witness.WitnessStoreError) as e:
        return _fail(EXIT_MALFORMED, str(e))
    except OSError as e:
        return _fail(EXIT_UNAVAILABLE, f"cannot listen on {args.host}:{args.port}: {e.strerror}")
    print(f"witness {server.witness.verifier.vkey()}", flush=True)
    print(f"listening on {server.url}", flush=True)
    server.serve_until_signalled()
    return EXIT_OK
