"""``POST /v1/webhooks/billing``: signed billing events, recorded once, then provisioned.

The answer is 2xx only once the event (and the subscription change it causes) is committed, and
never 5xx for a body: a genuine event we cannot apply is recorded as rejected and answered 200
with ``ignored``. Only an outage of the database answers 503, so the sender retries. With direct
provisioning on, what the event changed follows in the background (a paid subscription is
provisioned, a cancelled one's resource suspended, one paid again reactivated); otherwise, or
if this process dies first, the sensors launch a run for it. A payment is answered with its
operation either way (with direct provisioning off, when the operation events are in Redis):
then it is pending until the sensor's run starts it, and that run's progress and outcome are
written to it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from provisioning_pipelines import metrics
from provisioning_pipelines.api.context import ApiContext
from provisioning_pipelines.api.spec import Endpoint
from provisioning_pipelines.errors import InvalidRequest
from provisioning_pipelines.flows import FollowUp, started_by
from provisioning_pipelines.services import webhooks
from provisioning_pipelines.storage.errors import is_outage
from provisioning_pipelines.storage.events import new_operation_id


class BillingEvent(BaseModel):
    """A Stripe event, as Stripe sends it; read raw (the signature is over the bytes) and only
    then parsed. An event that is genuine but not of a kind we handle is answered ``ignored``."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(description="the event's id (evt_…): a redelivery is recognised by it")
    type: str = Field(description="checkout.session.completed, customer.subscription.deleted, "
                                  "customer.subscription.updated, invoice.payment_failed, …")
    created: int | None = None
    data: dict[str, Any] = Field(description="data.object: the Checkout Session, subscription "
                                             "or invoice; metadata.subscription_id names ours")


class StripeSignature(BaseModel):
    stripe_signature: str = Field(alias="Stripe-Signature", description=(
        "t=<unix time>,v1=<HMAC-SHA256 of \"{t}.{raw body}\" with BILLING_WEBHOOK_SECRET>"))


class WebhookReceived(BaseModel):
    """The event was recorded (or was a redelivery) and what it changed is committed."""

    received: bool
    duplicate: bool
    operation_id: str | None = Field(description="the operation that follows, if any")
    ignored: str | None = Field(None, description="why a genuine event changed nothing")


def endpoints(api: ApiContext) -> list[Endpoint]:
    def record(delivery: webhooks.Delivery, operation_id: str | None
               ) -> webhooks.Applied | None:
        """Apply and commit; None for a redelivery. A refusal by the database of what the
        event holds is kept as a rejection; an outage propagates (503)."""
        try:
            with api.database.session() as session:
                return webhooks.record_and_apply(session, delivery, operation_id=operation_id)
        except SQLAlchemyError as exc:
            if is_outage(exc):
                metrics.WEBHOOKS.labels("unavailable").inc()
                raise
            refused = exc
        with api.database.session() as session:  # a redelivery lost the race on the id
            if webhooks.is_duplicate(session, delivery.event_id):
                return None
            cause = getattr(refused, "orig", None) or refused
            return webhooks.record_rejected(
                session, delivery, f"the database refused it: {type(cause).__name__}")

    def record_and_open(delivery: webhooks.Delivery, planned: str | None
                        ) -> tuple[webhooks.Applied | None, FollowUp | None, str | None]:
        """The event recorded, and the operation of the flow it starts opened: one hop to a
        worker thread for both."""
        applied = record(delivery, planned)
        then = started_by(applied) if applied is not None else None
        direct = api.settings.direct_graph_provisioning_enabled
        if then is None or not (direct or (applied.paid and planned is not None)):
            return applied, then, None
        return applied, then, api.executor.open_operation(
            then.flow.operation_kind, applied.user_id, planned if applied.paid else None)

    async def billing_webhook(request: Request) -> Response:
        try:
            payload = await api.bodies.read(request, limit=webhooks.MAX_BODY_BYTES)
            delivery = webhooks.verify(payload, request.headers.get("stripe-signature"),
                                       api.settings.billing_webhook_secret)
        except InvalidRequest:
            metrics.WEBHOOKS.labels("refused").inc()
            raise
        direct = api.settings.direct_graph_provisioning_enabled
        # The operation's id is recorded with the payment, so whoever provisions it (this
        # process, another after a crash, or the sensor's Dagster run, which carries it as a
        # run tag) reports to the one the caller watches. Without direct provisioning only
        # that run, another process, writes it: through a store both share (Redis), or never.
        planned = new_operation_id() if direct or api.settings.redis_url else None
        applied, then, operation_id = await run_in_threadpool(record_and_open, delivery,
                                                              planned)
        metrics.WEBHOOKS.labels(applied.status if applied else "duplicate").inc()
        if applied is None:
            return JSONResponse({"received": True, "duplicate": True, "operation_id": None})
        if then is not None and operation_id is not None and direct:
            # otherwise it stays pending until the sensor's run starts it
            await api.start(then.flow, then.config, operation_id=operation_id)
        body: dict[str, Any] = {"received": True, "duplicate": False,
                                "operation_id": operation_id}
        if applied.ignored:
            body["ignored"] = applied.ignored
        return JSONResponse(body)

    return [Endpoint("POST", "/v1/webhooks/billing", billing_webhook,
                     "A signed billing event (Stripe's format), recorded once and applied",
                     {200: WebhookReceived}, errors=(400, 408, 413, 503), body=BillingEvent,
                     headers=StripeSignature, auth="none", tag="billing")]


