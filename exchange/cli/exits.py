"""The CLI's exit codes, the same for every command, and the one table from error to code.

0 ok; 1 usage (or a refusal of what was asked); 2 network or database unavailable;
3 malformed input or local state; 4 verification failed; 5 proven log misbehaviour;
6 not witnessed enough (everything verifies but the witness policy's quorum did not cosign).
"""

from __future__ import annotations

from collections.abc import Mapping

from exchange.errors import (
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    MedledgerError,
    NotAcceptable,
    NotFound,
    PreconditionFailed,
    Throttled,
    Unauthenticated,
    Unavailable,
    Unprocessable,
)
from ledger.policy import EXIT_NOT_WITNESSED as EXIT_NOT_WITNESSED  # 6, ledger.policy's

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_UNAVAILABLE = 2
EXIT_MALFORMED = 3
EXIT_VERIFY_FAILED = 4
EXIT_MISBEHAVIOUR = 5

# The exit code of each kind of domain error (exchange.errors), as http/errors.py's STATUS
# is its HTTP status.
EXIT: Mapping[type[MedledgerError], int] = {
    Invalid: EXIT_USAGE,
    Unauthenticated: EXIT_USAGE,
    Forbidden: EXIT_USAGE,
    NotFound: EXIT_USAGE,
    NotAcceptable: EXIT_USAGE,
    Conflict: EXIT_USAGE,
    PreconditionFailed: EXIT_USAGE,
    Gone: EXIT_MALFORMED,
    Unprocessable: EXIT_MALFORMED,
    Throttled: EXIT_UNAVAILABLE,
    Unavailable: EXIT_UNAVAILABLE,
}


def exit_code(err: MedledgerError) -> int:
    """The exit code `err` ends a command with."""
    for kind in type(err).__mro__:
        if kind in EXIT:
            return EXIT[kind]
    return EXIT_MALFORMED
