"""Validation's second layer: the R4B models (``Model.parse_obj``), their errors as issues.

Each pydantic error becomes an issue at a FHIRPath expression below the entry's path;
errors the shape walk (exchange.intake.validate) already reports are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic.v1 import ValidationError

from .outcome import Issue


def model_issues(model_name: str, data: dict[str, Any], path: str) -> list[Issue]:
    """Validate ``data`` with the R4B model; translate its errors to FHIRPath issues."""
    try:
        get_fhir_model_class(model_name).parse_obj(data)
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
    return error.get("type") == "value_error.missing" or "Any of one field value" in str(
        error.get("msg", "")
    )


def loc_to_fhirpath(path: str, loc: tuple[Any, ...]) -> str:
    """A pydantic error location as FHIRPath below ``path``.

    ``("identifier", 0, "system")`` -> ``path.identifier[0].system``; pydantic's ``__root__``
    steps vanish and ``_name``/``name__ext`` (a primitive's extensions) read ``name``.
    """
    out = path
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = str(part)
        if name == "__root__":
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
    if kind == "value_error.missing":
        return Issue(
            "error", "required", f"{expression} is required but missing: add it", expression
        )
    if kind == "value_error.extra":
        return Issue("error", "structure", f"{expression} is not an element of FHIR R4", expression)
    if kind.startswith("type_error"):
        code = "structure"
    elif kind.startswith("value_error"):
        code = "value"
    else:
        code = "invalid"
    return Issue("error", code, f"{expression}: {message}", expression)
