"""Telling the billing system, on Dagster's clock: the billing outbox sensor.

Each tick sends what is due in the billing outbox (cancellations and reactivations decided
here, ``services/billing/outbound.py``) in the sensor's own process, like the reaper's removals:
sending a change takes one HTTP request, not a run. It runs whether direct provisioning is on
or off, so with no API process up the billing system still hears of every change; with one up,
the two race on each row's claim and every change is sent with its own idempotency key.
"""

from __future__ import annotations

from dagster import (
    DefaultSensorStatus,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from provisioning_pipelines.runtime.resources import BillingResource, DatabaseResource
from provisioning_pipelines.services.billing import outbound


def billing_outbox_sensor(*, interval_seconds: int) -> SensorDefinition:
    @sensor(
        name="billing_outbox_sensor",
        minimum_interval_seconds=interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description="Sends the cancellations and reactivations decided here to the billing "
        "system (Stripe), retrying with backoff; off without STRIPE_API_KEY.",
    )
    def _sensor(context: SensorEvaluationContext, database: DatabaseResource,
                billing: BillingResource) -> SensorResult:
        sender = billing.sender()
        if sender is None:
            return SensorResult(skip_reason=SkipReason(
                "STRIPE_API_KEY is not set: nothing is sent to the billing system"))
        done = outbound.deliver_due(database.get(), sender)
        if done.sent or done.retrying or done.failed:
            context.log.info(f"billing outbox: {done}")
        return SensorResult(skip_reason=SkipReason(f"billing outbox: {done}"))

    return _sensor
