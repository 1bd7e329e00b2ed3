"""Sensors that launch provisioning runs for paid subscriptions nobody is working on.

With direct provisioning on, the webhook provisions in-process and the sensors are the safety net:
they launch only for subscriptions nobody claimed within the grace period, whose claim lease
lapsed (a crashed worker), or whose backoff after a failed attempt is over. With it off, they
launch for every claimable one. Which subscriptions those are is decided in
``services/provisioning/due.py`` (the resumer asks the same), with the claim's own predicate, so
a sensor never launches a run the claim would refuse.

Dagster skips a RunRequest whose run key matches any earlier run of the sensor, failed runs
included, so the key holds the attempt the run will be (``<subscription>:attempt:<n>``): a failed
attempt's subscription gets a new key, a retried tick does not launch the same attempt twice.
Every launch still goes through the claim, so a sensor racing the direct path makes one graph.
"""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from provisioning_pipelines.flows import SUBSCRIPTION_FLOWS, Flow, SubscriptionConfig
from provisioning_pipelines.flows.steps import ATTEMPT_TAG, OPERATION_TAG, USER_TAG
from provisioning_pipelines.orchestration.jobs import JOBS
from provisioning_pipelines.runtime.resources import DatabaseResource, PolicyResource
from provisioning_pipelines.services.provisioning.claims import DueSubscription
from provisioning_pipelines.services.provisioning.due import due_now


def run_request(flow: Flow, due: DueSubscription) -> RunRequest:
    config = SubscriptionConfig(subscription_id=due.subscription_id)
    tags = {USER_TAG: due.user_id, ATTEMPT_TAG: str(due.attempt)}
    if due.operation_id:  # the run continues the operation a crashed worker left open
        tags[OPERATION_TAG] = due.operation_id
    return RunRequest(
        run_key=f"{due.subscription_id}:attempt:{due.attempt}",
        run_config=flow.run_config(config),
        tags=flow.run_tags(config, **tags),
    )


def subscription_sensor(
    resource_type: str, *, grace_seconds: float, direct_enabled: bool, interval_seconds: int,
) -> SensorDefinition:
    flow = SUBSCRIPTION_FLOWS[resource_type]

    @sensor(
        name=f"pending_{resource_type}_subscription_sensor",
        job=JOBS[flow.name],
        minimum_interval_seconds=interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Launches {flow.job_name} for paid {resource_type} subscriptions that "
        + ("nobody claimed within the grace period or whose claim lapsed."
           if direct_enabled else "nobody has claimed."),
    )
    def _sensor(context: SensorEvaluationContext, database: DatabaseResource,
                policy: PolicyResource) -> SensorResult:
        now = datetime.now(UTC)
        max_attempts = policy.get().max_attempts
        with database.get().session() as session:
            found = due_now(session, [resource_type], now=now, grace_seconds=grace_seconds,
                            direct_enabled=direct_enabled, max_attempts=max_attempts,
                            actor="sensor")
        failed, due = found.failed, found.subscriptions
        for subscription_id in failed:
            context.log.warning(f"subscription {subscription_id}: no attempts left; failed")
        if not due:
            return SensorResult(skip_reason=SkipReason(
                f"no {resource_type} subscription is waiting"))
        return SensorResult(run_requests=[run_request(flow, item) for item in due])

    return _sensor


def build_sensors(*, grace_seconds: float, direct_enabled: bool,
                  interval_seconds: int) -> list[SensorDefinition]:
    return [subscription_sensor(resource_type, grace_seconds=grace_seconds,
                                direct_enabled=direct_enabled, interval_seconds=interval_seconds)
            for resource_type in SUBSCRIPTION_FLOWS]
