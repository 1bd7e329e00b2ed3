"""``/v1/subscriptions``: ask for a graph or a repository, see where a subscription is, and
cancel it (``202 {"operation_id"}``: its resource is suspended in the background)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provisioning_pipelines.api import pages
from provisioning_pipelines.api.context import ApiContext, guard
from provisioning_pipelines.api.idempotency import idempotent
from provisioning_pipelines.flows import SUSPENSION_FLOW, Flow, LifecycleConfig
from provisioning_pipelines.services import requests as subscriptions
from provisioning_pipelines.services.access.accounts import Identity
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.services.graphs import lifecycle
from provisioning_pipelines.services.provisioning import queue

#: What ``GET /v1/subscriptions/{id}`` shows of a subscription.
PUBLIC_FIELDS = ("subscription_id", "status", "resource_type", "resource_id", "plan_name",
                 "error", "queue_position")


def routes(api: ApiContext) -> list[Route]:
    async def create_subscription(request: Request) -> Response:
        user = await run_in_threadpool(api.user_of, request)
        body = await api.bodies.read_json(request)

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
        Route("/v1/subscriptions", guard(list_subscriptions), methods=["GET"]),
        Route("/v1/subscriptions", guard(idempotent(api, create_subscription)), methods=["POST"]),
        Route("/v1/subscriptions/{subscription_id}", guard(show_subscription)),
        Route("/v1/subscriptions/{subscription_id}", guard(cancel_subscription),
              methods=["DELETE"]),
    ]
