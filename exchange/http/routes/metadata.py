"""/fhir/metadata: the CapabilityStatement, listing exactly what this server does and its limits.

What it serves is read from the app's routes (exchange.http.capability); the route modules
say what each resource type, search parameter and operation means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from starlette.routing import BaseRoute

from exchange import __version__
from exchange.bootstrap import Services
from exchange.http.capability import Operation, ServedType, served
from exchange.http.deps import ServicesDep
from exchange.http.errors import FHIR_JSON, FhirJSONResponse
from exchange.http.guards import public
from exchange.http.routes import bulk_export as bulk_export_router
from exchange.http.routes import quality as quality_router
from exchange.http.routes import settlement as settlement_router
from exchange.http.routes.smart import token_url
from exchange.intake import IntakeLimits

router = APIRouter(prefix="/fhir", tags=["metadata"])

SOFTWARE_VERSION = __version__
LIMITS_EXTENSION = "https://medledger.example/fhir/StructureDefinition/intake-limits"

_SUBMIT_DOC = (
    "create (POST /fhir/Bundle): a Bundle of type document, message, transaction, batch or "
    "collection, sent as application/fhir+json (or application/json) in UTF-8 without BOM. It "
    "is validated (strict JSON, FHIR R4 structure), stored byte for byte and committed to the "
    "ledger; the answer carries the ledger receipt (c2sp.org/tlog-proof@v1) and the salt. "
    "Transactions and batches are stored as submitted, not executed. Retries: the same "
    "Idempotency-Key, or the same Bundle.identifier with the same bytes, return the original "
    '(200). A new version of a Bundle with the same identifier needs If-Match: W/"<latest '
    'version>"; otherwise other bytes under a known identifier are refused (409).'
)


def _limits_extension(limits: IntakeLimits) -> dict[str, Any]:
    values = {
        "maxBytes": limits.max_bytes,
        "maxDepth": limits.max_depth,
        "maxEntries": limits.max_entries,
        "maxStringChars": limits.max_string_chars,
    }
    return {
        "url": LIMITS_EXTENSION,
        "extension": [{"url": k, "valueInteger": v} for k, v in values.items()],
    }


# Operations defined elsewhere; the others are this server's own, named under OPERATION_BASE.
_DEFINITIONS = {
    "export": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
    "summary": "http://hl7.org/fhir/uv/ips/OperationDefinition/summary",
}
OPERATION_BASE = "https://medledger.example/fhir/OperationDefinition/"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"


def _documented() -> dict[str, dict[str, Any]]:
    """What the route modules say about each resource type they serve, by type."""
    resources: list[dict[str, Any]] = [
        {
            "type": "Bundle",
            "documentation": _SUBMIT_DOC,
            "interaction": [
                {"code": "create", "documentation": "POST /fhir/Bundle"},
                {
                    "code": "read",
                    "documentation": "the submitted bytes with the server's id, "
                    "meta.versionId and meta.lastUpdated spliced in",
                },
                {"code": "vread", "documentation": "one version, the same way"},
            ],
            "versioning": "versioned",
            "readHistory": False,
            "updateCreate": False,
            "conditionalCreate": False,
            "conditionalRead": "not-supported",
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
        },
        {
            "type": "Binary",
            "documentation": "Binary/{id} is the exact bytes Bundle/{id} was "
            "submitted as, which its ledger receipt commits to, served as they "
            "came (their own media type); the same access rule as the Bundle read",
            "versioning": "versioned",
        },
        *settlement_router.capability_resources(),
        *quality_router.capability_resources(),
    ]
    return {r["type"]: r for r in resources}


def _operation(op: Operation, documented: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": op.name,
        "definition": _DEFINITIONS.get(op.name, OPERATION_BASE + op.name),
        "documentation": documented.get(op.name, {}).get("documentation", op.summary),
    }


def _resource(
    rtype: str, found: ServedType, documented: dict[str, Any], operations: dict[str, Any]
) -> dict[str, Any]:
    """One rest.resource: what is served, with what the route modules document of it."""
    interactions = {i["code"]: i for i in documented.get("interaction", [])}
    params = {p["name"]: p for p in documented.get("searchParam", [])}
    undocumented = sorted(found.search_params - params.keys())
    if undocumented:
        raise LookupError(
            f"{rtype} search parameters {', '.join(undocumented)} are served but not "
            "documented: give each a searchParam entry (type, documentation)"
        )
    resource = {
        **{k: v for k, v in documented.items() if k not in ("interaction", "searchParam")},
        "type": rtype,
        "interaction": [interactions.get(c, {"code": c}) for c in found.ordered_interactions()],
    }
    if found.search_params:
        resource["searchParam"] = [p for name, p in params.items() if name in found.search_params]
    if found.operations:
        resource["operation"] = [
            _operation(found.operations[name], operations) for name in sorted(found.operations)
        ]
    return resource


def capability_statement(
    services: Services, routes: Sequence[BaseRoute], token_url: str
) -> dict[str, Any]:
    """The CapabilityStatement of the app whose routes are `routes`: every interaction,
    search parameter and operation they serve (exchange.http.capability), and nothing else."""
    limits = services.limits
    found = served(routes)
    documented = _documented()
    operations = {op["name"]: op for op in bulk_export_router.capability_operations()}
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": services.started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "publisher": "medledger",
        "kind": "instance",
        "software": {"name": "medledger", "version": SOFTWARE_VERSION},
        "implementation": {
            "description": "medledger exchange: FHIR R4 Bundles committed to a signed "
            f"transparency log ({services.log.origin})"
        },
        "fhirVersion": "4.0.1",
        "format": [FHIR_JSON, "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    f"Limits: a body of at most {limits.max_bytes} bytes, JSON nesting of at "
                    f"most {limits.max_depth} levels, at most {limits.max_entries} entries per "
                    f"Bundle, strings of at most {limits.max_string_chars} characters. The "
                    "ledger's public reads are at /v1/log (checkpoint, key, keys with their "
                    "lifetimes, entries, proofs, receipts) and need no credential."
                ),
                "security": {
                    # SMART App Launch 2.x, "Conformance": the token endpoint for clients
                    # that read it here rather than from .well-known/smart-configuration.
                    "extension": [
                        {
                            "url": OAUTH_URIS,
                            "extension": [{"url": "token", "valueUri": token_url}],
                        }
                    ],
                    "cors": False,
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": SECURITY_SERVICE,
                                    "code": "SMART-on-FHIR",
                                    "display": "SMART-on-FHIR",
                                }
                            ],
                            "text": "SMART Backend Services (client_credentials, private_key_jwt)",
                        }
                    ],
                    "description": "Authorization: Bearer <credential>: either a credential "
                    "issued per client by `medledger clients add`, which may do all its role "
                    "may, or a SMART Backend Services access token (client_credentials grant "
                    "with a private_key_jwt assertion signed ES384, RS384 or EdDSA, at POST "
                    f"{token_url}; discovery at /.well-known/smart-configuration and "
                    "/fhir/.well-known/smart-configuration), limited to its granted system/ "
                    "scopes (Bundle create needs system/Bundle.c, read system/Bundle.r) and "
                    "valid for at most 300 s. Roles: hospital (submits as its organisation, "
                    "reads what its organisation submitted), admin (reads all).",
                },
                "extension": [_limits_extension(limits)],
                "resource": [
                    _resource(rtype, found.types[rtype], documented.get(rtype, {}), operations)
                    for rtype in sorted(found.types)
                ],
                "operation": [
                    _operation(found.operations[name], operations)
                    for name in sorted(found.operations)
                ],
            }
        ],
    }


@router.get(
    "/metadata",
    summary="The CapabilityStatement",
    response_class=FhirJSONResponse,
    responses={
        200: {
            "content": {FHIR_JSON: {"schema": {"type": "object"}}},
            "description": "FHIR R4 CapabilityStatement",
        }
    },
)
@public
def metadata(request: Request, services: ServicesDep) -> FhirJSONResponse:
    statement = capability_statement(services, request.app.routes, token_url(request))
    return FhirJSONResponse(statement)
