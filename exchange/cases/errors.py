"""Errors of case packages. A verifier's errors carry the member at fault and an exit code, so
a command line maps them in one place: CaseMalformed exits 3, CaseFailed exits 4."""

from __future__ import annotations

from typing import ClassVar


class CaseError(Exception):
    """A case package does not verify. `member` names the file at fault (None: the package
    as a whole, or an input beside it such as a verifier key); `reason` says what is wrong."""

    exit_code: ClassVar[int] = 4

    def __init__(self, member: str | None, reason: str) -> None:
        super().__init__(reason if member is None else f"{member}: {reason}")
        self.member = member
        self.reason = reason


class CaseMalformed(CaseError):
    """The package cannot be read as a case package at all: not the canonical ZIP layout,
    over a size bound, a member name outside the layout, an unreadable manifest."""

    exit_code = 3


class CaseFailed(CaseError):
    """The package was read, and a member does not prove what it claims: its bytes differ
    from the manifest, a receipt, commitment, signature or proof does not verify."""

    exit_code = 4


class CaseBuildError(ValueError):
    """The inputs of a package contradict each other or the log (a Bundle whose bytes do not
    match its entry's commitment, an entry beyond the chosen checkpoint, ...); nothing is
    built."""
