"""`medledger tiles sync --out DIR [--witnessed]`: the log's C2SP tiles written to a directory.

Thin over ledger.tiles.sync: the tree of the log's latest checkpoint (with --witnessed, of the
newest one its witness policy's quorum cosigned, kept by `serve --policy`), as
`GET /tlog/...` serves it, written under DIR for any static host or object store to serve
(docs/witness.md, "Tiles"). Incremental: a second run writes only the tiles that are new,
and the checkpoint when it changed; the partial tiles of a tile that is now full are removed.
Prints each path written (the checkpoint last), each one removed, then a summary.

Exit codes: 0 ok; 2 the database unavailable; 3 no log in the database (or no witnessed
checkpoint kept), the directory holds another log's tiles (or a tree this log does not
extend), or it cannot be written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from exchange.bootstrap import open_engine, open_log
from exchange.cli.exits import EXIT_MALFORMED, EXIT_OK, EXIT_UNAVAILABLE
from exchange.config import Environment, add_state_options, settings_from_args
from exchange.keys.keyring import KeyringError
from ledger.errors import LedgerError, LedgerUnavailable
from ledger.tiles import TileError
from ledger.tiles.sync import SyncResult, sync

EXAMPLES = """\
examples:
  medledger tiles sync --data ./medledger-data --out /srv/www/tlog
  medledger tiles sync --data ./medledger-data --out /srv/www/tlog --witnessed
  medledger tiles sync --db postgresql+psycopg://medledger@db/medledger --key-file log.key \\
      --out /srv/www/tlog --json

Serve DIR at any prefix; readers audit it with `medledger audit --tiles https://host/tlog`.
"""


def register(sub: argparse._SubParsersAction[Any], env: Environment) -> None:
    p = sub.add_parser("tiles", help="the log's C2SP tiles as static files")
    actions = p.add_subparsers(dest="tiles", required=True)
    s = actions.add_parser(
        "sync",
        help="write the log's tiles to a directory, incrementally",
        description="Writes the tiles of the log's latest checkpoint under DIR.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--out", type=Path, required=True, metavar="DIR", help="the tile directory")
    s.add_argument(
        "--witnessed",
        action="store_true",
        help="write the tree of the newest witnessed checkpoint, cosignatures included, that "
        "`serve --policy` keeps beside the log's checkpoint (for readers with --policy)",
    )
    s.add_argument("--json", action="store_true", help="print one JSON object")
    add_state_options(s, env)
    s.set_defaults(func=run_sync)


def _fail(code: int, message: str) -> int:
    print(f"medledger tiles: {message}", file=sys.stderr)
    return code


def run_sync(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if settings.db_url is None and not (settings.data_dir / "medledger.db").exists():
        return _fail(EXIT_MALFORMED, f"no log in {settings.data_dir}: pass its --data or --db")
    note = None
    if args.witnessed:
        try:
            note = settings.witnessed_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            return _fail(
                EXIT_MALFORMED,
                f"no witnessed checkpoint in {settings.witnessed_path} ({e}): run the service "
                "with --policy until its witnesses cosign one",
            )
    try:
        log, _ = open_log(settings, open_engine(settings))
        try:
            result = sync(log, args.out, note=note)
        finally:
            log.close()
    except TileError as e:
        return _fail(EXIT_MALFORMED, f"{e}")
    except (LedgerUnavailable, SQLAlchemyError) as e:
        return _fail(EXIT_UNAVAILABLE, f"the database cannot be read: {e}")
    except (KeyringError, LedgerError) as e:
        return _fail(EXIT_MALFORMED, f"the log's local state is unusable: {e}")
    except OSError as e:
        return _fail(EXIT_MALFORMED, f"cannot write the tiles under {args.out}: {e}")
    _print(result, args)
    return EXIT_OK


def _print(r: SyncResult, args: argparse.Namespace) -> None:
    if args.json:
        out = {
            "size": r.size,
            "out": str(args.out),
            "written": list(r.written),
            "unchanged": r.unchanged,
            "removed": list(r.removed),
        }
        print(json.dumps(out, indent=1))
        return
    for path in r.written:
        print(path)
    for path in r.removed:
        print(f"removed {path}")
    print(
        f"tiles of {r.size:,} entries under {args.out}: {len(r.written)} written, "
        f"{r.unchanged} unchanged, {len(r.removed)} removed",
        file=sys.stderr,
    )
