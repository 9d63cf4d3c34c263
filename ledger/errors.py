"""Error types of the log's writer side. Verification errors live in verify.py."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of the log's errors; the message says what to do."""


class LedgerUnavailable(LedgerError):
    """The store could not be written (database down, disk full, lock timeout). Retry later."""


class DuplicateConflict(LedgerError):
    """A deduplication key was seen before with different content."""

    def __init__(self, key: str, index: int) -> None:
        super().__init__(
            f"key {key!r} was already used for entry {index} with different content; "
            "use a new key for a new submission"
        )
        self.key = key
        self.index = index


class LogStateError(LedgerError):
    """The store's log does not match this instance's configuration or its own checkpoint."""
