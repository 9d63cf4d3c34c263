"""Who may call a route: each declares the roles it admits and the SMART scope an access
token needs (:func:`require_role`), or is declared :func:`public`.

A route without either fails the access matrix test (tests/http/test_access_matrix.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts
from fastapi.security import HTTPBearer
from starlette.routing import BaseRoute

from exchange.errors import Forbidden, Unauthenticated
from exchange.http.deps import services_of
from exchange.identity import smart
from exchange.identity.cache import authenticate
from exchange.identity.clients import ROLES, Client, require_scope


def _unauthorized(diagnostics: str, error: str | None = None) -> Unauthenticated:
    return Unauthenticated(diagnostics, error)


@dataclass(frozen=True)
class Scope:
    """A SMART v2 system scope of one resource type and one permission: `system/Bundle.r`."""

    resource_type: str
    permission: str  # one letter of smart.PERMISSIONS

    @classmethod
    def parse(cls, text: str) -> Scope:
        """`Bundle.r` -> Scope("Bundle", "r")."""
        rtype, _, letter = text.partition(".")
        if not rtype or len(letter) != 1 or letter not in smart.PERMISSIONS:
            raise ValueError(f"{text!r} is not <Type>.<one of {smart.PERMISSIONS}>")
        return cls(rtype, letter)

    def __str__(self) -> str:
        return smart.needed_scope(self.resource_type, self.permission)


@dataclass(frozen=True)
class EndpointScopes:
    """Scopes an endpoint checks itself with require_scope, and `when` each applies: used
    where the scope depends on the request (the types exported, an If-Match), or where a
    refusal must first be recorded as an access entry."""

    scopes: tuple[Scope, ...]
    when: str


def endpoint_scopes(when: str, *scopes: str) -> EndpointScopes:
    return EndpointScopes(tuple(Scope.parse(s) for s in scopes), when)


class RoleGuard(HTTPBearer):
    """A dependency admitting clients of the given roles whose access token holds `scope`:
    401 without a valid bearer credential, 403 for other roles or a missing scope.

    Every guarded route declares both, so no route reads data on a role alone; a route
    without a guard is declared @public. One dependency, not a chain of them: it runs on
    every request, and each level of FastAPI dependency costs more than the lookup itself.
    Being an HTTPBearer, it still declares the bearer scheme in the OpenAPI document.
    """

    def __init__(self, *roles: str, scope: str | EndpointScopes) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="bearer",
            description="a credential from `medledger clients add`",
        )
        unknown = set(roles) - set(ROLES)
        if not roles or unknown:
            raise ValueError(f"a guard needs roles of {ROLES}, not {sorted(unknown)}")
        self.roles = roles
        self.scope = scope if isinstance(scope, EndpointScopes) else Scope.parse(scope)

    async def __call__(self, request: Request) -> Client:  # type: ignore[override]
        token = bearer_token(request.headers.get("authorization"))
        if token is None:
            raise _unauthorized(
                "send Authorization: Bearer <credential from medledger clients add>"
            )
        client = await authenticate(services_of(request).clients, token)
        if client is None:
            raise _unauthorized("the bearer credential is not valid", "invalid_token")
        if client.role not in self.roles:
            raise Forbidden(
                f"a {client.role} client may not do this; it needs the role "
                + " or ".join(self.roles),
            )
        if isinstance(self.scope, Scope):
            require_scope(client, self.scope.resource_type, self.scope.permission)
        return client


def require_role(*roles: str, scope: str | EndpointScopes) -> RoleGuard:
    """The guard of a route: its roles, and the scope an access token needs (`Bundle.r`)."""
    return RoleGuard(*roles, scope=scope)


E = TypeVar("E", bound=Callable[..., Any])


def public(endpoint: E) -> E:
    """Declares a route that needs no credential (it serves nothing about any patient: log
    reads, discovery, the token endpoint). Every route is either guarded or declared so."""
    endpoint.access_rule = "public"  # type: ignore[attr-defined]
    return endpoint


def bearer_token(authorization: str | None) -> str | None:
    """The credential of an `Authorization: Bearer <credential>` value, else None.

    The scheme is case-insensitive and the credential may have blanks around it (RFC 9110
    §11.1); the rate limiter reads headers with this too, so both agree whose credential a
    header carries however it is spelt.
    """
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


# A wildcard asks for every type the client's role may read and search (exchange.identity.smart
# cuts it down to them).
WILDCARD_SCOPE = "system/*.rs"
OAUTH2_SCHEME = "oauth2"


def checked_scopes(routes: Sequence[BaseRoute]) -> dict[str, str]:
    """Resource type -> the SMART v2 permissions some guard of `routes` checks on it, in
    their order (`{"Bundle": "crus", ...}`)."""
    permissions: dict[str, set[str]] = {}
    for ctx in iter_route_contexts(routes):
        for guard in _route_guards(ctx):
            for scope in _checked(guard):
                permissions.setdefault(scope.resource_type, set()).add(scope.permission)
    return {
        rtype: "".join(p for p in smart.PERMISSIONS if p in letters)
        for rtype, letters in sorted(permissions.items())
    }


def offered_scopes(routes: Sequence[BaseRoute]) -> list[str]:
    """The SMART scopes discovery offers (scopes_supported): the wildcard, and one per
    resource type with every permission some route checks (`system/Bundle.crus`). Only
    these: each one buys something. Any subset of one's permissions may be asked for."""
    checked = checked_scopes(routes)
    return [WILDCARD_SCOPE] + [f"system/{t}.{p}" for t, p in checked.items()]


def document_oauth2(app: FastAPI) -> None:
    """Makes the app's OpenAPI document declare SMART Backend Services beside the bearer
    scheme: an `oauth2` scheme with the clientCredentials flow at the token endpoint, and on
    each guarded operation, as the alternative to bearer, the scope its guard checks (none
    named where the endpoint checks the scope against the request: its description says
    which). The token URL is relative, so it resolves against wherever the document is
    served (a public URL with a path included)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        doc = generate()
        schemes = doc.setdefault("components", {}).setdefault("securitySchemes", {})
        if OAUTH2_SCHEME in schemes:
            return doc
        schemes[OAUTH2_SCHEME] = {
            "type": "oauth2",
            "description": "SMART Backend Services: a client_credentials grant with a "
            "private_key_jwt client assertion (docs/smart.md)",
            "flows": {
                "clientCredentials": {
                    "tokenUrl": smart.TOKEN_PATH.lstrip("/"),
                    "scopes": _flow_scopes(app.routes),
                }
            },
        }
        for ctx in iter_route_contexts(app.routes):
            operations = doc.get("paths", {}).get(ctx.path_format or "", {})
            for guard in _route_guards(ctx):
                for method in ctx.methods or ():
                    operation = operations.get(method.lower())
                    if operation is not None:
                        scopes = (
                            [] if isinstance(guard.scope, EndpointScopes) else [str(guard.scope)]
                        )
                        operation.setdefault("security", []).append({OAUTH2_SCHEME: scopes})
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _flow_scopes(routes: Sequence[BaseRoute]) -> dict[str, str]:
    """Each scope a guard checks, one permission each (the operations name these; a token
    request may combine them, `system/Bundle.cr`), and the wildcard."""
    names = {letter: name for name, letter in smart.INTERACTIONS.items()}
    scopes = {WILDCARD_SCOPE: "read and search every type the client's role may"}
    for rtype, letters in checked_scopes(routes).items():
        scopes |= {f"system/{rtype}.{p}": f"{names[p]} {rtype}" for p in letters}
    return scopes


def _checked(guard: RoleGuard) -> tuple[Scope, ...]:
    return guard.scope.scopes if isinstance(guard.scope, EndpointScopes) else (guard.scope,)


def _route_guards(ctx: Any) -> Iterator[RoleGuard]:
    dependant = getattr(ctx, "dependant", None)
    return _guards(dependant) if dependant is not None else iter(())


def _guards(dependant: Dependant) -> Iterator[RoleGuard]:
    for sub in dependant.dependencies:
        if isinstance(sub.call, RoleGuard):
            yield sub.call
        yield from _guards(sub)
