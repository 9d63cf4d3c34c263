"""`medledger audit`: a whole log re-derived from its API, its database or its tiles.

Thin over ledger/audit.py: read keys and policy, pick a source, print what was found. Exit
codes: 0 ok; 1 usage; 2 network or database unavailable; 3 malformed input or local state;
4 verification failed (names the first bad index); 5 proven log misbehaviour; 6 not
witnessed enough (with --policy: everything verifies, the quorum's cosignatures do not).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exchange.audit.sources import DbSource, HttpSource, NotALog
from exchange.cli.exits import (
    EXIT_MALFORMED,
    EXIT_MISBEHAVIOUR,
    EXIT_NOT_WITNESSED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    EXIT_VERIFY_FAILED,
)
from exchange.cli.trust import (
    KEY_HINT,
    Failure,
    add_key,
    add_policy,
    finish,
    load_keys,
    not_witnessed,
    policy_keys,
    policy_of,
)
from exchange.config import Environment
from exchange.keys.keyring import source_keyset
from ledger.audit import (
    AuditResult,
    AuditUsageError,
    SourceMalformed,
    SourceUnavailable,
    audit,
    explain_consistency,
)
from ledger.audit.state import StateError, atomic_write, load_state, save_state
from ledger.encoding import b64
from ledger.keyset import KeyRuleError, KeySet
from ledger.note import Verifier
from ledger.tiles.source import open_tiles

DEFAULT_TIMEOUT = 3600.0
"""Seconds an `audit --url` run may take unless --timeout says otherwise: ample for a large log
over a slow link, and an end for one served a byte at a time."""

AUDIT_EXAMPLES = """\
Reads every entry and re-derives, trusting the source for nothing: each entry's canonical
form, the hash chain, the RFC 6962 tree and its root at the latest signed checkpoint; from a
database also every stored checkpoint and stored tree hash. With --state it resumes after the
last verified checkpoint, proves the log only grew since, and saves the new checkpoint
(atomically, with a checksum). Reads need no credential: log reads carry no personal data.

examples:
  medledger audit --url https://ledger.example:8000 --key log.vkey --state audit.json
  medledger audit --db ./medledger-data --key log.vkey
  medledger audit --db postgresql+psycopg://auditor@db/medledger --key log.vkey --json
  medledger audit --url http://127.0.0.1:8000 --key old.vkey --key new.vkey --from 1000000
  medledger audit --tiles https://cdn.example/tlog --key log.vkey --state audit.json
  medledger audit --url https://ledger.example:8000 --policy witnesses.policy

--tiles reads the log's C2SP tiles (GET /tlog/..., or a directory `medledger tiles sync`
wrote) and nothing else: pass every key the log signed with, as tiles carry no key list.
From --url or --db the audit derives the log's keys from its key entries, anchored in --key,
and reports each rotation it saw (key added or retired, at which entry; "key_events" in --json).
With --policy (C2SP tlog-policy) the latest checkpoint must also carry the cosignatures of
the policy's quorum; the policy's log lines are trusted as --key is.

--timeout bounds the whole run: past it the audit stops with exit 2. Answers are read
up to a size cap (gzip undone within it) and as strict JSON; one that is not what a log API
gives is exit 3 (docs/audit.md, "Hostile servers and files").

exit: 0 verified; 1 usage; 2 source unavailable or --timeout passed; 3 malformed key,
      policy or state file, or an answer no log API gives; 4 verification failed (names the
      first bad entry); 5 proven misbehaviour (writes an evidence file for `medledger
      verify-evidence`); 6 the log verifies, but its checkpoint is not witnessed enough
      (names the witnesses missing; no state is saved)
"""


def register(sub: argparse._SubParsersAction[Any], env: Environment) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "audit",
        help="re-derive a whole log from its API or database and check every signed root",
        description="Audits a medledger log with no trust in the server.",
        epilog=AUDIT_EXAMPLES,
        formatter_class=fmt,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--url", help="the server's base URL (its public /v1/log endpoints)")
    src.add_argument("--db", help="the log's database: URL, SQLite file or --data directory")
    src.add_argument(
        "--tiles",
        metavar="URL_OR_DIR",
        help="the log's C2SP tiles: their URL prefix (e.g. https://host/tlog) or a directory",
    )
    add_key(p, required=False)
    add_policy(p)
    p.add_argument("--state", type=Path, metavar="FILE", help="last verified checkpoint (kept)")
    p.add_argument(
        "--from",
        dest="from_index",
        type=_count,
        metavar="N",
        help="start at entry N; the tree before it comes from a checked inclusion proof",
    )
    p.add_argument("--evidence", type=Path, metavar="FILE", help="where to write evidence (exit 5)")
    p.add_argument(
        "--no-stored-hashes",
        action="store_true",
        help="with --db, skip comparing the stored tree hashes",
    )
    p.add_argument("--page-size", type=_count, metavar="N", help="entries per read")
    p.add_argument(
        "--token",
        default=env.token,
        help="auditor bearer token, only if the server asks for one (env MEDLEDGER_TOKEN)",
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="with --url or --tiles, the most the whole run may take (default "
        f"{DEFAULT_TIMEOUT:g}); each single read waits at most 30 s",
    )
    p.add_argument("--explain", action="store_true", help="show what was checked, step by step")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_audit)


def _seconds(s: str) -> float:
    try:
        t = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number of seconds") from None
    if not 0 < t < float("inf"):
        raise argparse.ArgumentTypeError(f"{s!r} is not a positive number of seconds")
    return t


def _count(s: str) -> int:
    try:
        n = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{s!r} is negative")
    return n


# --- audit ---------------------------------------------------------------------------------


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("auditing"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("audit", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _open_source(args: argparse.Namespace) -> Any:

    try:
        if args.url:
            src: Any = HttpSource(args.url, token=args.token, timeout=args.timeout)
        elif args.tiles:
            src = open_tiles(args.tiles, timeout=args.timeout)
        else:
            src = DbSource.from_url(args.db)
    except NotALog as e:
        raise Failure(EXIT_MALFORMED, str(e), e.hint) from e
    except SourceUnavailable as e:
        raise _source_failure(e) from e
    if args.page_size:
        src.page_size = args.page_size
    return src


def _source_failure(e: SourceUnavailable) -> Failure:
    """Exit 3 for an answer no log gives (it will not change by retrying), else 2."""
    code = EXIT_MALFORMED if isinstance(e, SourceMalformed) else EXIT_UNAVAILABLE
    return Failure(code, str(e), e.hint)


def _evidence_path(args: argparse.Namespace) -> Path:
    if args.evidence is not None:
        return Path(args.evidence)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if args.state is not None:
        return Path(args.state).with_name(f"{args.state.name}.evidence-{stamp}.json")
    return Path(f"medledger-evidence-{stamp}.json")


def run_audit(args: argparse.Namespace) -> int:
    try:
        return _audit(args)
    except Failure as f:
        return finish("audit", args, f)


def _audit(args: argparse.Namespace) -> int:
    policy = policy_of(args.policy)
    keys = load_keys(args.key or []) + policy_keys(policy)
    if not keys:
        raise Failure(EXIT_USAGE, "pass --key VKEY (or a --policy naming the log)", KEY_HINT)
    source = _open_source(args)
    # Tiles carry no key list: the keys given are all the audit trusts.
    keyset = None if args.tiles else _log_keyset(source, keys)
    if keyset is not None:
        keys += [v for v in keyset.verifiers() if v not in keys]
    state = None
    if args.state is not None:
        try:
            state = load_state(args.state, keys)
        except StateError as e:
            source.close()
            raise Failure(EXIT_MALFORMED, str(e), e.hint) from e
    bar = sys.stderr.isatty() and not args.json and not args.quiet
    try:
        with _progress(bar) as progress:
            result = audit(
                source,
                keys,
                state=state,
                from_index=args.from_index,
                check_stored=not args.no_stored_hashes,
                progress=progress,
                keyset=keyset,
                policy=policy,
            )
    except SourceUnavailable as e:
        raise _source_failure(e) from e
    except StateError as e:
        raise Failure(EXIT_MALFORMED, str(e), e.hint) from e
    except AuditUsageError as e:
        raise Failure(EXIT_USAGE, str(e), "see `medledger audit --help`") from e
    finally:
        source.close()
    out = _audit_json(result)
    out["key_events"] = _key_events(keyset)
    if result.status == "ok":
        if args.state is not None and result.state is not None:
            try:
                save_state(args.state, result.state)
            except StateError as e:
                raise Failure(EXIT_MALFORMED, str(e), e.hint, **out) from e
            out["state_file"] = str(args.state)
        code = EXIT_OK
    elif result.status == "failed":
        code = EXIT_VERIFY_FAILED
    elif result.status == "unwitnessed":
        code = EXIT_NOT_WITNESSED
    else:
        assert result.evidence is not None
        path = _evidence_path(args)
        try:
            atomic_write(path, result.evidence.to_json())
        except OSError as e:
            raise Failure(
                EXIT_MALFORMED,
                f"log misbehaviour proven, but the evidence cannot be written to {path}: "
                f"{e.strerror}",
                "pass --evidence with a writable path and audit again",
                **out,
            ) from e
        out["evidence_file"] = str(path)
        code = EXIT_MISBEHAVIOUR
    out["exit"] = code
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        _print_audit(result, out, args)
    return code


def _log_keyset(source: Any, keys: list[Verifier]) -> KeySet | None:
    """The key set of the log's own key entries (None if it never rotated), anchored in
    --key: each key document is checked against its entry and its authorising keys."""

    try:
        return source_keyset(source, keys)
    except SourceUnavailable as e:
        source.close()
        raise _source_failure(e) from e
    except KeyRuleError as e:
        source.close()
        raise Failure(
            EXIT_VERIFY_FAILED,
            f"the log's key entries do not verify: {e}",
            "check that --key is one of the log's keys (GET /v1/log/keys); if it is, report "
            "the log's key entries to its operator",
        ) from e


def _key_events(keyset: KeySet | None) -> list[dict[str, Any]]:
    """The log's key entries the audit derived its key set from, in log order."""
    if keyset is None:
        return []
    events = [
        {"index": i, "action": action, "key": f"{k.verifier.name}+{k.verifier.key_id.hex()}"}
        for k in keyset.keys
        for action, i in (("add", k.added), ("retire", k.retired))
        if i is not None
    ]
    return sorted(events, key=lambda e: e["index"])


def _print_key_events(out: dict[str, Any], file: Any = None) -> None:
    for e in out["key_events"]:
        done = "added" if e["action"] == "add" else "retired"
        print(f"  key rotation: entry {e['index']:,} {done} key {e['key']}", file=file)


def _audit_json(r: AuditResult) -> dict[str, Any]:
    rate = r.entries_checked / r.elapsed if r.elapsed > 0 else None
    err = r.error
    return {
        "result": r.status,
        "origin": r.origin,
        "size": r.size,
        "root": b64(r.root),
        "start": r.start,
        "entries_checked": r.entries_checked,
        "checkpoints_checked": r.checkpoints_checked,
        "stored_hashes_checked": r.hashes_checked,
        "seconds": round(r.elapsed, 3),
        "entries_per_second": None if rate is None else round(rate),
        "consistent_with": None
        if r.previous is None or r.status != "ok"
        else {"size": r.previous.size, "root": b64(r.previous.root)},
        "error": None
        if err is None
        else {
            "index": err.index,
            "code": err.code,
            "checkpoint": err.checkpoint,
            "message": str(err),
            "next": err.hint,
        },
        "evidence": None if r.evidence is None else json.loads(r.evidence.to_json()),
        "notes": r.notes,
        "witnesses": list(r.witnesses),
        "missing": [] if r.unwitnessed is None else list(r.unwitnessed.missing),
    }


def _print_audit(r: AuditResult, out: dict[str, Any], args: argparse.Namespace) -> None:
    checked = (
        f"{r.entries_checked:,} entries (canonical form, hash chain, tree)"
        f", {r.checkpoints_checked:,} stored checkpoints"
        + (f", {r.hashes_checked:,} stored hashes" if r.hashes_checked else "")
    )
    if r.status == "ok":
        print(f"OK: log {r.origin}, {r.size:,} entries, root {b64(r.root)}")
        start = f" from entry {r.start:,}" if r.start else ""
        print(f"  checked{start}: {checked}")
        if r.previous is not None and r.previous.size == r.size:
            print(f"  unchanged since the last verified checkpoint (size {r.size:,})")
        elif r.previous is not None:
            print(
                f"  extends the last verified checkpoint (size {r.previous.size:,}) without "
                "changing it"
            )
        if "state_file" in out:
            print(f"  state saved to {out['state_file']}")
        if r.elapsed > 0 and r.entries_checked:
            print(f"  {r.entries_checked / r.elapsed:,.0f} entries/s")
        for note in r.notes:
            print(f"  note: {note}")
        _print_key_events(out)
        if args.policy is not None:
            print(f"  witnessed by {', '.join(r.witnesses)}")
        if args.explain:
            _explain_audit(r)
        return
    if r.status == "unwitnessed":
        assert r.unwitnessed is not None
        f = not_witnessed(r.unwitnessed)
        print(f"medledger audit: NOT WITNESSED ENOUGH: {r.unwitnessed}", file=sys.stderr)
        print(f"  checked: {checked}; the log's data verifies", file=sys.stderr)
        print(f"  next: {f.hint}", file=sys.stderr)
        return
    if r.status == "failed":
        err = r.error
        assert err is not None
        where = f" at entry {err.index}" if err.index is not None else ""
        print(f"medledger audit: FAILED{where}: {err.reason}", file=sys.stderr)
        print(f"  checked so far: {checked}", file=sys.stderr)
        for note in r.notes:
            print(f"  note: {note}", file=sys.stderr)
        _print_key_events(out, sys.stderr)
        print(f"  next: {err.hint}", file=sys.stderr)
        return
    ev = r.evidence
    assert ev is not None
    print(f"medledger audit: LOG MISBEHAVIOUR PROVEN ({ev.kind}): {ev.summary}", file=sys.stderr)
    for i, note in enumerate(ev.checkpoints):
        print(f"  signed checkpoint {i}:", file=sys.stderr)
        for line in note.splitlines():
            print(f"    {line}", file=sys.stderr)
    if ev.divergence is not None:
        print(
            f"  the trees first differ within entries {ev.divergence[0]}..{ev.divergence[1] - 1}",
            file=sys.stderr,
        )
    if ev.server_proof is not None:
        a, b, hashes = ev.server_proof
        print(
            f"  the server's consistency proof {a} → {b} ({len(hashes)} hashes) fails",
            file=sys.stderr,
        )
    print(f"  evidence written to {out['evidence_file']}", file=sys.stderr)
    if ev.kind == "rollback":
        print(
            "  next: keep the evidence and audit again in a few minutes (a lagging replica or "
            "cache shows the same for a while); a log that still presents the smaller tree, or "
            "grows a different one, lost entries it signed: report it with the evidence to its "
            "operator and supervisors",
            file=sys.stderr,
        )
        return
    print(
        f"  next: keep the evidence; check it with `medledger verify-evidence "
        f"{out['evidence_file']} --key ...` and report it to the log's operator and its "
        "supervisors; do not trust new receipts from this log until it is resolved",
        file=sys.stderr,
    )


def _explain_audit(r: AuditResult) -> None:
    print("  how:")
    print("    each entry: canonical JSON (docs/ledger-format.md), index = position,")
    print("    prev = SHA-256(0x00 ‖ previous entry); leaves and nodes per RFC 6962 2.1")
    print(f"    root of all {r.size:,} entries = signed root {b64(r.root)}")
    if r.consistency is not None:
        a, b, ra, rb, proof = r.consistency
        print(f"    the source's consistency proof {a} → {b} also verifies:")
        for line in explain_consistency(a, b, ra, rb, proof):
            print(f"      {line}")
