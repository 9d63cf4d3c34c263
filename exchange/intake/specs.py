"""What each JSON property of an R4B resource may hold, read off the fhir.resources models.

The shape walk (exchange.intake.validate) asks :func:`element_specs` and :func:`choice_groups`
of a model by name. They read each pydantic field's annotation (``Optional``, ``List``, the
fhir-core marker of a FHIR primitive in ``Annotated[str, Code()]``, a complex type's model
class) and its ``json_schema_extra`` (``element_property``, ``element_required``,
``enum_values``, ``one_of_many``, ``one_of_many_required``), once per model.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir_core.constraints import FHIR_PRIMITIVES_MAPS
from fhir_core.types import FhirBase
from pydantic.fields import FieldInfo

# Required value sets the R4B models truncate with "+" or do not list: the complete FHIR R4
# (4.0.1) codes.
_OBSERVATION_STATUS = (
    "registered preliminary final amended corrected cancelled entered-in-error unknown"
)
_ENCOUNTER_STATUS = (
    "planned arrived triaged in-progress onleave finished cancelled entered-in-error unknown"
)
_QUANTITY_COMPARATOR = "< <= >= >"
COMPLETED_VALUE_SETS: dict[tuple[str, str], frozenset[str]] = {
    (model, element): frozenset(codes.split())
    for model, element, codes in [
        ("Quantity", "comparator", _QUANTITY_COMPARATOR),
        ("Age", "comparator", _QUANTITY_COMPARATOR),
        ("Count", "comparator", _QUANTITY_COMPARATOR),
        ("Distance", "comparator", _QUANTITY_COMPARATOR),
        ("Duration", "comparator", _QUANTITY_COMPARATOR),
        ("Observation", "status", _OBSERVATION_STATUS),
        ("DetectedIssue", "status", _OBSERVATION_STATUS),
        ("RiskAssessment", "status", _OBSERVATION_STATUS),
        ("Encounter", "status", _ENCOUNTER_STATUS),
        ("EncounterStatusHistory", "status", _ENCOUNTER_STATUS),
        (
            "DiagnosticReport",
            "status",
            "registered partial preliminary final amended corrected appended cancelled "
            "entered-in-error unknown",
        ),
        (
            "DeviceUseStatement",
            "status",
            "active completed entered-in-error intended stopped on-hold",
        ),
        ("DeviceUdiCarrier", "entryType", "barcode rfid manual card self-reported unknown"),
        (
            "QuestionnaireItem",
            "type",
            "group display boolean decimal integer date dateTime time string text url choice "
            "open-choice attachment reference quantity",
        ),
        (
            "StructureMapGroupRuleTarget",
            "transform",
            "create copy truncate escape cast append translate reference dateOp uuid pointer "
            "evaluate cc c qty id cp",
        ),
        (
            "SupplyRequest",
            "status",
            "draft active suspended cancelled completed entered-in-error unknown",
        ),
        (
            "Task",
            "status",
            "draft requested received accepted rejected ready cancelled in-progress on-hold "
            "failed completed entered-in-error",
        ),
    ]
}

INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "integer": (-(2**31), 2**31 - 1),
    "unsignedInt": (0, 2**31 - 1),
    "positiveInt": (1, 2**31 - 1),
}
EXTENSION_OF_PRIMITIVE = "FHIRPrimitiveExtension"


@dataclass(frozen=True)
class Spec:
    """What one JSON property may hold: ``kind`` and FHIR type of a single value."""

    kind: str  # "boolean" | "integer" | "decimal" | "string" | "element" | "resource" | "any"
    fhir_type: str
    is_list: bool = False
    codes: frozenset[str] | None = None
    required: bool = False


RESOURCE_SPEC = Spec("resource", "Resource")
PRIMITIVE_EXTENSION_SPEC = Spec("element", EXTENSION_OF_PRIMITIVE)


def _unwrap(annotation: Any) -> Any:
    """The type inside ``Optional[X]`` (primitive arrays may hold nulls)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def _value_type(annotation: Any) -> tuple[Any, bool]:
    """(the type of one value, whether the element repeats) of a model field's annotation."""
    inner = _unwrap(annotation)
    if typing.get_origin(inner) is list:
        return _unwrap(typing.get_args(inner)[0]), True
    return inner, False


def _primitive_name(value_type: Any) -> str | None:
    """The FHIR primitive a field's type stands for: ``Annotated[str, Id()]`` -> ``"id"``."""
    if value_type is bool:
        return "boolean"
    if typing.get_origin(value_type) is not typing.Annotated:
        return None
    for meta in value_type.__metadata__:
        name = FHIR_PRIMITIVES_MAPS.get(type(meta))
        if name is not None:
            return name
    return FHIR_PRIMITIVES_MAPS.get(value_type)  # uuid is pydantic's UUID4, no FHIR marker


def _spec_of(model_name: str, field: FieldInfo) -> Spec:
    extra = _extra(field)
    spec = _type_spec(model_name, field, extra)
    if field.is_required() or extra.get("element_required"):
        return replace(spec, required=True)
    return spec


def _extra(field: FieldInfo) -> dict[str, Any]:
    extra = field.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def _type_spec(model_name: str, field: FieldInfo, extra: dict[str, Any]) -> Spec:
    value_type, is_list = _value_type(field.annotation)
    primitive = _primitive_name(value_type)
    if primitive is not None:
        if primitive == "boolean":
            return Spec("boolean", "boolean", is_list)
        if primitive in INTEGER_RANGES:
            return Spec("integer", primitive, is_list)
        if primitive == "decimal":
            return Spec("decimal", "decimal", is_list)
        enum = extra.get("enum_values")
        codes = COMPLETED_VALUE_SETS.get((model_name, str(field.alias)))
        if codes is None and enum and "+" not in enum:
            codes = frozenset(enum)
        return Spec("string", primitive, is_list, codes)
    if isinstance(value_type, type) and issubclass(value_type, FhirBase):
        name = value_type.get_model_klass().get_resource_type()
        if name == "Resource":  # any resource: contained, Bundle.entry.resource, ...
            return Spec("resource", "Resource", is_list)
        return Spec("element", name, is_list)
    return Spec("any", "Element", is_list)


@cache
def element_specs(model_name: str) -> dict[str, Spec]:
    """JSON property name -> spec, for the FHIR elements of an R4B model.

    Leaves out the models' own bookkeeping fields (``resource_type``, ``fhir_comments``) and
    the ``_x`` primitive-extension fields, which the walk derives from ``x``.
    """
    if model_name == EXTENSION_OF_PRIMITIVE:
        # The models mark none of its fields as elements; under ``_name`` go extensions.
        return {"extension": Spec("element", "Extension", is_list=True)}
    model = get_fhir_model_class(model_name)
    return {
        str(field.alias): _spec_of(model_name, field)
        for field in model.model_fields.values()
        if _extra(field).get("element_property")
    }


@cache
def choice_groups(model_name: str) -> dict[str, tuple[tuple[str, ...], bool]]:
    """``value[x]`` groups of a model: name -> (JSON names of the choices, required)."""
    groups: dict[str, tuple[tuple[str, ...], bool]] = {}
    model = get_fhir_model_class(model_name)
    for field in model.model_fields.values():
        extra = _extra(field)
        group = extra.get("one_of_many")
        if not group:
            continue
        names, required = groups.get(group, ((), False))
        required = required or bool(extra.get("one_of_many_required"))
        groups[group] = ((*names, str(field.alias)), required)
    return groups


# The concrete resource types of FHIR R4B, as the fhir.resources models define them. Written
# out, because deriving them imports every one of the ~680 models (seconds of a fresh worker's
# start-up); tests/intake/test_intake_validate.py checks the list against the models.
RESOURCE_TYPES = frozenset(
    """
    Account ActivityDefinition AdministrableProductDefinition AdverseEvent AllergyIntolerance
    Appointment AppointmentResponse AuditEvent Basic Binary BiologicallyDerivedProduct BodyStructure
    Bundle CapabilityStatement CarePlan CareTeam CatalogEntry ChargeItem ChargeItemDefinition
    Citation Claim ClaimResponse ClinicalImpression ClinicalUseDefinition CodeSystem Communication
    CommunicationRequest CompartmentDefinition Composition ConceptMap Condition Consent Contract
    Coverage CoverageEligibilityRequest CoverageEligibilityResponse DetectedIssue Device
    DeviceDefinition DeviceMetric DeviceRequest DeviceUseStatement DiagnosticReport DocumentManifest
    DocumentReference Encounter Endpoint EnrollmentRequest EnrollmentResponse EpisodeOfCare
    EventDefinition Evidence EvidenceReport EvidenceVariable ExampleScenario ExplanationOfBenefit
    FamilyMemberHistory Flag Goal GraphDefinition Group GuidanceResponse HealthcareService
    ImagingStudy Immunization ImmunizationEvaluation ImmunizationRecommendation ImplementationGuide
    Ingredient InsurancePlan Invoice Library Linkage List Location ManufacturedItemDefinition
    Measure MeasureReport Media Medication MedicationAdministration MedicationDispense
    MedicationKnowledge MedicationRequest MedicationStatement MedicinalProductDefinition
    MessageDefinition MessageHeader MolecularSequence NamingSystem NutritionOrder NutritionProduct
    Observation ObservationDefinition OperationDefinition OperationOutcome Organization
    OrganizationAffiliation PackagedProductDefinition Parameters Patient PaymentNotice
    PaymentReconciliation Person PlanDefinition Practitioner PractitionerRole Procedure Provenance
    Questionnaire QuestionnaireResponse RegulatedAuthorization RelatedPerson RequestGroup
    ResearchDefinition ResearchElementDefinition ResearchStudy ResearchSubject RiskAssessment
    Schedule SearchParameter ServiceRequest Slot Specimen SpecimenDefinition StructureDefinition
    StructureMap Subscription SubscriptionStatus SubscriptionTopic Substance SubstanceDefinition
    SupplyDelivery SupplyRequest Task TerminologyCapabilities TestReport TestScript ValueSet
    VerificationResult VisionPrescription
    """.split()
)


def is_resource_type(name: Any) -> bool:
    """True when ``name`` is a concrete R4B resource type."""
    return isinstance(name, str) and name in RESOURCE_TYPES
