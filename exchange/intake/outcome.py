"""The intake error: an HTTP status plus FHIR OperationOutcome issues.

Every refusal of the intake layer is an :class:`IntakeError`; the service turns it into an
HTTP response whose body is :meth:`IntakeError.operation_outcome`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from exchange.errors import MedledgerError

SEVERITIES = frozenset({"fatal", "error", "warning", "information"})

# The subset of the FHIR R4 IssueType value set (http://hl7.org/fhir/issue-type) intake uses.
ISSUE_CODES = frozenset(
    {
        "structure",
        "invalid",
        "required",
        "value",
        "too-long",
        "too-costly",
        "not-supported",
        "duplicate",
        "code-invalid",
        "business-rule",
        "processing",
        "security",
    }
)


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue.

    ``expression`` is a FHIRPath to the offending element ("Bundle.entry[3].resource.status",
    0-based indices as FHIRPath uses), or None when the problem is not located in the
    document (a media type, an empty body).
    """

    severity: str
    code: str
    diagnostics: str
    expression: str | None = None

    def as_fhir(self) -> dict[str, Any]:
        """This issue as an OperationOutcome.issue JSON object."""
        out: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression is not None:
            out["expression"] = [self.expression]
        return out


class IntakeError(MedledgerError):
    """A refused submission (a MedledgerError whose status intake decides, one issue per
    problem found).

    ``status`` is the HTTP status to answer with: 400 (not acceptable JSON), 413 (too large),
    415 (media type), 422 (well-formed JSON that is not an acceptable FHIR Bundle).
    """

    status: int
    issues: list[Issue]

    def __init__(self, status: int, issues: Iterable[Issue]) -> None:
        self.status = status
        self.issues = list(issues)
        if not self.issues:
            self.issues = [Issue("error", "processing", "the submission was refused", None)]
        first = self.issues[0]
        where = f" (at {first.expression})" if first.expression else ""
        more = f" [+{len(self.issues) - 1} more]" if len(self.issues) > 1 else ""
        super().__init__(
            f"{status}: {first.diagnostics}{where}{more}", first.expression, code=first.code
        )

    @classmethod
    def one(
        cls, status: int, code: str, diagnostics: str, expression: str | None = None
    ) -> IntakeError:
        """An error with a single issue of severity "error"."""
        return cls(status, [Issue("error", code, diagnostics, expression)])

    def operation_outcome(self) -> dict[str, Any]:
        """A FHIR R4 OperationOutcome resource (as a JSON object) listing every issue."""
        return {
            "resourceType": "OperationOutcome",
            "issue": [issue.as_fhir() for issue in self.issues],
        }


class Issues:
    """Issues in order of discovery, without repeats, capped at ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.items: list[Issue] = []
        self._seen: set[tuple[str | None, str]] = set()

    @property
    def full(self) -> bool:
        return len(self.items) >= self.limit

    def add(self, code: str, diagnostics: str, expression: str | None) -> None:
        key = (expression, code)
        if key in self._seen or self.full:
            return
        self._seen.add(key)
        self.items.append(Issue("error", code, diagnostics, expression))

    def extend(self, issues: Iterable[Issue]) -> None:
        for issue in issues:
            self.add(issue.code, issue.diagnostics, issue.expression)

    def outcome(self) -> list[Issue]:
        """The issues, and a warning when the cap stopped the search for more."""
        if not self.full:
            return list(self.items)
        note = Issue(
            "warning",
            "too-costly",
            f"validation stopped after {self.limit} issues; there may be more: fix these and "
            "resubmit",
            None,
        )
        return [*self.items, note]


def json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "JSON object"
    if isinstance(value, list):
        return "JSON array"
    if isinstance(value, str):
        return "JSON string"
    if isinstance(value, bool):
        return "JSON boolean"
    if value is None:
        return "JSON null"
    return "JSON number"


def show(value: Any, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, Decimal) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
