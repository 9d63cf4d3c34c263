"""Strict intake of FHIR R4 Bundles: media type, strict JSON, R4B validation, classification.

A pure library: the service calls :func:`check_bundle` and answers an :class:`IntakeError`
with its ``status`` and ``operation_outcome()``.
"""

from .kind import Intake, check_bundle, derive_kind
from .outcome import IntakeError, Issue
from .strict_json import IntakeLimits, check_media_type, parse_strict
from .validate import validate_bundle

__all__ = [
    "Intake",
    "IntakeError",
    "IntakeLimits",
    "Issue",
    "check_bundle",
    "check_media_type",
    "derive_kind",
    "parse_strict",
    "validate_bundle",
]
