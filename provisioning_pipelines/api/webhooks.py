"""``POST /v1/webhooks/billing``: signed billing events, recorded once, then provisioned.

The answer is 2xx only once the event and the subscription change are committed. A paid
subscription is provisioned in the background when direct provisioning is on; otherwise the
sensors launch a run for it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provisioning_pipelines.api.context import ApiContext, guard
from provisioning_pipelines.flows import SUBSCRIPTION_FLOWS, SubscriptionConfig
from provisioning_pipelines.services import webhooks


def routes(api: ApiContext) -> list[Route]:
    async def billing_webhook(request: Request) -> Response:
        payload = await request.body()
        event = webhooks.verify(payload, request.headers.get("stripe-signature"),
                                api.settings.billing_webhook_secret)

        def apply() -> webhooks.Applied:
            with api.database.session() as session:
                return webhooks.record_and_apply(session, event)

        def duplicate() -> bool:
            with api.database.session() as session:
                return webhooks.is_duplicate(session, event["id"])

        try:
            applied = await run_in_threadpool(apply)
        except IntegrityError:
            if not await run_in_threadpool(duplicate):
                raise
            return JSONResponse({"received": True, "duplicate": True, "operation_id": None})
        operation_id = None
        if applied.paid and api.settings.direct_graph_provisioning_enabled:
            flow = SUBSCRIPTION_FLOWS[str(applied.resource_type)]
            operation_id = await run_in_threadpool(api.executor.open_operation,
                                                   flow.operation_kind, applied.user_id)
            api.start(api.executor.run, flow,
                      SubscriptionConfig(subscription_id=applied.subscription_id),
                      operation_id=operation_id)
        body: dict[str, Any] = {"received": True, "duplicate": False,
                                "operation_id": operation_id}
        if applied.ignored:
            body["ignored"] = applied.ignored
        return JSONResponse(body)

    return [Route("/v1/webhooks/billing", guard(billing_webhook), methods=["POST"])]
