"""`medledger verify`, `medledger verify-evidence`: a receipt and an evidence file checked
offline, with the log's keys (and a witness policy) only.

Thin over ledger/verify.py and ledger/audit: read the files and keys, check, print what was
found. Exit codes: 0 ok; 1 usage; 3 malformed input; 4 verification failed; 5 misbehaviour
confirmed (verify-evidence); 6 not witnessed enough (verify --policy: the receipt verifies,
its checkpoint lacks the quorum's cosignatures).
"""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path
from typing import Any

from exchange.cli.exits import (
    EXIT_MALFORMED,
    EXIT_MISBEHAVIOUR,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_VERIFY_FAILED,
)
from exchange.cli.trust import (
    KEY_HINT,
    KEYS_HINT,
    Failure,
    add_key,
    add_keys,
    add_policy,
    finish,
    load_keys,
    load_keyset,
    not_witnessed,
    policy_keys,
    policy_of,
    read_input,
    rotated_past,
)
from exchange.config import Environment
from ledger.audit import (
    MAX_EVIDENCE_BYTES,
    Evidence,
    EvidenceError,
    explain_inclusion,
    verify_evidence,
)
from ledger.checkpoint import CheckpointError, parse_checkpoint
from ledger.encoding import b64
from ledger.merkle import leaf_hash
from ledger.note import NoteError
from ledger.note import split as split_note
from ledger.policy import QuorumNotMet
from ledger.receipt import MAX_RECEIPT_BYTES, ReceiptError, parse_receipt
from ledger.verify import MalformedInput, VerificationError, verify_receipt, verify_submission

VERIFY_EXAMPLES = """\
Checks, with no network: the checkpoint's signature by the log's key, the inclusion proof of
the entry at (index, size, root), the entry's canonical form, and - with --bundle and
--salt - that the entry commits to exactly those bytes.

examples:
  medledger verify receipt.tlog-proof --key log.vkey
  medledger verify receipt.tlog-proof --key 'medledger.example/log+5f0e1a2b+AQ...' \\
      --bundle bundle.json --salt 'q83vEjRWeJ...=' --explain
  curl -s $URL/v1/log/entries/17/receipt | medledger verify - --key log.vkey --json
  medledger verify receipt.tlog-proof --policy witnesses.policy

With --policy (C2SP tlog-policy) the receipt's checkpoint must also carry the cosignatures of
the policy's quorum; the policy's log lines are trusted as --key is.

exit: 0 verified; 1 usage; 3 malformed receipt, key, policy, bundle or salt; 4 does not
      verify; 6 verifies, but not witnessed enough (names the witnesses missing)
"""

EVIDENCE_EXAMPLES = """\
Re-checks an evidence file written by `medledger audit` (exit 5) with only the log's keys: both
checkpoints must be validly signed, and the proofs or entries in the file must show that the
two cannot both be true (a fork), or that the log went back to a smaller tree (a rollback).
After a key rotation, checkpoints are signed by the log's newer key: pass the log's key list
(--keys, the JSON of GET /v1/log/keys), every key of which is trusted.

examples:
  medledger verify-evidence audit.json.evidence-20261128T101500Z.json --key log.vkey
  medledger verify-evidence evidence.json --key log.vkey --explain
  curl -s $URL/v1/log/keys > keys.json
  medledger verify-evidence evidence.json --keys keys.json

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
    add_key(p, required=False)
    add_keys(p)
    add_policy(p)
    p.add_argument("--bundle", type=Path, metavar="FILE", help="the submitted bytes")
    p.add_argument("--salt", metavar="B64", help="the salt returned with the receipt (base64)")
    p.add_argument("--explain", action="store_true", help="show the hash steps of the proof")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_verify)

    p = sub.add_parser(
        "verify-evidence",
        help="re-check an evidence file of log misbehaviour",
        description="Re-checks evidence that a log forked or rolled back.",
        epilog=EVIDENCE_EXAMPLES,
        formatter_class=fmt,
    )
    p.add_argument("file", type=Path, metavar="FILE")
    add_key(p, required=False)
    add_keys(p)
    p.add_argument("--explain", action="store_true", help="show the hash steps of the proofs")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_verify_evidence)


# --- verify --------------------------------------------------------------------------------


def run_verify(args: argparse.Namespace) -> int:
    try:
        return _verify(args)
    except Failure as f:
        return finish("verify", args, f)


def _verify(args: argparse.Namespace) -> int:
    if (args.bundle is None) != (args.salt is None):
        raise Failure(
            EXIT_USAGE,
            "--bundle and --salt go together",
            "pass both the submitted bytes (--bundle FILE) and the salt returned with them",
        )
    policy = policy_of(args.policy)
    if not args.key and args.keys is None and policy is None:
        raise Failure(EXIT_USAGE, "pass --key VKEY, --keys FILE or --policy FILE", KEY_HINT)
    keys = load_keys(args.key or []) + policy_keys(policy)
    keyset = load_keyset(args.keys) if args.keys is not None else None
    if keyset is not None:
        keys += keyset.verifiers()
    raw = read_input(args.receipt, "receipt", MAX_RECEIPT_BYTES)
    try:
        text = raw.decode("utf-8")
        r = parse_receipt(text)
        cp = parse_checkpoint(split_note(r.checkpoint)[0])
    except (UnicodeDecodeError, ReceiptError, NoteError, CheckpointError) as e:
        raise Failure(
            EXIT_MALFORMED,
            f"{args.receipt} is not a receipt: {e}",
            "pass the .tlog-proof text exactly as the log returned it (GET "
            "/v1/log/entries/{index}/receipt gives a fresh one)",
        ) from e
    mine = [k for k in keys if k.name == cp.origin]
    if not mine:
        raise Failure(
            EXIT_VERIFY_FAILED,
            f"the receipt is from log {cp.origin!r}; the keys given are for "
            f"{', '.join(sorted({k.name for k in keys}))}",
            f"pass log {cp.origin!r}'s verifier key with --key",
            index=r.index,
        )
    try:
        v = verify_receipt(text, mine, cp.origin, keyset, policy=policy)
    except QuorumNotMet as e:
        raise not_witnessed(e, index=r.index) from e
    except MalformedInput as e:
        raise Failure(
            EXIT_MALFORMED, str(e), "the receipt is incomplete: ask the log for a fresh one"
        ) from e
    except VerificationError as e:
        newer = rotated_past([r.checkpoint], mine) if keyset is None else []
        if newer:
            raise Failure(
                EXIT_VERIFY_FAILED,
                f"receipt does not verify with the keys given: its checkpoint is signed by "
                f"{', '.join(newer)}, a key of log {cp.origin!r} not given ({e})",
                KEYS_HINT,
                index=r.index,
                rotation=True,
            ) from e
        raise Failure(
            EXIT_VERIFY_FAILED,
            f"receipt does not verify: {e}",
            f"do not rely on this receipt: fetch a fresh one from the log (GET "
            f"/v1/log/entries/{r.index}/receipt) and check that --key is the log's key; if the "
            "log's fresh receipt fails too, report the log",
            index=r.index,
        ) from e
    bundle_ok = None
    if args.bundle is not None:
        data = read_input(str(args.bundle), "bundle", None)  # hashed, never parsed
        try:
            salt = base64.b64decode(args.salt, validate=True)
        except ValueError as e:  # binascii.Error, or a plain ValueError for non-ASCII text
            raise Failure(
                EXIT_MALFORMED, "--salt is not base64", "pass the salt exactly as returned"
            ) from e
        try:
            verify_submission(v.entry, data, salt)
        except MalformedInput as e:
            raise Failure(
                EXIT_MALFORMED, f"--salt: {e}", "pass the 32-byte salt returned with the receipt"
            ) from e
        except VerificationError as e:
            raise Failure(
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
        if policy is not None:
            out["witnesses"] = list(v.witnesses)
        if args.explain:
            out["steps"] = steps
        print(json.dumps(out, indent=1))
        return EXIT_OK
    print(
        f"OK: entry {entry.index} is in log {v.checkpoint.origin} at size {v.checkpoint.size} "
        f"(root {b64(v.checkpoint.root)}), signed by its key"
    )
    print(f"  entry: {entry.kind} from {entry.sender} at {entry.time}, commit {b64(entry.commit)}")
    if policy is not None:
        print(f"  witnessed by {', '.join(v.witnesses) or 'no witness'} (quorum {policy.quorum})")
    if bundle_ok:
        print(f"  bundle: the entry commits to exactly the bytes of {bundle_ok} with this salt")
    for line in steps:
        print(f"  {line}")
    if steps:
        print(f"  = the root signed in the checkpoint: {b64(v.checkpoint.root)}")
    return EXIT_OK


# --- verify-evidence -----------------------------------------------------------------------


def run_verify_evidence(args: argparse.Namespace) -> int:
    try:
        return _verify_evidence(args)
    except Failure as f:
        return finish("verify-evidence", args, f)


def _verify_evidence(args: argparse.Namespace) -> int:
    if not args.key and args.keys is None:
        raise Failure(EXIT_USAGE, "pass --key VKEY or --keys FILE", KEY_HINT)
    keys = load_keys(args.key or [])
    if args.keys is not None:
        # A fork or rollback signed by any key the log ever had is the log's: no lifetimes.
        keys += [v for v in load_keyset(args.keys).verifiers() if v not in keys]
    data = read_input(str(args.file), "evidence file", MAX_EVIDENCE_BYTES)
    try:
        ev = Evidence.from_json(data)
    except MalformedInput as e:
        raise _unreadable(args.file, e) from e
    try:
        report = verify_evidence(ev, keys)
    except EvidenceError as e:
        newer = rotated_past(list(ev.checkpoints), keys)
        if newer:
            raise Failure(
                EXIT_VERIFY_FAILED,
                f"the evidence cannot be checked with the keys given: {e}; its checkpoints "
                f"are signed by {', '.join(newer)}, a key of log {ev.origin!r} not given",
                KEYS_HINT,
                rotation=True,
            ) from e
        raise Failure(
            EXIT_VERIFY_FAILED,
            f"the evidence proves no misbehaviour: {e}",
            "check that --key is the log's verifier key; if it is, this file does not show a "
            "fork or rollback (it may have been altered): ask its author for the original",
        ) from e
    except MalformedInput as e:
        raise _unreadable(args.file, e) from e
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


def _unreadable(path: Path, e: MalformedInput) -> Failure:
    return Failure(
        EXIT_MALFORMED,
        f"{path} is not readable evidence: {e}",
        "pass the file `medledger audit` wrote when it exited with 5",
    )
