"""Validation's second layer: the R4B models (``Model.model_validate``), their errors as issues.

Each pydantic error becomes an issue at a FHIRPath expression below the entry's path;
errors the shape walk (exchange.intake.validate) already reports are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from .outcome import Issue

# Errors of a required element: pydantic's own, and the models' for a required primitive
# (which its ``_name`` extensions may stand in for).
_MISSING = frozenset({"missing", "model_field_validation.missing"})
# A JSON value pydantic cannot read as the element's type at all; besides these, every
# ``*_type`` error (``string_type``, ``list_type``, ...).
_WRONG_TYPE = frozenset({"bool_parsing", "int_parsing", "int_from_float", "float_parsing"})


def model_issues(model_name: str, data: dict[str, Any], path: str) -> list[Issue]:
    """Validate ``data`` with the R4B model; translate its errors to FHIRPath issues."""
    try:
        get_fhir_model_class(model_name).model_validate(data)
    except ValidationError as exc:
        return [_translate(error, path) for error in exc.errors() if not _walk_covers(error)]
    except Exception as exc:  # noqa: BLE001 - the models raise LookupError, TypeError, ...
        return [
            Issue(
                "error",
                "invalid",
                f"{path}: the {model_name} could not be validated ({type(exc).__name__}: "
                f"{str(exc)[:200]})",
                path,
            )
        ]
    return []


def _walk_covers(error: Mapping[str, Any]) -> bool:
    """Model errors the shape walk reports itself: missing elements and value[x] counts."""
    return error.get("type") in _MISSING or "Any of one field value" in str(error.get("msg", ""))


def loc_to_fhirpath(path: str, loc: tuple[Any, ...]) -> str:
    """A pydantic error location as FHIRPath below ``path``.

    ``("identifier", 0, "system")`` -> ``path.identifier[0].system``; the ``root`` step of
    the models' resource-slot errors vanishes, and ``_name``/``name__ext`` (a primitive's
    extensions) read ``name``.
    """
    out = path
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = str(part)
        if name == "root":
            continue
        if name.startswith("_"):
            name = name[1:]
        if name.endswith("__ext"):
            name = name[: -len("__ext")]
        out += f".{name}"
    return out


def _translate(error: Mapping[str, Any], path: str) -> Issue:
    expression = loc_to_fhirpath(path, tuple(error.get("loc", ())))
    kind = str(error.get("type", ""))
    message = str(error.get("msg", "invalid"))
    if kind in _MISSING:
        return Issue(
            "error", "required", f"{expression} is required but missing: add it", expression
        )
    if kind == "extra_forbidden":
        return Issue("error", "structure", f"{expression} is not an element of FHIR R4", expression)
    if kind.endswith("_type") or kind in _WRONG_TYPE:
        code = "structure"
    elif kind.startswith("model_validation") or kind.startswith("fhir-validation"):
        code = "invalid"
    else:
        code = "value"  # the lexical checks: patterns, dates, ranges, lengths, value_error
    return Issue("error", code, f"{expression}: {message}", expression)
