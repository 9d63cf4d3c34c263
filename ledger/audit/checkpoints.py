"""Signed checkpoints as an audit opens them, and the key lifetime rule over a log's history.

open_checkpoint accepts a checkpoint only when a trusted key named after its origin signed it;
check_key_lifetimes holds every checkpoint since a given size to the rule of ledger/keyset.py.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from ..checkpoint import Checkpoint, CheckpointError, parse_checkpoint
from ..keyset import KeyRuleError, KeySet
from ..note import NoteError, Verifier, open_note
from .errors import AuditError
from .source import LogSource


class CheckpointRejected(ValueError):
    """The note is malformed, or not signed by a trusted key of the log it names."""


@functools.lru_cache(maxsize=8192)
def _open_cached(note: str, keys: tuple[Verifier, ...]) -> Checkpoint:
    try:
        opened = open_note(note, keys)
        cp = parse_checkpoint(opened.text)
    except (NoteError, CheckpointError) as e:
        raise CheckpointRejected(str(e)) from e
    if not any(sig.name == cp.origin for sig in opened.verified):
        signers = ", ".join(sorted({s.name for s in opened.verified}))
        raise CheckpointRejected(f"checkpoint of log {cp.origin!r} is signed by {signers}")
    return cp


def open_checkpoint(note: str, keys: Iterable[Verifier]) -> Checkpoint:
    """Opens a C2SP checkpoint: a trusted key named after its origin must have signed it.

    A key's name is the log's origin (C2SP tlog-checkpoint); signatures by other keys are
    ignored, and a bad signature by a trusted key is an error (note.open_note).
    """
    return _open_cached(note, tuple(keys))


def check_key_lifetimes(
    source: LogSource, keyset: KeySet, first: int, note: str, latest: Checkpoint
) -> AuditError | None:
    """The first checkpoint of size >= `first` that breaks the key lifetime rule of
    ledger/keyset.py (every key active at its size signed it, no retired key did): among the
    stored checkpoints when the source keeps them, and the latest one."""
    notes = list(source.checkpoints(first, latest.size) or ())
    if not notes or notes[-1][0] != latest.size:
        notes.append((latest.size, note))
    for size, n in notes:
        try:
            keyset.open_checkpoint(n)
        except KeyRuleError as e:
            return AuditError(
                f"the checkpoint of size {size} breaks the key rotation rule: {e}",
                max(size - 1, 0),
                "key-rule",
                checkpoint=size,
            )
    return None
