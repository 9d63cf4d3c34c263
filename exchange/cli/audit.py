"""`medledger verify`, `medledger audit`, `medledger verify-evidence`: the auditor's commands.

Thin over ledger/audit.py: read files and keys, pick a source, print what was found. Exit
codes: 0 ok; 1 usage; 2 network or database unavailable; 3 malformed input or local state;
4 verification failed (names the first bad index); 5 proven log misbehaviour.
"""

from __future__ import annotations

import argparse
import base64
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
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    EXIT_VERIFY_FAILED,
)
from exchange.config import Environment
from exchange.keys.keyring import source_keyset
from ledger.audit import (
    MAX_EVIDENCE_BYTES,
    AuditResult,
    AuditUsageError,
    Evidence,
    EvidenceError,
    SourceMalformed,
    SourceUnavailable,
    audit,
    explain_consistency,
    explain_inclusion,
    verify_evidence,
)
from ledger.audit.state import StateError, atomic_write, load_state, save_state
from ledger.checkpoint import CheckpointError, parse_checkpoint
from ledger.encoding import b64
from ledger.keyset import KeyRuleError, KeySet
from ledger.merkle import leaf_hash
from ledger.note import NoteError, Verifier
from ledger.note import split as split_note
from ledger.receipt import MAX_RECEIPT_BYTES, ReceiptError, parse_receipt
from ledger.untrusted import InputRejected, read_file, read_json, read_stream
from ledger.verify import MalformedInput, VerificationError, verify_receipt, verify_submission

MAX_KEY_FILE_BYTES = 1 << 20
"""--key and --keys files larger than this are refused unread; a key is under 100 bytes."""

DEFAULT_TIMEOUT = 3600.0
"""Seconds an `audit --url` run may take unless --timeout says otherwise: ample for a large log
over a slow link, and an end for one served a byte at a time."""

KEY_HINT = (
    "pass the log's verifier key as text (<name>+<8 hex>+<base64>, from GET /v1/log/key or the "
    "log's operator) or as a file holding it"
)

VERIFY_EXAMPLES = """\
Checks, with no network: the checkpoint's signature by the log's key, the inclusion proof of
the entry at (index, size, root), the entry's canonical form, and - with --bundle and
--salt - that the entry commits to exactly those bytes.

examples:
  medledger verify receipt.tlog-proof --key log.vkey
  medledger verify receipt.tlog-proof --key 'medledger.example/log+5f0e1a2b+AQ...' \\
      --bundle bundle.json --salt 'q83vEjRWeJ...=' --explain
  curl -s $URL/v1/log/entries/17/receipt | medledger verify - --key log.vkey --json

exit: 0 verified; 1 usage; 3 malformed receipt, key, bundle or salt; 4 does not verify
"""

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

--timeout bounds the whole run: past it the audit stops with exit 2. Answers are read
up to a size cap (gzip undone within it) and as strict JSON; one that is not what a log API
gives is exit 3 (docs/audit.md, "Hostile servers and files").

exit: 0 verified; 1 usage; 2 source unavailable or --timeout passed; 3 malformed key or
      state file, or an answer no log API gives; 4 verification failed (names the first bad
      entry); 5 proven misbehaviour (writes an evidence file for `medledger verify-evidence`)
"""

EVIDENCE_EXAMPLES = """\
Re-checks an evidence file written by `medledger audit` (exit 5) with only the log's key: both
checkpoints must be validly signed, and the proofs or entries in the file must show that the
two cannot both be true (a fork), or that the log went back to a smaller tree (a rollback).

examples:
  medledger verify-evidence audit.json.evidence-20261128T101500Z.json --key log.vkey
  medledger verify-evidence evidence.json --key log.vkey --explain

exit: 5 misbehaviour confirmed; 1 usage; 3 malformed file or key; 4 the file proves nothing
"""


def register(sub: argparse._SubParsersAction[Any], env: Environment) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "verify",
        help="verify a receipt offline (and, with --bundle/--salt, which bytes it commits to)",
        description="Verifies a c2sp.org/tlog-proof@v1 receipt offline.",
        epilog=VERIFY_EXAMPLES,
        formatter_class=fmt,
    )
    p.add_argument("receipt", metavar="RECEIPT", help="a .tlog-proof file, or - for stdin")
    _add_key(p, required=False)
    p.add_argument(
        "--keys",
        type=Path,
        metavar="FILE",
        help="the log's keys with their lifetimes (JSON of GET /v1/log/keys): all are trusted "
        "and a key retired before the checkpoint's size is rejected",
    )
    p.add_argument("--bundle", type=Path, metavar="FILE", help="the submitted bytes")
    p.add_argument("--salt", metavar="B64", help="the salt returned with the receipt (base64)")
    p.add_argument("--explain", action="store_true", help="show the hash steps of the proof")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_verify)

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
    _add_key(p)
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
        help=f"with --url, the most the whole run may take (default {DEFAULT_TIMEOUT:g}); "
        "each single read waits at most 30 s",
    )
    p.add_argument("--explain", action="store_true", help="show what was checked, step by step")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_audit)

    p = sub.add_parser(
        "verify-evidence",
        help="re-check an evidence file of log misbehaviour",
        description="Re-checks evidence that a log forked or rolled back.",
        epilog=EVIDENCE_EXAMPLES,
        formatter_class=fmt,
    )
    p.add_argument("file", type=Path, metavar="FILE")
    _add_key(p)
    p.add_argument("--explain", action="store_true", help="show the hash steps of the proofs")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_verify_evidence)


def _add_key(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--key",
        action="append",
        required=required,
        metavar="VKEY",
        help="the log's verifier key, as text or a file; repeat during a key rotation",
    )


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


# --- shared output -------------------------------------------------------------------------


class _Failure(Exception):
    def __init__(self, code: int, message: str, hint: str, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.hint, self.extra = code, message, hint, extra


def _finish(cmd: str, args: argparse.Namespace, f: _Failure) -> int:
    if args.json:
        out = {"result": _RESULT[f.code], "exit": f.code, "error": f.message, "next": f.hint}
        out.update(f.extra)
        print(json.dumps(out, indent=1))
    else:
        print(f"medledger {cmd}: {f.message}", file=sys.stderr)
        print(f"  next: {f.hint}", file=sys.stderr)
    return f.code


_RESULT = {
    EXIT_OK: "ok",
    EXIT_USAGE: "usage",
    EXIT_UNAVAILABLE: "unavailable",
    EXIT_MALFORMED: "malformed",
    EXIT_VERIFY_FAILED: "failed",
    EXIT_MISBEHAVIOUR: "misbehaviour",
}


def load_keys(values: list[str]) -> list[Verifier]:
    """Verifier keys from --key values: literal vkey text, or files of one key per line."""
    keys: list[Verifier] = []
    for value in values:
        path = Path(value)
        texts = [value]
        if "+" not in value or path.is_file():
            try:
                texts = [
                    ln.strip()
                    for ln in read_file(path, MAX_KEY_FILE_BYTES).decode("utf-8").splitlines()
                    if ln.strip() and not ln.lstrip().startswith("#")
                ]
            except (OSError, ValueError) as e:  # InputRejected and UnicodeDecodeError included
                raise _Failure(
                    EXIT_MALFORMED,
                    f"--key {value!r} is neither a verifier key nor a file ({e})",
                    KEY_HINT,
                ) from e
            if not texts:
                raise _Failure(EXIT_MALFORMED, f"--key file {value} holds no key", KEY_HINT)
        for text in texts:
            try:
                keys.append(Verifier.from_vkey(text))
            except NoteError as e:
                raise _Failure(EXIT_MALFORMED, f"--key {text[:60]!r}: {e}", KEY_HINT) from e
    return keys


def _load_keyset(path: Path) -> KeySet:
    """A key set with lifetimes, as GET /v1/log/keys publishes it."""
    try:
        return KeySet.from_json(read_json(read_file(path, MAX_KEY_FILE_BYTES), MAX_KEY_FILE_BYTES))
    except (OSError, ValueError) as e:  # InputRejected and KeyRuleError are ValueErrors
        raise _Failure(
            EXIT_MALFORMED,
            f"--keys {path}: {e}",
            "save the log's key list with: curl -s $URL/v1/log/keys > keys.json",
        ) from e


def _read_input(name: str, what: str, limit: int | None) -> bytes:
    """The bytes of file `name` (- is stdin), at most `limit` of them when there is a limit."""
    try:
        if limit is None:
            return Path(name).read_bytes()
        if name == "-":
            return read_stream(sys.stdin.buffer, limit)
        return read_file(Path(name), limit)
    except InputRejected as e:
        raise _Failure(
            EXIT_MALFORMED,
            f"{what} {name} holds {e}",
            f"pass the {what} itself: no {what} is that large",
        ) from e
    except OSError as e:
        raise _Failure(
            EXIT_MALFORMED,
            f"cannot read {what} {name}: {e.strerror}",
            f"check the path of the {what}",
        ) from e


# --- verify --------------------------------------------------------------------------------


def run_verify(args: argparse.Namespace) -> int:
    try:
        return _verify(args)
    except _Failure as f:
        return _finish("verify", args, f)


def _verify(args: argparse.Namespace) -> int:
    if (args.bundle is None) != (args.salt is None):
        raise _Failure(
            EXIT_USAGE,
            "--bundle and --salt go together",
            "pass both the submitted bytes (--bundle FILE) and the salt returned with them",
        )
    if not args.key and args.keys is None:
        raise _Failure(EXIT_USAGE, "pass --key VKEY or --keys FILE", KEY_HINT)
    keys = load_keys(args.key or [])
    keyset = _load_keyset(args.keys) if args.keys is not None else None
    if keyset is not None:
        keys += keyset.verifiers()
    raw = _read_input(args.receipt, "receipt", MAX_RECEIPT_BYTES)
    try:
        text = raw.decode("utf-8")
        r = parse_receipt(text)
        cp = parse_checkpoint(split_note(r.checkpoint)[0])
    except (UnicodeDecodeError, ReceiptError, NoteError, CheckpointError) as e:
        raise _Failure(
            EXIT_MALFORMED,
            f"{args.receipt} is not a receipt: {e}",
            "pass the .tlog-proof text exactly as the log returned it (GET "
            "/v1/log/entries/{index}/receipt gives a fresh one)",
        ) from e
    mine = [k for k in keys if k.name == cp.origin]
    if not mine:
        raise _Failure(
            EXIT_VERIFY_FAILED,
            f"the receipt is from log {cp.origin!r}; the keys given are for "
            f"{', '.join(sorted({k.name for k in keys}))}",
            f"pass log {cp.origin!r}'s verifier key with --key",
            index=r.index,
        )
    try:
        v = verify_receipt(text, mine, cp.origin, keyset)
    except MalformedInput as e:
        raise _Failure(
            EXIT_MALFORMED, str(e), "the receipt is incomplete: ask the log for a fresh one"
        ) from e
    except VerificationError as e:
        raise _Failure(
            EXIT_VERIFY_FAILED,
            f"receipt does not verify: {e}",
            f"do not rely on this receipt: fetch a fresh one from the log (GET "
            f"/v1/log/entries/{r.index}/receipt) and check that --key is the log's key; if the "
            "log's fresh receipt fails too, report the log",
            index=r.index,
        ) from e
    bundle_ok = None
    if args.bundle is not None:
        data = _read_input(str(args.bundle), "bundle", None)  # hashed, never parsed
        try:
            salt = base64.b64decode(args.salt, validate=True)
        except ValueError as e:  # binascii.Error, or a plain ValueError for non-ASCII text
            raise _Failure(
                EXIT_MALFORMED, "--salt is not base64", "pass the salt exactly as returned"
            ) from e
        try:
            verify_submission(v.entry, data, salt)
        except MalformedInput as e:
            raise _Failure(
                EXIT_MALFORMED, f"--salt: {e}", "pass the 32-byte salt returned with the receipt"
            ) from e
        except VerificationError as e:
            raise _Failure(
                EXIT_VERIFY_FAILED,
                f"{e}: the receipt is valid, but for other bytes or another salt",
                "pass the exact bytes that were submitted (not a re-serialised copy) and the "
                "salt returned with this receipt",
                index=v.entry.index,
            ) from e
        bundle_ok = str(args.bundle)
    leaf = leaf_hash(v.entry_bytes)
    steps = explain_inclusion(r.index, v.checkpoint.size, leaf, r.proof) if args.explain else []
    entry = v.entry
    if args.json:
        out = {
            "result": "ok",
            "exit": EXIT_OK,
            "origin": v.checkpoint.origin,
            "index": entry.index,
            "size": v.checkpoint.size,
            "root": b64(v.checkpoint.root),
            "leaf": b64(leaf),
            "entry": {
                "kind": entry.kind,
                "sender": entry.sender,
                "time": entry.time,
                "media": entry.media,
                "commit": b64(entry.commit),
                "prev": b64(entry.prev),
            },
            "bundle": bundle_ok,
        }
        if args.explain:
            out["steps"] = steps
        print(json.dumps(out, indent=1))
        return EXIT_OK
    print(
        f"OK: entry {entry.index} is in log {v.checkpoint.origin} at size {v.checkpoint.size} "
        f"(root {b64(v.checkpoint.root)}), signed by its key"
    )
    print(f"  entry: {entry.kind} from {entry.sender} at {entry.time}, commit {b64(entry.commit)}")
    if bundle_ok:
        print(f"  bundle: the entry commits to exactly the bytes of {bundle_ok} with this salt")
    for line in steps:
        print(f"  {line}")
    if steps:
        print(f"  = the root signed in the checkpoint: {b64(v.checkpoint.root)}")
    return EXIT_OK


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
        else:
            src = DbSource.from_url(args.db)
    except NotALog as e:
        raise _Failure(EXIT_MALFORMED, str(e), e.hint) from e
    except SourceUnavailable as e:
        raise _source_failure(e) from e
    if args.page_size:
        src.page_size = args.page_size
    return src


def _source_failure(e: SourceUnavailable) -> _Failure:
    """Exit 3 for an answer no log gives (it will not change by retrying), else 2."""
    code = EXIT_MALFORMED if isinstance(e, SourceMalformed) else EXIT_UNAVAILABLE
    return _Failure(code, str(e), e.hint)


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
    except _Failure as f:
        return _finish("audit", args, f)


def _audit(args: argparse.Namespace) -> int:
    keys = load_keys(args.key)
    source = _open_source(args)
    keyset = _log_keyset(source, keys)
    if keyset is not None:
        keys += [v for v in keyset.verifiers() if v not in keys]
    state = None
    if args.state is not None:
        try:
            state = load_state(args.state, keys)
        except StateError as e:
            source.close()
            raise _Failure(EXIT_MALFORMED, str(e), e.hint) from e
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
            )
    except SourceUnavailable as e:
        raise _source_failure(e) from e
    except StateError as e:
        raise _Failure(EXIT_MALFORMED, str(e), e.hint) from e
    except AuditUsageError as e:
        raise _Failure(EXIT_USAGE, str(e), "see `medledger audit --help`") from e
    finally:
        source.close()
    out = _audit_json(result)
    if result.status == "ok":
        if args.state is not None and result.state is not None:
            try:
                save_state(args.state, result.state)
            except StateError as e:
                raise _Failure(EXIT_MALFORMED, str(e), e.hint, **out) from e
            out["state_file"] = str(args.state)
        code = EXIT_OK
    elif result.status == "failed":
        code = EXIT_VERIFY_FAILED
    else:
        assert result.evidence is not None
        path = _evidence_path(args)
        try:
            atomic_write(path, result.evidence.to_json())
        except OSError as e:
            raise _Failure(
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
        raise _Failure(
            EXIT_VERIFY_FAILED,
            f"the log's key entries do not verify: {e}",
            "check that --key is one of the log's keys (GET /v1/log/keys); if it is, report "
            "the log's key entries to its operator",
        ) from e


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
        if args.explain:
            _explain_audit(r)
        return
    if r.status == "failed":
        err = r.error
        assert err is not None
        where = f" at entry {err.index}" if err.index is not None else ""
        print(f"medledger audit: FAILED{where}: {err.reason}", file=sys.stderr)
        print(f"  checked so far: {checked}", file=sys.stderr)
        for note in r.notes:
            print(f"  note: {note}", file=sys.stderr)
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


# --- verify-evidence -----------------------------------------------------------------------


def run_verify_evidence(args: argparse.Namespace) -> int:
    try:
        return _verify_evidence(args)
    except _Failure as f:
        return _finish("verify-evidence", args, f)


def _verify_evidence(args: argparse.Namespace) -> int:
    keys = load_keys(args.key)
    data = _read_input(str(args.file), "evidence file", MAX_EVIDENCE_BYTES)
    try:
        ev = Evidence.from_json(data)
        report = verify_evidence(ev, keys)
    except EvidenceError as e:
        raise _Failure(
            EXIT_VERIFY_FAILED,
            f"the evidence proves no misbehaviour: {e}",
            "check that --key is the log's verifier key; if it is, this file does not show a "
            "fork or rollback (it may have been altered): ask its author for the original",
        ) from e
    except MalformedInput as e:
        raise _Failure(
            EXIT_MALFORMED,
            f"{args.file} is not readable evidence: {e}",
            "pass the file `medledger audit` wrote when it exited with 5",
        ) from e
    if args.json:
        out = {
            "result": "misbehaviour",
            "exit": EXIT_MISBEHAVIOUR,
            "kind": report.kind,
            "origin": report.origin,
            "sizes": list(report.sizes),
            "findings": list(report.lines),
        }
        if args.explain:
            out["steps"] = list(report.explain)
        print(json.dumps(out, indent=1))
        return EXIT_MISBEHAVIOUR
    print(f"CONFIRMED: log {report.origin} misbehaved ({report.kind})")
    for line in report.lines:
        print(f"  {line}")
    if args.explain:
        for line in report.explain:
            print(f"    {line}")
    print(
        "  next: report it to the log's operator and its supervisors, attaching this file; "
        "treat receipts from this log after the earlier checkpoint as unproven"
    )
    return EXIT_MISBEHAVIOUR
