"""What the auditor's commands trust and how their checks fail: verifier keys (--key), the
log's key list (--keys), a witness policy (--policy), the inputs they read, and the one way a
check ends in an exit code and a message with what to do next (Failure, finish).

Shared by `medledger verify`, `verify-evidence` (exchange/cli/verify.py) and `audit`
(exchange/cli/audit.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from exchange.cli.exits import (
    EXIT_MALFORMED,
    EXIT_MISBEHAVIOUR,
    EXIT_NOT_WITNESSED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    EXIT_VERIFY_FAILED,
)
from ledger.keyset import KeySet
from ledger.note import NoteError, Verifier
from ledger.note import split as split_note
from ledger.policy import Policy, PolicyError, QuorumNotMet, load_policy
from ledger.untrusted import InputRejected, read_file, read_json, read_stream

MAX_KEY_FILE_BYTES = 1 << 20
"""--key and --keys files larger than this are refused unread; a key is under 100 bytes."""

KEYS_HINT = (
    "the log has likely rotated its signing key since: save its key list (every key it ever "
    "signed with, and when) with `curl -s $URL/v1/log/keys > keys.json` and pass --keys "
    "keys.json, or --key with its newer key too (`medledger keys list --json` on the log's "
    "host prints the same list)"
)

KEY_HINT = (
    "pass the log's verifier key as text (<name>+<8 hex>+<base64>, from GET /v1/log/key or the "
    "log's operator) or as a file holding it"
)


def add_key(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--key",
        action="append",
        required=required,
        metavar="VKEY",
        help="the log's verifier key, as text or a file; repeat during a key rotation",
    )


def add_keys(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--keys",
        type=Path,
        metavar="FILE",
        help="the log's keys with their lifetimes (JSON of GET /v1/log/keys): all are trusted "
        "and a key retired before the checkpoint's size is rejected",
    )


def rotated_past(notes: list[str], keys: list[Verifier]) -> list[str]:
    """The keys (name+id) that signed one of `notes` under the name of a given key but are
    not given: after a rotation, what checkpoints signed only by the log's newer key show."""
    names = {k.name for k in keys}
    given = {(k.name, k.key_id) for k in keys}
    found: list[str] = []
    for note in notes:
        try:
            sigs = split_note(note)[1]
        except NoteError:
            continue
        for s in sigs:
            label = f"{s.name}+{s.key_id.hex()}"
            if s.name in names and (s.name, s.key_id) not in given and label not in found:
                found.append(label)
    return found


def add_policy(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="a witness policy (C2SP tlog-policy): require its quorum's cosignatures on the "
        "checkpoint (exit 6 without them)",
    )


def policy_of(path: Path | None) -> Policy | None:
    if path is None:
        return None
    try:
        return load_policy(path)
    except PolicyError as e:
        raise Failure(
            EXIT_MALFORMED, f"--policy {path}: {e}", "fix the policy file (docs/witness.md)"
        ) from e
    except OSError as e:
        raise Failure(
            EXIT_MALFORMED, f"cannot read --policy {path}: {e.strerror}", "check its path"
        ) from e


def policy_keys(policy: Policy | None) -> list[Verifier]:
    return [] if policy is None else [lg.verifier for lg in policy.logs]


def not_witnessed(e: QuorumNotMet, **extra: Any) -> Failure:
    return Failure(
        EXIT_NOT_WITNESSED,
        f"not witnessed enough: {e}",
        "the log's data verifies; wait for the missing witnesses to cosign and try again with "
        "the log's newest witnessed checkpoint (GET /v1/log/checkpoint, or a fresh receipt "
        "from GET /v1/log/entries/{index}/receipt); a witness that stays silent may have "
        "refused a fork: ask its operator",
        witnesses=list(e.cosigned),
        missing=list(e.missing),
        **extra,
    )


# --- shared output -------------------------------------------------------------------------


class Failure(Exception):
    def __init__(self, code: int, message: str, hint: str, **extra: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.hint, self.extra = code, message, hint, extra


def finish(cmd: str, args: argparse.Namespace, f: Failure) -> int:
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
    EXIT_NOT_WITNESSED: "unwitnessed",
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
                raise Failure(
                    EXIT_MALFORMED,
                    f"--key {value!r} is neither a verifier key nor a file ({e})",
                    KEY_HINT,
                ) from e
            if not texts:
                raise Failure(EXIT_MALFORMED, f"--key file {value} holds no key", KEY_HINT)
        for text in texts:
            try:
                keys.append(Verifier.from_vkey(text))
            except NoteError as e:
                raise Failure(EXIT_MALFORMED, f"--key {text[:60]!r}: {e}", KEY_HINT) from e
    return keys


def load_keyset(path: Path) -> KeySet:
    """A key set with lifetimes, as GET /v1/log/keys publishes it."""
    try:
        return KeySet.from_json(read_json(read_file(path, MAX_KEY_FILE_BYTES), MAX_KEY_FILE_BYTES))
    except (OSError, ValueError) as e:  # InputRejected and KeyRuleError are ValueErrors
        raise Failure(
            EXIT_MALFORMED,
            f"--keys {path}: {e}",
            "save the log's key list with: curl -s $URL/v1/log/keys > keys.json",
        ) from e


def read_input(name: str, what: str, limit: int | None) -> bytes:
    """The bytes of file `name` (- is stdin), at most `limit` of them when there is a limit."""
    try:
        if limit is None:
            return Path(name).read_bytes()
        if name == "-":
            return read_stream(sys.stdin.buffer, limit)
        return read_file(Path(name), limit)
    except InputRejected as e:
        raise Failure(
            EXIT_MALFORMED,
            f"{what} {name} holds {e}",
            f"pass the {what} itself: no {what} is that large",
        ) from e
    except OSError as e:
        raise Failure(
            EXIT_MALFORMED,
            f"cannot read {what} {name}: {e.strerror}",
            f"check the path of the {what}",
        ) from e
