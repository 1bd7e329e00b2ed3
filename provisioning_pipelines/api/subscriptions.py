"""``/v1/subscriptions``: ask for a graph or a repository, see where a subscription is, and
cancel it (``202 {"operation_id"}``: its resource is suspended in the background)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from provisioning_pipelines.api import pages
from provisioning_pipelines.api.context import ApiContext
from provisioning_pipelines.api.idempotency import idempotent
from provisioning_pipelines.api.models import IdempotencyKey, OperationStarted, Page
from provisioning_pipelines.api.spec import Endpoint
from provisioning_pipelines.flows import SUSPENSION_FLOW, Flow, LifecycleConfig
from provisioning_pipelines.services import catalog
from provisioning_pipelines.services import requests as subscriptions
from provisioning_pipelines.services.access.accounts import Identity
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.services.graphs import lifecycle
from provisioning_pipelines.services.provisioning import queue

#: What ``GET /v1/subscriptions/{id}`` shows of a subscription.
PUBLIC_FIELDS = ("subscription_id", "status", "resource_type", "resource_id", "plan_name",
                 "error", "queue_position")


Status = Literal["pending_payment", "provisioning", "queued", "active", "failed", "canceled"]


class Property(BaseModel):
    name: str = Field(description="an identifier: a letter, then letters, digits or _")
    type: str = Field(description="STRING, INT64, INT32, INT16, DOUBLE, FLOAT, BOOLEAN, DATE, "
                                  "TIMESTAMP, INTERVAL, UUID, BLOB, STRING[], INT64[], DOUBLE[]")


class NodeTable(BaseModel):
    name: str
    properties: list[Property] = Field(default_factory=list, max_length=100)
    primary_key: str


class RelationshipTable(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    from_: str = Field(alias="from")
    to: str
    properties: list[Property] = Field(default_factory=list, max_length=100)
    multiplicity: str | None = Field(None, description="MANY_MANY (default), MANY_ONE, "
                                                       "ONE_MANY or ONE_ONE")


class CustomSchema(BaseModel):
    """Replaces the base schema: at most 100 tables in all."""

    nodes: list[NodeTable] = Field(default_factory=list, max_length=100)
    relationships: list[RelationshipTable] = Field(default_factory=list, max_length=100)


class GraphWanted(BaseModel):
    """The graph to make once paid (its rules, and their messages, are the service's)."""

    name: str = Field(max_length=200, description="not empty")
    description: str | None = Field(None, max_length=2000)
    tags: list[str] | None = Field(None, max_length=50, description="up to 64 characters each")
    schema_extensions: list[str] | None = Field(
        None, description="added to the base schema: accounting, crm, supply_chain, procurement")
    entity: dict[str, Any] | None = Field(
        None, json_schema_extra={"additionalProperties": {
            "type": ["string", "number", "boolean", "null"]}},
        description="the entity the graph is about: name (required) and more of the Entity "
                    "node's properties (category, website, description, country, ...; one it "
                    "does not have is a 422), strings up to 1,000 characters, numbers, booleans")
    custom_schema: CustomSchema | None = Field(
        None, description="instead of the base schema (then no schema_extensions nor entity)")


PLANS = [*catalog.CUSTOMER_TIERS, *(f"{repository}-{plan}"
                                   for repository, state in catalog.REPOSITORIES.items()
                                   if state == "available"
                                   for plan in catalog.REPOSITORY_PLANS)]


class SubscriptionRequest(BaseModel):
    """A graph (``resource_type`` graph, a tier as ``plan_name``, ``graph``) or access to a
    repository (``resource_type`` repository, ``plan_name`` ``<repository>-<plan>``)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt field is named, not ignored

    resource_type: Literal["graph", "repository"]
    # The plans are the document's; the service checks them, naming what it knows.
    plan_name: str = Field(max_length=64, json_schema_extra={"enum": PLANS},
                           description="a graph's tier, or <repository>-<plan> for access")
    graph: GraphWanted | None = Field(None, description="for a graph: what to make")
    repository: str | None = Field(None, description="for access: must match the plan")


class SubscriptionCreated(BaseModel):
    subscription_id: str
    status: Status


class SubscriptionView(BaseModel):
    """One subscription; ``queue_position`` while it waits for a free slot (1 is next)."""

    subscription_id: str
    status: Status
    resource_type: str
    resource_id: str | None = Field(description="the graph's id, or the repository's name")
    plan_name: str
    error: str | None
    queue_position: int | None


class SubscriptionSummary(BaseModel):
    subscription_id: str
    status: Status
    resource_type: str
    resource_id: str | None
    plan_name: str
    user_id: str
    attempts: int
    error: str | None
    operation_id: str | None = Field(description="the operation that reports its provisioning")
    created_at: str = Field(json_schema_extra={"format": "date-time"})


class SubscriptionList(BaseModel):
    subscriptions: list[SubscriptionSummary]
    next_cursor: str | None = Field(description="the next page's cursor; null on the last")


def endpoints(api: ApiContext) -> list[Endpoint]:
    async def create_subscription(request: Request) -> Response:
        user = await run_in_threadpool(api.user_of, request)
        # The shape is the model's (the document's); the rules and their messages stay the
        # service's, which reads the body as sent.
        body = await api.bodies.read_checked(request, SubscriptionRequest)

        def create() -> dict[str, str]:
            with api.database.session() as session:
                subscription = subscriptions.request_subscription(session, user.user_id, body)
                return {"subscription_id": subscription.id, "status": subscription.status}

        return JSONResponse(await run_in_threadpool(create), status_code=201)

    def show_subscription(request: Request) -> Response:
        user = api.user_of(request)
        with api.database.session() as session:
            subscription = billing.subscription_of_user(
                session, request.path_params["subscription_id"], user.user_id)
            found = queue.summary(session, subscription)
        return JSONResponse({key: found[key] for key in PUBLIC_FIELDS})

    def list_subscriptions(request: Request) -> Response:
        user = api.user_of(request)
        page = pages.page_request(request, "subscriptions")
        with api.database.session() as session:
            found = billing.subscriptions_page(session, user.user_id, after=page.after,
                                               limit=page.limit)
        return JSONResponse(pages.page_answer("subscriptions", found.items, "subscriptions",
                                              found.next_key))

    async def cancel_subscription(request: Request) -> Response:
        subscription_id = request.path_params["subscription_id"]

        def check(session: Session, user: Identity) -> tuple[Flow, Any, dict[str, Any]]:
            subscription = billing.subscription_of_user(session, subscription_id, user.user_id)
            lifecycle.check_cancellable(subscription)
            return SUSPENSION_FLOW, LifecycleConfig(
                subscription_id=subscription_id, actor=user.user_id,
                reason="cancelled by the user"), {}

        return await api.launch(request, check)


    return [
        Endpoint("GET", "/v1/subscriptions", list_subscriptions, "My subscriptions, newest first",
                 {200: SubscriptionList}, query=Page, tag="subscriptions"),
        Endpoint("POST", "/v1/subscriptions", idempotent(api, create_subscription),
                 "Ask for a graph or for repository access; nothing is made until it is paid",
                 {201: SubscriptionCreated}, errors=(409,), body=SubscriptionRequest,
                 headers=IdempotencyKey, tag="subscriptions"),
        Endpoint("GET", "/v1/subscriptions/{subscription_id}", show_subscription,
                 "Where a subscription is", {200: SubscriptionView}, tag="subscriptions"),
        Endpoint("DELETE", "/v1/subscriptions/{subscription_id}", cancel_subscription,
                 "Cancel now: its graph is suspended, its access revoked",
                 {202: OperationStarted}, errors=(409, 429), tag="subscriptions"),
    ]
