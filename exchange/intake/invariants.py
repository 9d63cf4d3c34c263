"""The Bundle invariants of FHIR R4 and the transaction rule: validation's third layer.

bdl-1..bdl-5 and bdl-7..bdl-12 (bdl-6 is gone from R4), and that no resource is touched
twice in a transaction; exchange.intake.validate runs them after the shape walk and the
models, on the parsed Bundle.
"""

from __future__ import annotations

from typing import Any

from .outcome import Issues, show

# Methods whose request carries the resource in the entry (FHIR http.html#transaction).
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


def check_invariants(
    doc: dict[str, Any], bundle_type: str | None, entries: list[Any], issues: Issues
) -> None:
    """FHIR R4 Bundle invariants bdl-1..bdl-5 and bdl-7..bdl-12 (bdl-6 is gone from R4)."""
    if bundle_type is None:
        return
    _bdl_1(doc, bundle_type, issues)
    _bdl_9_10(doc, bundle_type, issues)
    _bdl_11_12(bundle_type, entries, issues)
    _bdl_7(bundle_type, entries, issues)
    if bundle_type == "transaction":
        _transaction_identities(entries, issues)
    for index, entry in enumerate(entries):
        if isinstance(entry, dict):
            _entry_invariants(entry, index, bundle_type, issues)


def _bdl_1(doc: dict[str, Any], bundle_type: str, issues: Issues) -> None:
    """bdl-1: total only when a search or history."""
    if "total" in doc and bundle_type not in ("searchset", "history"):
        issues.add(
            "invalid",
            "Bundle.total is only for searchset and history Bundles (bdl-1): remove it",
            "Bundle.total",
        )


def _bdl_9_10(doc: dict[str, Any], bundle_type: str, issues: Issues) -> None:
    """bdl-9: a document has identifier.system and .value; bdl-10: it has a timestamp."""
    if bundle_type != "document":
        return
    identifier = doc.get("identifier")
    if not isinstance(identifier, dict) or not (
        identifier.get("system") and identifier.get("value")
    ):
        issues.add(
            "required",
            "a document Bundle must have an identifier with a system and a value (bdl-9): "
            "add Bundle.identifier",
            "Bundle.identifier",
        )
    if not doc.get("timestamp"):
        issues.add(
            "required",
            "a document Bundle must have a timestamp (bdl-10): add Bundle.timestamp",
            "Bundle.timestamp",
        )


def _first_resource_type(entries: list[Any]) -> Any:
    first = entries[0] if entries else None
    resource = first.get("resource") if isinstance(first, dict) else None
    return resource.get("resourceType") if isinstance(resource, dict) else None


def _bdl_11_12(bundle_type: str, entries: list[Any], issues: Issues) -> None:
    """bdl-11: a document starts with a Composition; bdl-12: a message with a MessageHeader."""
    wanted = {"document": ("Composition", "bdl-11"), "message": ("MessageHeader", "bdl-12")}
    if bundle_type not in wanted:
        return
    resource_type, invariant = wanted[bundle_type]
    found = _first_resource_type(entries)
    if found != resource_type:
        where = "Bundle.entry[0].resource" if entries else "Bundle.entry"
        got = f"starts with {show(found)}" if entries else "has no entries"
        issues.add(
            "invalid",
            f"a {bundle_type} Bundle must have a {resource_type} as its first resource "
            f"({invariant}); this one {got}",
            where,
        )


def _bdl_7(bundle_type: str, entries: list[Any], issues: Issues) -> None:
    """bdl-7: fullUrl unique, unless the entries differ in meta.versionId (history exempt)."""
    if bundle_type == "history":
        return
    seen: dict[tuple[str, Any], int] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("fullUrl"), str):
            continue
        key = (entry["fullUrl"], _version_id(entry.get("resource")))
        if key in seen:
            issues.add(
                "duplicate",
                f"Bundle.entry[{index}].fullUrl {entry['fullUrl']!r} repeats the fullUrl of "
                f"Bundle.entry[{seen[key]}] (bdl-7: fullUrl must be unique unless "
                "meta.versionId differs): give each entry its own fullUrl",
                f"Bundle.entry[{index}].fullUrl",
            )
        else:
            seen[key] = index


def _transaction_identities(entries: list[Any], issues: Issues) -> None:
    """A transaction must not touch one resource twice (FHIR R4 http.html#trules).

    Only literal targets (``Type/id`` of PUT, PATCH and DELETE) are compared: conditional
    targets resolve on the server that processes the transaction.
    """
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict) or request.get("method") not in ("PUT", "PATCH", "DELETE"):
            continue
        url = request.get("url")
        if not isinstance(url, str) or "?" in url:
            continue
        target = url.strip("/")
        if target in seen:
            issues.add(
                "business-rule",
                f"Bundle.entry[{index}].request.url {url!r} targets the resource that "
                f"Bundle.entry[{seen[target]}] already changes; a transaction must not touch "
                "one resource twice: merge the two entries",
                f"Bundle.entry[{index}].request.url",
            )
        else:
            seen[target] = index


def _version_id(resource: Any) -> Any:
    meta = resource.get("meta") if isinstance(resource, dict) else None
    version = meta.get("versionId") if isinstance(meta, dict) else None
    return version if isinstance(version, str) else None


def _entry_invariants(entry: dict[str, Any], index: int, bundle_type: str, issues: Issues) -> None:
    """bdl-2, bdl-3, bdl-4, bdl-5, bdl-8, and a resource for POST/PUT/PATCH requests."""
    path = f"Bundle.entry[{index}]"
    full_url = entry.get("fullUrl")
    if isinstance(full_url, str) and "/_history/" in full_url:
        issues.add(
            "invalid",
            f"{path}.fullUrl {full_url!r} is version specific (bdl-8): drop the /_history/ part",
            f"{path}.fullUrl",
        )
    if "search" in entry and bundle_type != "searchset":
        issues.add(
            "invalid",
            f"{path}.search is only for searchset Bundles (bdl-2): remove it",
            f"{path}.search",
        )
    wants_request = bundle_type in ("batch", "transaction", "history")
    if wants_request and "request" not in entry:
        issues.add(
            "required",
            f"{path}.request is required in a {bundle_type} Bundle (bdl-3): add request with "
            "method and url",
            f"{path}.request",
        )
    elif not wants_request and "request" in entry:
        issues.add(
            "invalid",
            f"{path}.request is only for batch, transaction and history Bundles (bdl-3): remove it",
            f"{path}.request",
        )
    wants_response = bundle_type in ("batch-response", "transaction-response", "history")
    if wants_response and "response" not in entry:
        issues.add(
            "required",
            f"{path}.response is required in a {bundle_type} Bundle (bdl-4)",
            f"{path}.response",
        )
    elif not wants_response and "response" in entry:
        issues.add(
            "invalid",
            f"{path}.response is only for batch-response, transaction-response and history "
            "Bundles (bdl-4): remove it",
            f"{path}.response",
        )
    _entry_resource_presence(entry, path, bundle_type, issues)


def _entry_resource_presence(
    entry: dict[str, Any], path: str, bundle_type: str, issues: Issues
) -> None:
    if "resource" in entry:
        return
    request = entry.get("request")
    method = request.get("method") if isinstance(request, dict) else None
    if bundle_type in ("batch", "transaction"):
        if method in _METHODS_WITH_BODY:
            issues.add(
                "required",
                f"{path}.resource is required: a {method} request carries the resource",
                f"{path}.resource",
            )
        return
    if "request" in entry or "response" in entry:
        return
    issues.add(
        "required",
        f"{path}.resource is required: an entry must hold a resource unless it has a "
        "request or response (bdl-5)",
        f"{path}.resource",
    )
