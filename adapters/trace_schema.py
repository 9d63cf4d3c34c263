"""Offline checks of EPCIS 2.0 documents: the GS1 JSON Schema and JSON-LD expansion.

The schema (draft-07, EPCIS 2.0 section 12.2) and the JSON-LD context (section 12.1) are
GS1's files, read from a directory the caller names (the public test data keeps them in
``shared/vectors/epcis``); nothing is fetched. The schema's ``$ref``s resolve through a
local registry of every schema file by its ``$id``, so both the self-contained
``EPCIS-JSON-Schema.json`` and the split ``JSON-Schema/`` set validate without a network.
Documents (``EPCISDocument`` and the query result ``EPCISQueryDocument``) validate against
those; a query itself, written in the EPCIS Query Language, against GS1's
``JSON-Schema/EPCIS-Query-JSON-Schema-root.json`` (:func:`query_validator`).

jsonschema checks ``format`` only with optional packages; the two formats the EPCIS schema
uses are checked here instead, strictly: ``date-time`` as RFC 3339 section 5.6 and ``uri``
as an RFC 3986 absolute URI (scheme, no spaces or characters a URI cannot hold, valid
percent-escapes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator, FormatChecker
from pyld import jsonld
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

__all__ = ["CONTEXT_URLS", "epcis_validator", "expand_offline", "query_validator"]

# The URLs under which GS1 publishes the EPCIS 2.0 context; all are served from the file.
CONTEXT_URLS = (
    "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld",
    "https://ref.gs1.org/standards/epcis/epcis-context.jsonld",
    "https://gs1.github.io/EPCIS/epcis-context.jsonld",
)

_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s\"<>\\^`{|}]*")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def epcis_validator(epcis_dir: Path, *, split: bool = False) -> Callable[[Any], list[str]]:
    """A function returning the schema errors of a document ([] when valid).

    ``split`` validates against ``JSON-Schema/EPCIS-JSON-Schema-root.json`` and its parts
    instead of the self-contained ``EPCIS-JSON-Schema.json``.
    """
    root = (
        epcis_dir / "JSON-Schema" / "EPCIS-JSON-Schema-root.json"
        if split
        else epcis_dir / "EPCIS-JSON-Schema.json"
    )
    return _validator(epcis_dir, root)


def query_validator(epcis_dir: Path) -> Callable[[Any], list[str]]:
    """A function returning the schema errors of a query in the EPCIS Query Language."""
    return _validator(epcis_dir, epcis_dir / "JSON-Schema" / "EPCIS-Query-JSON-Schema-root.json")


def _validator(epcis_dir: Path, root_path: Path) -> Callable[[Any], list[str]]:
    files = [
        epcis_dir / "EPCIS-JSON-Schema.json",
        *sorted((epcis_dir / "JSON-Schema").rglob("*.json")),
    ]
    resources = []
    schemas: dict[Path, dict[str, Any]] = {}
    for path in files:
        if not path.is_file():
            continue
        schema = json.loads(path.read_text(encoding="utf-8"))
        schemas[path] = schema
        resources.append(
            (schema["$id"], Resource.from_contents(schema, default_specification=DRAFT7))
        )
    registry: Registry[Any] = Registry().with_resources(resources)
    validator = Draft7Validator(schemas[root_path], registry=registry, format_checker=_formats())

    def errors(doc: Any) -> list[str]:
        found = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in found]

    return errors


def expand_offline(doc: Any, context_file: Path) -> list[Any]:
    """JSON-LD 1.1 expansion of an EPCIS document with the local context; no network.

    Any remote document other than the EPCIS context is refused, so a term that is not in
    the context cannot be resolved behind the caller's back.
    """
    context = json.loads(context_file.read_text(encoding="utf-8"))

    def loader(url: str, options: Any = None) -> dict[str, Any]:
        if url in CONTEXT_URLS:
            return {"contextUrl": None, "documentUrl": url, "document": context}
        raise jsonld.JsonLdError(
            f"offline: will not load {url}",
            "jsonld.LoadDocumentError",
            {"url": url},
            code="loading document failed",
        )

    expanded: list[Any] = jsonld.expand(doc, {"documentLoader": loader})
    return expanded


def _formats() -> FormatChecker:
    checker = FormatChecker(formats=())

    @checker.checks("date-time")
    def date_time(value: object) -> bool:
        if not isinstance(value, str):
            return True
        m = _DATE_TIME.fullmatch(value)
        if not m:
            return False
        year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
        try:
            datetime(year, month, day, hour, minute, min(second, 59))
        except ValueError:
            return False
        return second <= 60

    @checker.checks("uri")
    def uri(value: object) -> bool:
        if not isinstance(value, str):
            return True
        return bool(_URI.fullmatch(value)) and not _BAD_ESCAPE.search(value)

    return checker
