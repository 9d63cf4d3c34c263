"""add-checkpoint as c2sp.org/tlog-witness specifies it, without the HTTP around it.

A request body is an old size line, up to 63 consistency proof lines, an empty line and a
signed checkpoint::

    old <size the witness is believed to hold>
    <base64 hash>
    ...

    <origin>
    <size>
    <base64 root>

    — <log key name> <base64 signature>

Witness.add_checkpoint checks it in the spec's order and answers with the cosignature line,
or raises AddCheckpointError carrying the spec's status: 400 malformed, or an old size above
the checkpoint's; 404 a log the witness does not know; 403 not signed by a key it trusts for
that log, or a trusted key's signature fails; 409 (SizeConflict) the old size is not the size
it holds, with that size; 422 a size-0 checkpoint whose root is not the empty tree's, a proof
given from size 0, a consistency proof that does not verify, or another root for the size it
holds (ForkRefused, which carries evidence of the fork). A validly signed checkpoint that
fails a consistency check is kept in the store's refusals: it may prove the log misbehaved.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

from .. import merkle
from ..audit.evidence import Evidence, RootClaim
from ..checkpoint import Checkpoint, CheckpointError, parse_checkpoint
from ..cosignature import Cosigner, CosignerVerifier
from ..encoding import b64
from ..note import NoteError, Verifier, open_note
from ..note import split as split_note
from ..untrusted import InputRejected, read_base64, read_uint64
from .store import Held, Refusal, WitnessStore

MAX_PROOF_LINES = 63
MAX_REQUEST_BYTES = 64 << 10
"""A request is an old size line, at most 63 hashes (about 2.8 KiB) and a checkpoint with its
signatures (a few hundred bytes each, at most note.MAX_SIGNATURES of them)."""
SIZE_TYPE = "text/x.tlog.size"
"""The Content-Type of a 409's body: the size the witness holds, in decimal, and a newline."""
MAX_STORED_SIZE = 2**63 - 1
"""SQLite integers are signed 64-bit: the largest tree size a witness records."""


class AddCheckpointError(Exception):
    """The witness refuses the request; `status` is the HTTP status the spec gives."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class SizeConflict(AddCheckpointError):
    """409: the old size is not the size of the latest checkpoint the witness cosigned."""

    def __init__(self, size: int, old_size: int) -> None:
        super().__init__(409, f"this witness holds size {size}, not {old_size}")
        self.size = size


class ForkRefused(AddCheckpointError):
    """422: the log signed another root for the size the witness holds. `evidence` (the
    witness's checkpoint and the submitted one, both signed by the log) is a fork anyone can
    re-check with the log's key (ledger.audit.verify_evidence)."""

    def __init__(self, reason: str, evidence: Evidence) -> None:
        super().__init__(422, reason)
        self.evidence = evidence


@dataclass(frozen=True)
class Request:
    old_size: int
    proof: tuple[bytes, ...]
    note: str


def format_request(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    """The add-checkpoint body: old size line, proof lines, empty line, checkpoint."""
    lines = [f"old {old_size}", *(b64(h) for h in proof)]
    return ("\n".join(lines) + "\n\n" + note).encode()


def parse_request(body: bytes) -> Request:
    """Parses an add-checkpoint body; AddCheckpointError(400) saying what is wrong."""
    if len(body) > MAX_REQUEST_BYTES:
        raise AddCheckpointError(413, f"request of {len(body):,} bytes is over the limit")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AddCheckpointError(400, f"request is not UTF-8 (byte {e.start})") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise AddCheckpointError(400, "request has no empty line before the checkpoint")
    lines = head.split("\n")
    if not lines[0].startswith("old "):
        raise AddCheckpointError(400, "request does not start with an `old <size>` line")
    try:
        old_size = read_uint64(lines[0][4:])
    except InputRejected as e:
        raise AddCheckpointError(400, f"old size: {e}") from None
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise AddCheckpointError(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for n, line in enumerate(lines[1:], start=1):
        try:
            proof.append(read_base64(line, f"proof line {n}", size=merkle.HASH_SIZE))
        except InputRejected as e:
            raise AddCheckpointError(400, str(e)) from None
    if not note:
        raise AddCheckpointError(400, "request has no checkpoint after the empty line")
    return Request(old_size, tuple(proof), note)


def _inconsistency(req: Request, cp: Checkpoint, held_root: bytes) -> str | None:
    """Why `cp` does not extend the tree of req.old_size leaves with `held_root`, or None."""
    if cp.size == 0 and cp.root != merkle.empty_root():
        return "a checkpoint of size 0 must have the empty tree's root"
    if req.old_size == 0:
        return "a consistency proof from size 0 must be empty" if req.proof else None
    if req.old_size == cp.size and cp.root != held_root:
        return (
            f"the log signed two roots for size {cp.size}: this witness cosigned "
            f"{b64(held_root)}, the checkpoint submitted has {b64(cp.root)}"
        )
    try:
        merkle.verify_consistency(req.old_size, cp.size, held_root, cp.root, req.proof)
    except merkle.ProofError as e:
        return f"consistency proof {req.old_size} -> {cp.size} does not verify: {e}"
    return None


def _rfc3339(posix: int) -> str:
    return datetime.fromtimestamp(posix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Witness:
    """A witness: its cosigner key, the log keys it trusts (by origin) and its store.

    Safe to call from many threads at once: the store's compare-and-swap orders them.
    """

    def __init__(
        self,
        store: WitnessStore,
        cosigner: Cosigner,
        logs: Iterable[Verifier],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.cosigner = cosigner
        self.verifier: CosignerVerifier = cosigner.verifier
        self.logs: dict[str, list[Verifier]] = {}
        for v in logs:
            self.logs.setdefault(v.name, []).append(v)
        self.clock = clock

    def add_checkpoint(self, body: bytes) -> str:
        """Checks an add-checkpoint request and cosigns it; returns the cosignature line.

        Raises AddCheckpointError (SizeConflict, ForkRefused) with the spec's status.
        """
        req = parse_request(body)
        try:
            text, _ = split_note(req.note)
            cp = parse_checkpoint(text)
        except (NoteError, CheckpointError) as e:
            raise AddCheckpointError(400, f"malformed checkpoint: {e}") from e
        keys = self.logs.get(cp.origin)
        if keys is None:
            raise AddCheckpointError(404, f"unknown log {cp.origin!r}")
        try:
            opened = open_note(req.note, keys)
        except NoteError as e:
            raise AddCheckpointError(403, f"checkpoint of {cp.origin}: {e}") from e
        if cp.size > MAX_STORED_SIZE:
            raise AddCheckpointError(400, f"tree size {cp.size} is beyond 2^63-1")
        if req.old_size > cp.size:
            raise AddCheckpointError(
                400, f"old size {req.old_size} is above the checkpoint's size {cp.size}"
            )
        held = self.store.held(cp.origin)
        held_size, held_root = (0, merkle.empty_root()) if held is None else (held.size, held.root)
        if req.old_size != held_size:
            raise SizeConflict(held_size, req.old_size)
        reason = _inconsistency(req, cp, held_root)
        if reason is not None:
            self._refuse(req, cp, held, reason)
        now = int(self.clock())
        if now <= 0:
            raise AddCheckpointError(503, "the witness's clock is not set")
        cosig = self.cosigner.cosign(text, now)
        # What the witness keeps (and serves to monitors): the checkpoint, the log signatures
        # it verified and its own cosignature; other lines were never checked.
        kept = text + "\n" + "".join(s.line() for s in opened.verified) + cosig.line()
        moved = self.store.advance(cp.origin, req.old_size, cp.size, cp.root, kept, now)
        if moved is not None:
            raise SizeConflict(moved, req.old_size)
        return cosig.line()

    def _refuse(self, req: Request, cp: Checkpoint, held: Held | None, reason: str) -> NoReturn:
        """Keeps the refused checkpoint (it is validly signed) and raises the 422."""
        at = int(self.clock())
        self.store.add_refusal(
            Refusal(
                0,
                cp.origin,
                at,
                422,
                reason,
                req.old_size,
                "".join(b64(h) + "\n" for h in req.proof),
                req.note,
                None if held is None else held.note,
            )
        )
        if held is not None and held.size == cp.size and held.root != cp.root:
            raise ForkRefused(reason, self.fork_evidence(held.note, req.note, at))
        raise AddCheckpointError(422, reason)

    def fork_evidence(self, held: str, other: str, at: int) -> Evidence:
        """Evidence (medledger-evidence/v1, kind fork) of two checkpoints of one size with
        different roots: `held`, which this witness cosigned, and `other`."""
        a = parse_checkpoint(split_note(held)[0])
        b = parse_checkpoint(split_note(other)[0])
        return Evidence(
            kind="fork",
            origin=a.origin,
            checkpoints=(held, other),
            claims=(
                RootClaim(0, a.size, a.root, "checkpoint"),
                RootClaim(1, b.size, b.root, "checkpoint"),
            ),
            source=f"witness {self.verifier.vkey()}",
            observed=_rfc3339(at),
            summary=(
                f"witness {self.verifier.name} cosigned size {a.size} of {a.origin} with root "
                f"{b64(a.root)}; the log then submitted the same size with root {b64(b.root)}"
            ),
        )

    def checkpoint(self, hex_hash: str) -> str | None:
        """The latest checkpoint cosigned for the log whose origin hashes to `hex_hash`
        (the monitoring path), with its log signatures and the witness's cosignature."""
        held = self.store.held_by_hash(hex_hash)
        return None if held is None else held.note

    def refusal_evidence(self, origin: str) -> list[Evidence]:
        """Evidence of forks among the refusals kept for `origin`."""
        out = []
        for r in self.store.refusals(origin):
            if r.held is None:
                continue
            a = parse_checkpoint(split_note(r.held)[0])
            b = parse_checkpoint(split_note(r.note)[0])
            if a.size == b.size and a.root != b.root:
                out.append(self.fork_evidence(r.held, r.note, r.at))
        return out
