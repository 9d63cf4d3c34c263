"""FHIR validation of a parsed submission: a Bundle of R4 resources, checked against R4B models.

Three layers, each reporting FHIRPath expressions rooted at ``Bundle``:

1. A shape walk driven by the ``fhir.resources.R4B`` model metadata (exchange.intake.specs).
   It runs before any model and checks what the models coerce or skip: unknown elements,
   the JSON type of every primitive (the models take ``"yes"`` for ``true`` and ``"1"`` for
   the integer ``1``, and read a string where an object belongs), 32-bit integer ranges,
   empty strings, arrays and objects (ele-1), nulls, resource types, nested contained
   resources (dom-2), string length, the 64-character limit of ids, required elements and
   ``value[x]`` choices (all at once, where the models report one kind per round), and the
   codes of every required binding the models list (``enum_values``), completed where the
   models truncate the value set with ``"+"`` or leave it out. Its work stack is explicit, so
   no input depth reaches Python's recursion limit.
2. The R4B models themselves (``Model.model_validate``, exchange.intake.models), for each
   entry's resource and for the Bundle without its resources, unless the shape walk found a
   value of the wrong JSON type or an unknown resource type (the models would coerce it or
   fail on it): they add the lexical checks (dates, ids, codes, the primitives' regexes).
3. The Bundle invariants of FHIR R4 (bdl-1..bdl-5, bdl-7..bdl-12), the transaction rule that
   no resource is touched twice (exchange.intake.invariants), and intake policy: which Bundle
   types a client may submit and how many entries a Bundle may hold.

Expressions use the JSON element names below the choice level: ``valueQuantity`` where
FHIRPath proper would say ``value.ofType(Quantity)``; ``_birthDate`` reads ``birthDate``.
Issues are collected up to ``IntakeLimits.max_issues``, so one round fixes them all.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from .invariants import check_invariants
from .models import model_issues
from .outcome import IntakeError, Issue, Issues, json_type, show
from .specs import (
    INTEGER_RANGES,
    PRIMITIVE_EXTENSION_SPEC,
    RESOURCE_SPEC,
    Spec,
    choice_groups,
    element_specs,
    is_resource_type,
)
from .strict_json import DEFAULT_LIMITS, IntakeLimits

BUNDLE_TYPES = frozenset(
    {
        "document",
        "message",
        "transaction",
        "transaction-response",
        "batch",
        "batch-response",
        "history",
        "searchset",
        "collection",
    }
)
# What a client may submit; the other types are produced by servers (responses, searches,
# histories) and carry no clinical submission of their own.
SUBMITTABLE_BUNDLE_TYPES = frozenset({"document", "message", "transaction", "batch", "collection"})

_PRIMITIVE_KINDS = frozenset({"boolean", "integer", "decimal", "string"})
# FHIR R4's id is 1..64 characters; the models allow 255.
_ID_MAX_CHARS = 64
# Shape issue codes that leave every value of the JSON type the model expects.
_MODEL_SAFE_CODES = frozenset({"code-invalid", "value", "too-long", "invalid"})


def validate_bundle(doc: Any, limits: IntakeLimits = DEFAULT_LIMITS) -> None:
    """Accept ``doc`` as a submittable FHIR R4 Bundle or raise :class:`IntakeError`.

    Status 400 when ``doc`` is not a JSON value or nests deeper than ``limits.max_depth``;
    422 for everything else, with one issue per problem (FHIRPath in ``expression``).
    """
    _check_json_value(doc, limits)
    if not isinstance(doc, dict):
        raise IntakeError.one(
            422, "structure", "the submission must be a JSON object: a FHIR Bundle", None
        )
    _check_resource_type(doc)
    _check_entry_count(doc, limits)

    issues = Issues(limits.max_issues)
    bundle_type = _check_bundle_type(doc, issues)
    listed = doc.get("entry")
    entries: list[Any] = listed if isinstance(listed, list) else []
    _check_bundle_level(doc, entries, limits, issues)
    check_invariants(doc, bundle_type, entries, issues)
    for index, entry in enumerate(entries):
        if issues.full:
            break
        if isinstance(entry, dict) and "resource" in entry:
            _check_entry_resource(entry["resource"], index, limits, issues)
    if issues.items:
        raise IntakeError(422, issues.outcome())


# --- JSON value, resourceType, size -------------------------------------------------------


def _check_json_value(doc: Any, limits: IntakeLimits) -> None:
    """Refuse (400) non-JSON values and nesting beyond ``limits.max_depth``, iteratively."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > limits.max_depth:
                raise _too_deep(limits)
            for key, value in node.items():
                if not isinstance(key, str):
                    raise IntakeError.one(400, "structure", "JSON object keys must be strings")
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            if depth > limits.max_depth:
                raise _too_deep(limits)
            stack.extend((value, depth + 1) for value in node)
        elif isinstance(node, (float, Decimal)) and not _finite(node):
            raise IntakeError.one(400, "value", "NaN and infinities are not JSON numbers")
        elif node is not None and not isinstance(node, (str, bool, int, float, Decimal)):
            raise IntakeError.one(400, "structure", f"a {type(node).__name__} is not a JSON value")


def _too_deep(limits: IntakeLimits) -> IntakeError:
    return IntakeError.one(
        400,
        "structure",
        f"JSON nesting deeper than {limits.max_depth} levels: flatten the document",
    )


def _finite(number: float | Decimal) -> bool:
    return number.is_finite() if isinstance(number, Decimal) else math.isfinite(number)


def _check_resource_type(doc: dict[str, Any]) -> None:
    kind = doc.get("resourceType")
    if kind == "Bundle":
        return
    if kind is None:
        raise IntakeError.one(
            422,
            "required",
            'the JSON object has no resourceType: submit a FHIR Bundle ("resourceType": "Bundle")',
            "Bundle.resourceType",
        )
    if is_resource_type(kind):
        raise IntakeError.one(
            422,
            "invalid",
            f"the body is a {kind}, not a Bundle: wrap it as the resource of an entry of a "
            'Bundle ("type": "collection")',
            "Bundle.resourceType",
        )
    raise IntakeError.one(
        422,
        "invalid",
        f"resourceType {show(kind)} is not a FHIR resource type: submit a FHIR Bundle",
        "Bundle.resourceType",
    )


def _check_entry_count(doc: dict[str, Any], limits: IntakeLimits) -> None:
    """Refuse over-long Bundles before any per-entry work (422, code too-long)."""
    entries = doc.get("entry")
    if isinstance(entries, list) and len(entries) > limits.max_entries:
        raise IntakeError.one(
            422,
            "too-long",
            f"the Bundle has {len(entries)} entries; at most {limits.max_entries} are "
            "accepted: split it into several Bundles",
            "Bundle.entry",
        )


def _check_bundle_type(doc: dict[str, Any], issues: Issues) -> str | None:
    """Bundle.type: required (1..1), from the R4 bundle-type codes, and submittable."""
    bundle_type = doc.get("type")
    if bundle_type is None:
        issues.add(
            "required",
            "Bundle.type is required: one of " + ", ".join(sorted(SUBMITTABLE_BUNDLE_TYPES)),
            "Bundle.type",
        )
        return None
    if not isinstance(bundle_type, str) or bundle_type not in BUNDLE_TYPES:
        return None  # the shape walk reports the wrong type or code
    if bundle_type not in SUBMITTABLE_BUNDLE_TYPES:
        issues.add(
            "not-supported",
            f"Bundle.type {bundle_type!r} is produced by servers (a response, search result "
            "or history) and is not accepted as a submission: send one of "
            + ", ".join(sorted(SUBMITTABLE_BUNDLE_TYPES)),
            "Bundle.type",
        )
    return bundle_type


# --- shape walk and models ----------------------------------------------------------------


def _check_bundle_level(
    doc: dict[str, Any], entries: list[Any], limits: IntakeLimits, issues: Issues
) -> None:
    """The Bundle's own elements (entries without their resources): shape, then R4B model.

    Entry resources are checked one by one afterwards, so the walk skips them here and the
    model sees the Bundle with them removed.
    """
    resources = [entry.get("resource") for entry in entries if isinstance(entry, dict)]
    skip = frozenset(id(resource) for resource in resources if isinstance(resource, dict))
    stripped = dict(doc)
    if "entry" in doc and isinstance(doc["entry"], list):
        stripped["entry"] = [
            {k: v for k, v in entry.items() if k != "resource"}
            if isinstance(entry, dict)
            else entry
            for entry in entries
        ]
    _shape_then_model(doc, "Bundle", limits, issues, skip=skip, model_input=stripped)


def _check_entry_resource(resource: Any, index: int, limits: IntakeLimits, issues: Issues) -> None:
    _shape_then_model(resource, f"Bundle.entry[{index}].resource", limits, issues)


def _shape_then_model(
    resource: Any,
    path: str,
    limits: IntakeLimits,
    issues: Issues,
    skip: frozenset[int] = frozenset(),
    model_input: dict[str, Any] | None = None,
) -> None:
    """Shape walk, then the R4B model when the JSON shapes are sound.

    The models coerce and re-parse wrongly typed values and raise arbitrary errors on unknown
    resource types, so they only see a resource whose shape issues are all about values
    (codes, ranges, lengths, empty elements); their findings at an already reported
    expression are dropped.
    """
    found = shape_issues(resource, RESOURCE_SPEC, path, limits, skip)
    issues.extend(found)
    if any(issue.code not in _MODEL_SAFE_CODES for issue in found):
        return
    reported = {issue.expression for issue in found}
    model_name = resource["resourceType"]
    issues.extend(
        issue
        for issue in model_issues(
            model_name, resource if model_input is None else model_input, path
        )
        if issue.expression not in reported
    )


def shape_issues(
    value: Any, spec: Spec, path: str, limits: IntakeLimits, skip: frozenset[int] = frozenset()
) -> list[Issue]:
    """Check a JSON value against a spec, walking nested elements with an explicit stack.

    Nested resources (``contained``, ``Parameters.parameter.resource``, a Bundle in a Bundle)
    are walked too, except the objects whose ``id()`` is in ``skip``.
    """
    out: list[Issue] = []
    stack: list[tuple[Any, Spec, str, bool]] = [(value, spec, path, False)]
    while stack and len(out) < limits.max_issues:
        node, node_spec, node_path, contained = stack.pop()
        if skip and id(node) in skip:
            continue
        children: list[tuple[Any, Spec, str, bool]] = []
        _check_node(node, node_spec, node_path, contained, limits, out, children)
        stack.extend(reversed(children))
    return out


def _check_node(
    node: Any,
    spec: Spec,
    path: str,
    contained: bool,
    limits: IntakeLimits,
    out: list[Issue],
    children: list[tuple[Any, Spec, str, bool]],
) -> None:
    if spec.kind in _PRIMITIVE_KINDS:
        problem = _primitive_problem(node, spec, limits)
        if problem is not None:
            out.append(Issue("error", problem[0], f"{path}: {problem[1]}", path))
        return
    if spec.kind == "any":
        return
    if not isinstance(node, dict):
        out.append(
            Issue(
                "error",
                "structure",
                f"{path}: a {json_type(node)} where a {spec.fhir_type} (JSON object) belongs",
                path,
            )
        )
        return
    if not node:
        out.append(
            Issue(
                "error",
                "invalid",
                f"{path}: an empty object; FHIR elements must have a value or children "
                "(ele-1): leave it out",
                path,
            )
        )
        return
    model_name = spec.fhir_type
    is_resource = spec.kind == "resource"
    if is_resource:
        model_name_or_none = _resource_model_name(node, path, out)
        if model_name_or_none is None:
            return
        model_name = model_name_or_none
    specs = element_specs(model_name)
    for key, value in node.items():
        if is_resource and key == "resourceType":
            continue
        if key == "contained" and contained:
            out.append(
                Issue(
                    "error",
                    "invalid",
                    f"{path}.contained: a contained resource must not contain resources "
                    "(dom-2): move them into the containing resource",
                    f"{path}.contained",
                )
            )
            continue
        if key.startswith("_"):
            _check_primitive_extension(node, key, value, specs, model_name, path, out, children)
            continue
        field = specs.get(key)
        if field is None:
            out.append(_unknown_element(key, model_name, path))
            continue
        child_contained = contained or (key == "contained")
        _check_property(node, key, value, field, f"{path}.{key}", child_contained, out, children)
    _check_cardinality(node, model_name, specs, path, out)


def _check_cardinality(
    node: dict[str, Any], model_name: str, specs: dict[str, Spec], path: str, out: list[Issue]
) -> None:
    """Required elements (min 1) and choice elements (``value[x]``: at most one, or exactly one
    when required), which the R4B models report one kind per round."""
    for key, spec in specs.items():
        if spec.required and key not in node and f"_{key}" not in node:
            out.append(
                Issue(
                    "error",
                    "required",
                    f"{path}.{key} is required in {model_name} but missing: add it",
                    f"{path}.{key}",
                )
            )
    for group, (names, required) in choice_groups(model_name).items():
        present = [name for name in names if name in node or f"_{name}" in node]
        if len(present) > 1:
            out.append(
                Issue(
                    "error",
                    "invalid",
                    f"{path}.{group}[x] is given {len(present)} times ({', '.join(present)}): "
                    "keep exactly one",
                    f"{path}.{group}",
                )
            )
        elif required and not present:
            out.append(
                Issue(
                    "error",
                    "required",
                    f"{path}.{group}[x] is required in {model_name} but missing: add one of "
                    + ", ".join(names),
                    f"{path}.{group}",
                )
            )


def _resource_model_name(node: dict[str, Any], path: str, out: list[Issue]) -> str | None:
    kind = node.get("resourceType")
    if kind is None:
        out.append(
            Issue(
                "error",
                "required",
                f"{path}.resourceType is missing: every resource names its type",
                f"{path}.resourceType",
            )
        )
        return None
    if not is_resource_type(kind):
        out.append(
            Issue(
                "error",
                "not-supported",
                f"{path}.resourceType {show(kind)} is not a FHIR R4 resource type known to "
                "this service (fhir.resources R4B models)",
                f"{path}.resourceType",
            )
        )
        return None
    return str(kind)


def _check_property(
    node: dict[str, Any],
    key: str,
    value: Any,
    field: Spec,
    path: str,
    contained: bool,
    out: list[Issue],
    children: list[tuple[Any, Spec, str, bool]],
) -> None:
    if value is None:
        out.append(_null_issue(path))
        return
    if not field.is_list:
        if isinstance(value, list):
            out.append(
                Issue(
                    "error",
                    "structure",
                    f"{path}: an array where a single {field.fhir_type} belongs (max "
                    "cardinality 1)",
                    path,
                )
            )
            return
        children.append((value, field, path, contained))
        return
    if not isinstance(value, list):
        out.append(
            Issue(
                "error",
                "structure",
                f"{path}: a {json_type(value)} where an array of {field.fhir_type} belongs: "
                "wrap the value in [ ]",
                path,
            )
        )
        return
    if not value:
        out.append(_empty_array_issue(path))
        return
    extensions = node.get("_" + key)
    for index, item in enumerate(value):
        item_path = f"{path}[{index}]"
        if item is None:
            if not _null_has_extension(field, extensions, index):
                out.append(_null_issue(item_path))
            continue
        children.append((item, field, item_path, contained))


def _null_has_extension(field: Spec, extensions: Any, index: int) -> bool:
    """A null in a primitive array is allowed when ``_name[index]`` carries its extensions."""
    return (
        field.kind in _PRIMITIVE_KINDS
        and isinstance(extensions, list)
        and index < len(extensions)
        and extensions[index] is not None
    )


def _check_primitive_extension(
    node: dict[str, Any],
    key: str,
    value: Any,
    specs: dict[str, Spec],
    model_name: str,
    path: str,
    out: list[Issue],
    children: list[tuple[Any, Spec, str, bool]],
) -> None:
    """``_name`` holds the id and extensions of primitive ``name`` (json.html#primitive)."""
    base = key[1:]
    field = specs.get(base)
    if field is None or field.kind not in _PRIMITIVE_KINDS:
        out.append(_unknown_element(key, model_name, path))
        return
    ext_path = f"{path}.{base}"
    if value is None:
        out.append(_null_issue(ext_path))
        return
    if not field.is_list:
        children.append((value, PRIMITIVE_EXTENSION_SPEC, ext_path, False))
        return
    if not isinstance(value, list):
        out.append(
            Issue(
                "error",
                "structure",
                f"{ext_path}: {key} must be an array matching {base}",
                ext_path,
            )
        )
        return
    values = node.get(base)
    if not value or (isinstance(values, list) and len(values) != len(value)):
        out.append(
            Issue(
                "error",
                "structure",
                f"{ext_path}: {key} must have one item (or null) per item of {base}",
                ext_path,
            )
        )
        return
    for index, item in enumerate(value):
        if item is not None:
            children.append((item, PRIMITIVE_EXTENSION_SPEC, f"{ext_path}[{index}]", False))


def _primitive_problem(value: Any, spec: Spec, limits: IntakeLimits) -> tuple[str, str] | None:
    """(issue code, message) when ``value`` is not a valid JSON form of the primitive."""
    kind = spec.kind
    if kind == "boolean":
        if not isinstance(value, bool):
            return "structure", f"a {json_type(value)} where a boolean (true/false) belongs"
        return None
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return (
                "structure",
                f"a {json_type(value)} ({show(value)}) where a JSON integer "
                f"({spec.fhir_type}) belongs",
            )
        low, high = INTEGER_RANGES[spec.fhir_type]
        if not low <= value <= high:
            return "value", f"{value} is outside the {spec.fhir_type} range {low}..{high}"
        return None
    if kind == "decimal":
        if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
            return "structure", f"a {json_type(value)} where a JSON number (decimal) belongs"
        return None
    if not isinstance(value, str):
        return (
            "structure",
            f"a {json_type(value)} ({show(value)}) where a JSON string ({spec.fhir_type}) belongs",
        )
    if not value:
        return "value", "an empty string; FHIR primitives must not be empty: leave it out"
    if len(value) > limits.max_string_chars:
        return (
            "too-long",
            f"a string of {len(value)} characters; at most {limits.max_string_chars} are "
            "accepted (FHIR strings are limited to 1 MiB characters)",
        )
    if spec.fhir_type == "id" and len(value) > _ID_MAX_CHARS:
        return (
            "value",
            f"an id of {len(value)} characters; FHIR ids have at most {_ID_MAX_CHARS}",
        )
    if spec.codes is not None and value not in spec.codes:
        return (
            "code-invalid",
            f"{show(value)} is not a code of the required value set: use one of "
            + ", ".join(sorted(spec.codes)),
        )
    return None


def _unknown_element(key: str, model_name: str, path: str) -> Issue:
    return Issue(
        "error",
        "structure",
        f"{path}: {key!r} is not an element of {model_name} in FHIR R4: check its spelling "
        "or carry the data in an extension",
        f"{path}.{key[1:] if key.startswith('_') else key}",
    )


def _null_issue(path: str) -> Issue:
    return Issue(
        "error",
        "structure",
        f"{path}: null is not a FHIR value (nulls only pad primitive arrays that have "
        "extensions): leave the element out",
        path,
    )


def _empty_array_issue(path: str) -> Issue:
    return Issue(
        "error",
        "structure",
        f"{path}: an empty array; FHIR JSON never has empty arrays: leave the element out",
        path,
    )
