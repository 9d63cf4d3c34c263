"""The errors the exchange's domain code raises: what went wrong, where, and what to do.

Every refusal is a :class:`MedledgerError` of one of the kinds below, carrying its data as
fields: `diagnostics` (a sentence for a person), `expression` (the FHIRPath of the offending
element or the name of the offending parameter, when there is one), `code` (the FHIR
IssueType, http://hl7.org/fhir/issue-type, defaulting to the kind's) and `retry_after`
(seconds, when trying again later may succeed). The kind says what the refusal means, not
how it is answered: exchange.http.errors holds the one table from kind to HTTP status and
OperationOutcome, and exchange.cli.exits the one table from kind to exit code.

Intake's refusals (exchange.intake.IntakeError) are MedledgerErrors too; they carry their
own status, which FHIR fixes by what was wrong with the body, and an issue per problem.
"""

from __future__ import annotations

from typing import ClassVar


class MedledgerError(Exception):
    """A refusal, with what went wrong (`diagnostics`), where (`expression`), its FHIR
    IssueType (`code`) and when to try again (`retry_after` seconds; None: not worth it)."""

    default_code: ClassVar[str] = "processing"

    def __init__(
        self,
        diagnostics: str,
        expression: str | None = None,
        *,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.expression = expression
        self.code = code or self.default_code
        self.retry_after = retry_after


class Invalid(MedledgerError):
    """The request is malformed: a parameter, header or value that cannot be taken (400)."""

    default_code = "invalid"


class Unauthenticated(MedledgerError):
    """No valid credential came with the request (401). `challenge_error` is the RFC 6750
    error code of the challenge (`invalid_token`), when the credential was there but bad."""

    default_code = "login"

    def __init__(self, diagnostics: str, challenge_error: str | None = None) -> None:
        super().__init__(diagnostics)
        self.challenge_error = challenge_error


class Forbidden(MedledgerError):
    """The caller may not do this: its role, scope, organisation or the registry says no."""

    default_code = "forbidden"


class NotFound(MedledgerError):
    """No such thing, or none the caller may know of (404)."""

    default_code = "not-found"


class NotAcceptable(MedledgerError):
    """The client accepts no format the answer could be given in (406)."""

    default_code = "not-supported"


class Conflict(MedledgerError):
    """The request contradicts what is stored (409)."""

    default_code = "conflict"


class Gone(MedledgerError):
    """It existed and was destroyed on purpose (410): an erasure, an expired export."""

    default_code = "deleted"


class PreconditionFailed(MedledgerError):
    """A condition the request named (If-Match) does not hold (412)."""

    default_code = "conflict"


class Unprocessable(MedledgerError):
    """Well formed, but not something this service can act on (422)."""

    default_code = "processing"


class Throttled(MedledgerError):
    """Too much at once from this caller or from everyone: retry after `retry_after` (429)."""

    default_code = "throttled"


class Unavailable(MedledgerError):
    """The service cannot do it now (the store, the intake workers): worth a retry (503)."""

    default_code = "transient"
