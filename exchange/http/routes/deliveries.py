"""Deliveries to home hospitals: queue one by hand, list them (docs/delivery.md).

`POST /fhir/Bundle/{id}/$deliver?recipient=Organization/X` queues the latest version of one of
the hospital's Bundles for a recipient with an endpoint, under the rule every delivery follows
(exchange.outbox.queue): the patient's current consent permits it for treatment, and a
transfer abroad has its legal basis. Without consent the answer is 403 and nothing is queued.
`GET /v1/deliveries` lists the outbox: a hospital sees its own deliveries, an admin all. Neither
carries patient data: ids, statuses and the reasons of failures, which name no patient.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from exchange.http.deps import ServicesDep
from exchange.http.errors import error_responses
from exchange.http.guards import require_role
from exchange.identity.clients import Client
from exchange.outbox.queue import Delivery

router = APIRouter(tags=["deliveries"])

FHIR_ID = r"^[A-Za-z0-9\-.]{1,64}$"
ORG_REFERENCE = r"^Organization/[A-Za-z0-9\-.]{1,64}$"
Status = Literal["pending", "delivered", "failed"]


class DeliveryModel(BaseModel):
    """One delivery of one Bundle version to one recipient (design.md "Delivery")."""

    id: str
    bundle: str = Field(description="the Bundle's id")
    version: int
    recipient: str = Field(description="the recipient's Organization id")
    transport: Literal["fhir", "mllp"]
    status: Status
    attempts: int
    last_error: str | None = Field(description="why the last attempt did not deliver")
    ledger_index: int | None = Field(description="the kind=delivery entry of the outcome")


class DeliveryList(BaseModel):
    deliveries: list[DeliveryModel]


def _model(d: Delivery) -> DeliveryModel:
    return DeliveryModel.model_validate(d.json())


@router.post(
    "/fhir/Bundle/{bundle_id}/$deliver",
    summary="Queue a delivery of the Bundle's latest version to a recipient's endpoint",
    status_code=201,
    response_model=DeliveryModel,
    responses={
        200: {"model": DeliveryModel, "description": "already queued: that delivery"},
        **error_responses(400, 401, 403, 404),
    },
)
async def deliver(
    bundle_id: Annotated[str, Path(pattern=FHIR_ID)],
    recipient: Annotated[
        str, Query(pattern=ORG_REFERENCE, description="Organization/<id> of the recipient")
    ],
    client: Annotated[Client, Depends(require_role("hospital", scope="Bundle.r"))],
    services: ServicesDep,
    response: Response,
) -> DeliveryModel:
    org = recipient.removeprefix("Organization/")
    queue = services.outbox.queue
    found, created = await run_in_threadpool(queue.by_hand, client, bundle_id, org)
    if created:
        services.outbox.wake()
    else:
        response.status_code = 200
    return _model(found)


@router.get(
    "/v1/deliveries",
    summary="The outbox: deliveries of the hospital's Bundles (an admin's: all)",
    response_model=DeliveryList,
    responses=error_responses(400, 401, 403),
)
async def list_deliveries(
    client: Annotated[Client, Depends(require_role("hospital", "admin", scope="Bundle.s"))],
    services: ServicesDep,
    bundle: Annotated[str | None, Query(pattern=FHIR_ID, description="a Bundle id")] = None,
    recipient: Annotated[
        str | None, Query(pattern=ORG_REFERENCE, description="Organization/<id> of the recipient")
    ] = None,
    status: Annotated[Status | None, Query(description="pending, delivered or failed")] = None,
) -> DeliveryList:
    org = None if recipient is None else recipient.removeprefix("Organization/")
    sender = None if client.role == "admin" else client.org
    found = await run_in_threadpool(
        services.outbox.queue.list, sender=sender, bundle=bundle, recipient=org, status=status
    )
    return DeliveryList(deliveries=[_model(d) for d in found])
