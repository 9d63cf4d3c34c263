"""C2SP tlog-policy: the logs and witnesses a verifier trusts and the quorum a checkpoint needs.

A policy file is line based; items are separated by runs of spaces and tabs; empty lines and
lines starting with ``#`` (after optional whitespace) are ignored::

    log <vkey> [<url>]
    witness <name> <vkey> [<url>]
    group <name> all|any|<k> <name>...
    quorum <name>

Log keys are signed-note Ed25519 keys (type 0x01) named after the log's origin; witness keys
are cosignature/v1 keys (type 0x04, ledger/cosignature.py). Witness and group names share one
namespace, are opaque octet strings and may only refer to names defined on earlier lines; the
name ``none`` is predefined (``quorum none``: no cosignature needed) and cannot be a member. A
group of k out of its n members witnesses a checkpoint when at least k of them do; a witness
does when its cosignature verifies. Exactly one quorum line. No two logs, and no two
witnesses, may wrap the same public key.

A checkpoint meets the policy when a listed log named after its origin signed it and the
quorum witnessed it (Policy.evaluate, Policy.require). As c2sp.org/signed-note says, lines by
unknown keys are ignored and a line by a trusted key that does not verify rejects the note.
Standard library and ``cryptography`` only.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sized
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import Checkpoint, CheckpointError, parse_checkpoint
from .cosignature import Cosignature, CosignatureError, CosignerVerifier, verify_cosignatures
from .note import NoteError, Verifier, open_note
from .note import split as split_note
from .untrusted import InputRejected, read_file

NONE = "none"
EXIT_NOT_WITNESSED = 6
"""The exit code of `medledger verify --policy` and `audit --policy` when the checkpoint is
validly signed by the log (and its data verifies) but not cosigned by the policy's quorum
(QuorumNotMet). Distinct from 4, which says the log's data is wrong, and from 2, which says
nothing was read: here everything verifies and only the witnesses' word is missing, which
waiting for them (or asking the log for a newer witnessed checkpoint) may supply."""
MAX_POLICY_BYTES = 1 << 20
MAX_ITEMS = 256
"""At most this many logs, witnesses and groups each (the spec asks implementations to
support at least 32 of each)."""

_WHITESPACE = re.compile(r"[ \t]+")
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_THRESHOLD = re.compile(r"[1-9][0-9]{0,5}")


class PolicyError(ValueError):
    """The policy file is malformed. `line` is the 1-based line at fault (0: the whole file)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"policy line {line}: {reason}" if line else f"policy: {reason}")
        self.line = line
        self.reason = reason


class CheckpointRefused(ValueError):
    """The checkpoint does not meet the policy: malformed, not signed by a log of the policy,
    or a signature by a trusted key fails to verify."""


class QuorumNotMet(CheckpointRefused):
    """The checkpoint is validly signed by a log of the policy, but the witnesses whose
    cosignatures verified (`cosigned`) do not make up the quorum. `missing` names the
    policy's other witnesses, `future` those among them whose cosignature verified but is
    dated too far ahead to count. Exit EXIT_NOT_WITNESSED."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        cosigned: tuple[str, ...],
        quorum: str,
        missing: tuple[str, ...] = (),
        future: tuple[str, ...] = (),
    ) -> None:
        names = ", ".join(cosigned) if cosigned else "no witness"
        message = (
            f"the checkpoint of size {checkpoint.size} is cosigned by {names}; "
            f"the policy's quorum {quorum!r} is not met"
        )
        if missing:
            message += f" (no cosignature by {', '.join(missing)})"
        if future:
            message += f"; dated in the future, not counted: {', '.join(future)}"
        super().__init__(message)
        self.checkpoint = checkpoint
        self.cosigned = cosigned
        self.quorum = quorum
        self.missing = missing
        self.future = future


@dataclass(frozen=True)
class PolicyLog:
    verifier: Verifier
    url: str | None = None


@dataclass(frozen=True)
class PolicyWitness:
    name: str
    verifier: CosignerVerifier
    url: str | None = None


@dataclass(frozen=True)
class Group:
    """At least `threshold` of `members` (witness or group names) must witness."""

    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class Evaluation:
    """What a policy finds in a signed checkpoint: the checkpoint, the log key that signed
    it, the cosignatures of the policy's witnesses that verified, and whether they make up
    the quorum."""

    checkpoint: Checkpoint
    log: Verifier
    cosigned: Mapping[str, Cosignature]
    met: bool


@dataclass(frozen=True)
class Policy:
    logs: tuple[PolicyLog, ...]
    witnesses: tuple[PolicyWitness, ...]
    groups: tuple[Group, ...]
    quorum: str

    def witness(self, name: str) -> PolicyWitness:
        return next(w for w in self.witnesses if w.name == name)

    def satisfied(self, cosigned: Collection[str]) -> bool:
        """Whether witnesses named `cosigned` (names not in the policy count for nothing)
        make up the quorum."""
        if self.quorum == NONE:
            return True
        ok = {w.name: w.name in cosigned for w in self.witnesses}
        for g in self.groups:  # members precede their groups, so one pass settles all
            ok[g.name] = sum(ok[m] for m in g.members) >= g.threshold
        return ok[self.quorum]

    def evaluate(
        self, note: str, logs: Iterable[Verifier] = (), *, not_after: int | None = None
    ) -> Evaluation:
        """Checks a signed checkpoint against the policy (and `logs`, trusted beside the
        policy's own: a policy may leave the log to the application).

        Raises CheckpointRefused when no trusted log key named after the checkpoint's origin
        signed it, or any trusted signature (log or witness) fails to verify; cosignatures
        dated after `not_after` (POSIX seconds) are refused too. A checkpoint that merely
        lacks the quorum is returned with `met` False.
        """
        try:
            text, sigs = split_note(note)
            cp = parse_checkpoint(text)
        except (NoteError, CheckpointError) as e:
            raise CheckpointRefused(f"malformed checkpoint: {e}") from e
        keys = [v for v in [*(lg.verifier for lg in self.logs), *logs] if v.name == cp.origin]
        if not keys:
            raise CheckpointRefused(f"no log of the policy has the origin {cp.origin!r}")
        try:
            opened = open_note(note, keys)
        except NoteError as e:
            raise CheckpointRefused(f"checkpoint of {cp.origin}: {e}") from e
        first = opened.verified[0]
        log_key = next(v for v in keys if v.key_id == first.key_id and v.name == first.name)
        try:
            found = verify_cosignatures(
                text, sigs, [w.verifier for w in self.witnesses], not_after=not_after
            )
        except CosignatureError as e:
            raise CheckpointRefused(f"checkpoint of {cp.origin}: {e}") from e
        cosigned = {w.name: found[w.verifier] for w in self.witnesses if w.verifier in found}
        return Evaluation(cp, log_key, cosigned, self.satisfied(cosigned))

    def require(
        self, note: str, logs: Iterable[Verifier] = (), *, not_after: int | None = None
    ) -> Evaluation:
        """evaluate, raising QuorumNotMet when the quorum is not met."""
        ev = self.evaluate(note, logs, not_after=not_after)
        if not ev.met:
            raise QuorumNotMet(ev.checkpoint, tuple(ev.cosigned), self.quorum, self.others(ev))
        return ev

    def others(self, ev: Evaluation) -> tuple[str, ...]:
        """The policy's witnesses that did not cosign in `ev`, in the policy's order."""
        return tuple(w.name for w in self.witnesses if w.name not in ev.cosigned)


def load_policy(path: Path) -> Policy:
    """Reads and parses a policy file (at most MAX_POLICY_BYTES); OSError as usual."""
    try:
        data = read_file(path, MAX_POLICY_BYTES)
    except InputRejected as e:
        raise PolicyError(0, str(e)) from None
    return parse_policy(data)


def parse_policy(data: bytes) -> Policy:
    """Parses a policy file's bytes; raises PolicyError naming the line at fault."""
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(0, f"{len(data):,} bytes, more than the {MAX_POLICY_BYTES:,} allowed")
    # Octets above 0x7f are opaque (names compare byte for byte): surrogateescape maps every
    # byte string to one text and back.
    text = data.decode("utf-8", "surrogateescape")
    p = _Parser()
    for number, line in enumerate(text.split("\n"), start=1):
        bad = _FORBIDDEN.search(line)
        if bad:
            raise PolicyError(number, f"control character {ord(bad.group()):#04x} is not allowed")
        items = _WHITESPACE.split(line.strip(" \t"))
        if items == [""] or items[0].startswith("#"):
            continue
        p.line(number, items)
    if p.quorum is None:
        raise PolicyError(0, "no quorum line (write `quorum none` to require no cosignature)")
    return Policy(tuple(p.logs), tuple(p.witnesses), tuple(p.groups), p.quorum)


class _Parser:
    def __init__(self) -> None:
        self.logs: list[PolicyLog] = []
        self.witnesses: list[PolicyWitness] = []
        self.groups: list[Group] = []
        self.names: set[str] = set()
        self.quorum: str | None = None

    def line(self, n: int, items: list[str]) -> None:
        keyword, args = items[0], items[1:]
        if keyword == "log":
            self._log(n, args)
        elif keyword == "witness":
            self._witness(n, args)
        elif keyword == "group":
            self._group(n, args)
        elif keyword == "quorum":
            self._quorum(n, args)
        else:
            raise PolicyError(n, f"unknown keyword {keyword!r} (log, witness, group, quorum)")

    def _log(self, n: int, args: list[str]) -> None:
        if len(args) not in (1, 2):
            raise PolicyError(n, "a log line reads `log <vkey> [<url>]`")
        try:
            v = Verifier.from_vkey(args[0])
        except NoteError as e:
            raise PolicyError(n, f"log key: {e}") from e
        if any(lg.verifier.public_key == v.public_key for lg in self.logs):
            raise PolicyError(n, f"log key {v.name}+{v.key_id.hex()} is listed twice")
        self._count(n, self.logs, "logs")
        self.logs.append(PolicyLog(v, args[1] if len(args) == 2 else None))

    def _witness(self, n: int, args: list[str]) -> None:
        if len(args) not in (2, 3):
            raise PolicyError(n, "a witness line reads `witness <name> <vkey> [<url>]`")
        name = self._new_name(n, args[0])
        try:
            v = CosignerVerifier.from_vkey(args[1])
        except CosignatureError as e:
            raise PolicyError(n, f"witness {name}: {e}") from e
        twin = next((w for w in self.witnesses if w.verifier.public_key == v.public_key), None)
        if twin is not None:
            raise PolicyError(n, f"witness {name} has the public key of witness {twin.name}")
        self._count(n, self.witnesses, "witnesses")
        self.witnesses.append(PolicyWitness(name, v, args[2] if len(args) == 3 else None))
        self.names.add(name)

    def _group(self, n: int, args: list[str]) -> None:
        if len(args) < 3:
            raise PolicyError(n, "a group line reads `group <name> all|any|<k> <name>...`")
        name = self._new_name(n, args[0])
        members = args[2:]
        for m in members:
            if m == NONE:
                raise PolicyError(n, f"group {name}: `none` cannot be a member")
            if m not in self.names:
                raise PolicyError(n, f"group {name}: {m!r} is not defined on an earlier line")
        if len(set(members)) != len(members):
            raise PolicyError(n, f"group {name} lists a member twice")
        k_text = args[1]
        if k_text == "all":
            k = len(members)
        elif k_text == "any":
            k = 1
        elif _THRESHOLD.fullmatch(k_text):
            k = int(k_text)
            if k > len(members):
                raise PolicyError(n, f"group {name}: threshold {k} is above its {len(members)}")
        else:
            raise PolicyError(n, f"group {name}: threshold {k_text!r} is not all, any or 1..n")
        self._count(n, self.groups, "groups")
        self.groups.append(Group(name, k, tuple(members)))
        self.names.add(name)

    def _quorum(self, n: int, args: list[str]) -> None:
        if len(args) != 1:
            raise PolicyError(n, "a quorum line reads `quorum <name>`")
        if self.quorum is not None:
            raise PolicyError(n, "a second quorum line (a policy has exactly one)")
        if args[0] != NONE and args[0] not in self.names:
            raise PolicyError(n, f"quorum {args[0]!r} is not defined on an earlier line")
        self.quorum = args[0]

    def _new_name(self, n: int, name: str) -> str:
        if name == NONE:
            raise PolicyError(n, "`none` is predefined and cannot be redefined")
        if name in self.names:
            raise PolicyError(n, f"the name {name!r} is already defined")
        return name

    @staticmethod
    def _count(n: int, items: Sized, what: str) -> None:
        if len(items) >= MAX_ITEMS:
            raise PolicyError(n, f"more than {MAX_ITEMS} {what}")
