"""What a valid submission is: its ledger kind and the identifiers the exchange indexes.

:func:`check_bundle` is the whole intake pipeline: media type, strict JSON, FHIR validation,
then this classification.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from adapters.rwd_identity import checks_for
from exchange.intake.identifiers import normalise

from .genomic import check_genomic_approval
from .outcome import IntakeError, Issue
from .strict_json import DEFAULT_LIMITS, IntakeLimits, check_media_type, parse_strict
from .validate import validate_bundle

CONSENT_TYPES = frozenset({"Consent"})
SETTLEMENT_TYPES = frozenset(
    {
        "Claim",
        "ClaimResponse",
        "Invoice",
        "ExplanationOfBenefit",
        "Coverage",
        "PaymentReconciliation",
    }
)
RWD_TYPES = frozenset(
    {"MedicationAdministration", "MedicationStatement", "MedicationDispense", "AdverseEvent"}
)


@dataclass(frozen=True)
class Intake:
    """A submission that passed intake.

    ``identifier`` is Bundle.identifier as (system, value) when it has both; ``patients`` are
    the (system, value) identifiers of the Bundle's Patient resources (entries and their
    contained resources) in their one spelling (exchange.identifiers.normalise), without
    repeats, in document order, skipping identifiers that lack a system or a value;
    ``resource_types`` are the entries' resource types in entry order (entries without a
    resource, such as a transaction's DELETE, are skipped).
    """

    doc: dict[str, Any]
    kind: str
    bundle_type: str
    identifier: tuple[str, str] | None
    patients: list[tuple[str, str]]
    resource_types: list[str]


def check_bundle(
    body: bytes, content_type: str | None, limits: IntakeLimits = DEFAULT_LIMITS
) -> Intake:
    """Run the intake pipeline on a request; raise :class:`IntakeError` on any refusal."""
    check_media_type(content_type)
    doc = parse_strict(body, limits)
    validate_bundle(doc, limits)
    check_genomic_approval(doc)
    kind = derive_kind(doc)
    check_pack_identities(doc)
    if kind == "consent":
        check_consent_times(doc)
    return Intake(
        doc=doc,
        kind=kind,
        bundle_type=str(doc["type"]),
        identifier=bundle_identifier(doc),
        patients=patient_identifiers(doc),
        resource_types=entry_resource_types(doc),
    )


def check_pack_identities(doc: dict[str, Any]) -> None:
    """Refuse a Bundle carrying RWD content whose packs are not traceable, whatever kind it is
    filed under (adapters.rwd_identity.checks_for decides by the resource types present).

    Lecheng real-world data is only worth keeping when each pack can be followed back to its
    foreign manufacturer and lot for a recall; an Invoice or a Consent beside it changes the
    Bundle's kind, never that. Warnings (weaker traceability) do not refuse.
    """
    errors = [i for i in checks_for(doc) if i.severity in ("error", "fatal")]
    if errors:
        raise IntakeError(
            422, [Issue(i.severity, i.code, i.diagnostics, i.expression) for i in errors]
        )


def check_consent_times(doc: dict[str, Any]) -> None:
    """Refuse (422) a Consent entry without `dateTime`.

    Among a patient's current Consents the newest by dateTime decides (exchange.consent); a
    Consent without one could only be ordered by guessing, so it is not taken at all.
    """
    entries = doc.get("entry")
    missing = [
        i
        for i, entry in enumerate(entries if isinstance(entries, list) else [])
        if isinstance(entry, dict)
        and isinstance(entry.get("resource"), dict)
        and entry["resource"].get("resourceType") == "Consent"
        and not entry["resource"].get("dateTime")
    ]
    if missing:
        raise IntakeError(
            422,
            [
                Issue(
                    "error",
                    "required",
                    "Consent.dateTime is required: the newest of a patient's consents decides, "
                    "so each Consent must say when it was given (or withdrawn)",
                    f"Bundle.entry[{i}].resource.dateTime",
                )
                for i in missing
            ],
        )


def derive_kind(doc: dict[str, Any]) -> str:
    """The ledger kind of a Bundle, from the resource types it carries.

    In order of priority: any Consent -> ``"consent"``; any Claim, ClaimResponse, Invoice,
    ExplanationOfBenefit, Coverage or PaymentReconciliation -> ``"settlement"``; any
    MedicationAdministration, MedicationStatement, MedicationDispense or AdverseEvent ->
    ``"rwd"``; otherwise ``"record"``.

    ``"rwd"`` stands for real-world data on the use of a special-import product. The product
    itself is not identified here: a Bundle counts as RWD when it carries an AdverseEvent or a
    medication-use resource (administration, statement, dispense), which is how the pilot-zone
    follow-up of imported drugs and devices is reported. A Medication or MedicationRequest
    alone is a clinical record, not a use.

    The resources looked at are the entries' resources and the resources they contain;
    resources inside a nested Bundle are not. Total on any input: a non-Bundle is "record".
    """
    types = set(_resource_types(doc))
    if types & CONSENT_TYPES:
        return "consent"
    if types & SETTLEMENT_TYPES:
        return "settlement"
    if types & RWD_TYPES:
        return "rwd"
    return "record"


def entry_resource_types(doc: dict[str, Any]) -> list[str]:
    """Bundle.entry.resource.resourceType, in entry order."""
    return [
        resource["resourceType"]
        for resource in _entry_resources(doc)
        if isinstance(resource.get("resourceType"), str)
    ]


def bundle_identifier(doc: dict[str, Any]) -> tuple[str, str] | None:
    """Bundle.identifier as (system, value), or None unless both are strings."""
    return _system_value(doc.get("identifier"))


def patient_identifiers(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """Patient.identifier (system, value) pairs of the Bundle's Patients, each in its one
    spelling (exchange.identifiers.normalise), without repeats, in document order."""
    found: list[tuple[str, str]] = []
    for spelled in spelled_patient_identifiers(doc):
        pair = normalise(spelled)
        if all(pair) and pair not in found:
            found.append(pair)
    return found


def spelled_patient_identifiers(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The same pairs as spelled in the Bundle, without repeats (before identifiers had one
    spelling, these were the keys: exchange.store_upgrade)."""
    found: list[tuple[str, str]] = []
    for resource in _resources(doc):
        if resource.get("resourceType") != "Patient":
            continue
        identifiers = resource.get("identifier")
        for identifier in identifiers if isinstance(identifiers, list) else []:
            pair = _system_value(identifier)
            if pair is not None and pair not in found:
                found.append(pair)
    return found


def _system_value(identifier: Any) -> tuple[str, str] | None:
    if not isinstance(identifier, dict):
        return None
    system, value = identifier.get("system"), identifier.get("value")
    if isinstance(system, str) and isinstance(value, str) and system and value:
        return system, value
    return None


def _entry_resources(doc: Any) -> Iterator[dict[str, Any]]:
    entries = doc.get("entry") if isinstance(doc, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict):
            yield resource


def _resources(doc: Any) -> Iterator[dict[str, Any]]:
    """Entry resources, each followed by its contained resources."""
    for resource in _entry_resources(doc):
        yield resource
        contained = resource.get("contained")
        for inner in contained if isinstance(contained, list) else []:
            if isinstance(inner, dict):
                yield inner


def _resource_types(doc: Any) -> Iterator[str]:
    for resource in _resources(doc):
        kind = resource.get("resourceType")
        if isinstance(kind, str):
            yield kind
