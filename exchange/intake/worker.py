"""Intake as the service's worker processes run it: the few facts the ledger needs, or a refusal.

Apart from exchange.services on purpose: a pool worker finds these functions by module name
when it unpickles a task, and importing this module costs it no web framework or database
driver, only intake itself.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .kind import check_bundle
from .outcome import IntakeError, Issue
from .performers import Performance, performances
from .strict_json import IntakeLimits


@dataclass(frozen=True)
class Checked:
    """What intake found in an accepted Bundle, as far as the ledger and the tables need it."""

    kind: str
    media: str
    identifier: tuple[str, str] | None
    # Every Patient.identifier (system, value) the Bundle names, in its one spelling; the first
    # is the patient the ledger entry's `subject` names.
    patients: tuple[tuple[str, str], ...]
    # Each Procedure's practitioner performers and day, for the registry's licence check.
    performers: tuple[Performance, ...] = ()


@dataclass(frozen=True)
class Refusal:
    # IntakeError does not survive pickling (its __init__ takes the issues), so workers
    # send back its parts.
    status: int
    issues: tuple[Issue, ...]


def check(body: bytes, content_type: str | None, limits: IntakeLimits) -> Checked:
    """The intake pipeline; raises IntakeError."""
    intake = check_bundle(body, content_type, limits)
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return Checked(
        kind=intake.kind,
        media=media,
        identifier=intake.identifier,
        patients=tuple(intake.patients),
        performers=performances(intake.doc),
    )


def check_in_worker(
    body: bytes, content_type: str | None, limits: IntakeLimits
) -> Checked | Refusal:
    try:
        return check(body, content_type, limits)
    except IntakeError as e:
        return Refusal(e.status, tuple(e.issues))


def warm() -> None:
    """Warms this process (the pool's initializer): a no-op in a worker forked from the warm
    fork server, the whole warm-up where the server cannot preload (exchange.intake.warmed)."""
    importlib.import_module("exchange.intake.warmed")
