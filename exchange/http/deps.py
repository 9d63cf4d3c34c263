"""What a route is given: the app's Services, or the one piece of them it needs.

The Services are built once by exchange.bootstrap and handed to create_app, which makes an
:class:`ExchangeApp` holding them and the public base URL; these dependencies are the only
readers of that. Each is async: a plain def would cost a thread hop on every request.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request

from exchange import vault
from exchange.bootstrap import Services
from exchange.consent.crossborder import TransferLedger
from exchange.http.metrics import Metrics
from exchange.http.public import SCOPE_KEY, PublicBase
from exchange.indexes.derived import Indexes
from ledger.log import Log


class ExchangeApp(FastAPI):
    """The FastAPI app of one log instance: what its routes stand on, typed."""

    def __init__(self, services: Services, public: PublicBase, **options: Any) -> None:
        super().__init__(**options)
        self.services = services
        self.public = public
        self.metrics = Metrics(services)


def app_of(request: Request) -> ExchangeApp:
    app = request.app
    if not isinstance(app, ExchangeApp):
        raise TypeError("exchange routes are served by exchange.app.create_app's app")
    return app


def services_of(request: Request) -> Services:
    """The Services of the app serving `request`."""
    return app_of(request).services


def public_url(request: Request) -> str:
    """The base of the absolute URLs in the answer to `request` (exchange.http.public)."""
    named = request.scope.get(SCOPE_KEY)
    if named is not None:
        return str(named)
    return app_of(request).public.url


async def get_services(request: Request) -> Services:
    return services_of(request)


async def get_log(request: Request) -> Log:
    return services_of(request).log


async def get_vault(request: Request) -> vault.Vault:
    return services_of(request).vault


async def get_indexes(request: Request) -> Indexes:
    return services_of(request).indexes


async def get_gate(request: Request) -> TransferLedger:
    return services_of(request).gate


ServicesDep = Annotated[Services, Depends(get_services)]
LogDep = Annotated[Log, Depends(get_log)]
VaultDep = Annotated[vault.Vault, Depends(get_vault)]
IndexesDep = Annotated[Indexes, Depends(get_indexes)]
GateDep = Annotated[TransferLedger, Depends(get_gate)]
