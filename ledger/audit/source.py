"""Where an audit reads a log from (LogSource), and how reading it fails.

exchange/audit_sources.py reads a log's database or its HTTP API; tests read lists in memory.
The audit trusts nothing a source hands out and re-derives all of it; a source fails on its own
account only by being unreadable (SourceUnavailable, exit 2) or by answering in a shape no log
does (SourceMalformed, exit 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class SourceUnavailable(Exception):
    """The log could not be read: network, server or database down, an HTTP error status, or
    the run's deadline passed. Exit 2."""

    def __init__(self, message: str, hint: str = "check the address and retry later") -> None:
        super().__init__(message)
        self.hint = hint


class SourceMalformed(SourceUnavailable):
    """The source answered, but not as a log does: an answer over its size cap, not the API's
    strict JSON or of the wrong shape. Exit 3. A kind of SourceUnavailable (nothing usable was
    read), so whatever tolerates an unreadable source tolerates this one too."""


class LogSource(Protocol):
    """Where an audit reads a log from. Every method may raise SourceUnavailable.

    `checkpoints`, `stored_hashes` and `beyond` describe the store behind a log; a source
    without such access (an HTTP API) returns None / (None, None) and those checks are skipped.
    """

    description: str
    page_size: int

    def checkpoint(self) -> str:
        """The latest signed checkpoint note."""
        ...

    def entries(self, start: int, end: int) -> Sequence[bytes]:
        """Entry bytes from `start` on, at most end-start of them, in order; fewer is allowed."""
        ...

    def consistency_proof(self, size1: int, size2: int) -> Sequence[bytes]:
        """The source's RFC 6962 consistency proof; raises ProofError when it has none."""
        ...

    def inclusion_proof(self, index: int, size: int) -> Sequence[bytes]:
        """The source's RFC 6962 audit path; raises ProofError when it has none."""
        ...

    def checkpoints(self, first: int, last: int) -> Sequence[tuple[int, str]] | None:
        """Stored (size, note) rows with first <= size <= last, by size; None if not kept."""
        ...

    def stored_hashes(self, start: int, end: int) -> Sequence[tuple[int, bytes]] | None:
        """Stored (index, hash) rows with start <= index < end, by index; None if not kept."""
        ...

    def beyond(self, size: int) -> tuple[int | None, int | None]:
        """(first entry index >= size, first checkpoint size > size) the store holds."""
        ...
