"""Sensors that launch provisioning runs for paid subscriptions nobody is working on.

With direct provisioning on, the webhook provisions in-process and the sensors are the safety net:
they launch only for subscriptions nobody claimed within the grace period, whose claim lease
lapsed (a crashed worker), or whose backoff after a failed attempt is over. With it off, they
launch for every unclaimed one.

Dagster skips a RunRequest whose run key matches any earlier run of the sensor, failed runs
included, so the key holds the attempt the run will be (``<subscription>:attempt:<n>``): a failed
attempt's subscription gets a new key, a retried tick does not launch the same attempt twice.
Every launch still goes through the claim, so a sensor racing the direct path makes one graph.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from dagster import RunConfig, RunRequest, SensorEvaluationContext, SkipReason, sensor
from dagster import SensorDefinition as _SensorDefinition
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from provisioning_pipelines.flows import GRAPH_FLOW, REPOSITORY_FLOW, Flow, SubscriptionConfig
from provisioning_pipelines.jobs import JOBS
from provisioning_pipelines.resources import DatabaseResource, PolicyResource
from provisioning_pipelines.services import audit, graphs
from provisioning_pipelines.storage.models import Subscription, utcnow

BATCH = 50


def due_subscriptions(
    session: Session, resource_type: str, *, now: datetime, grace_seconds: float,
    direct_enabled: bool, max_attempts: int,
) -> list[Subscription]:
    """Subscriptions in ``provisioning`` that a run should be launched for now."""
    unclaimed = and_(Subscription.claim_token.is_(None),
                     or_(Subscription.retry_after.is_(None), Subscription.retry_after <= now))
    if direct_enabled:
        quiet_since = now - timedelta(seconds=grace_seconds)
        unclaimed = and_(unclaimed, Subscription.updated_at <= quiet_since)
    lapsed = and_(Subscription.claim_token.is_not(None), Subscription.lease_expires_at < now)
    query = (
        select(Subscription)
        .where(Subscription.status == "provisioning",
               Subscription.resource_type == resource_type,
               Subscription.attempts < max_attempts,
               or_(unclaimed, lapsed))
        .order_by(Subscription.updated_at)
        .limit(BATCH)
    )
    return list(session.scalars(query).all())


def fail_exhausted(session: Session, resource_type: str, *, now: datetime,
                   max_attempts: int) -> list[str]:
    """A subscription whose last attempt's claim lapsed gets no run: it is marked failed."""
    rows = session.scalars(
        select(Subscription.id).where(
            Subscription.status == "provisioning", Subscription.resource_type == resource_type,
            Subscription.attempts >= max_attempts,
            or_(Subscription.claim_token.is_(None), Subscription.lease_expires_at < now))
    ).all()
    for subscription_id in rows:
        session.execute(
            update(Subscription).where(Subscription.id == subscription_id)
            .values(status="failed", claim_token=None, lease_expires_at=None, updated_at=now)
        )
        audit.record(session, actor="sensor", action="subscription.failed",
                     subject_type="subscription", subject_id=subscription_id,
                     details={"reason": f"no attempts left of {max_attempts}"})
    return list(rows)


def run_request(flow: Flow, subscription: Subscription) -> RunRequest:
    attempt = subscription.attempts + 1
    tags = {"provisioning/subscription_id": subscription.id,
            "provisioning/user_id": subscription.user_id,
            "provisioning/attempt": str(attempt)}
    if flow is GRAPH_FLOW:
        tags["provisioning/graph_id"] = graphs.graph_id_for_subscription(subscription.id)
    return RunRequest(
        run_key=f"{subscription.id}:attempt:{attempt}",
        run_config=RunConfig(ops={flow.steps[0].name: SubscriptionConfig(
            subscription_id=subscription.id)}),
        tags=tags,
    )


def subscription_sensor(
    flow: Flow, resource_type: str, *, grace_seconds: float, direct_enabled: bool,
    interval_seconds: int,
) -> _SensorDefinition:
    @sensor(
        name=f"pending_{resource_type}_subscription_sensor",
        job=JOBS[flow.name],
        minimum_interval_seconds=interval_seconds,
        description=f"Launches {flow.job_name} for paid {resource_type} subscriptions that "
        + ("nobody claimed within the grace period or whose claim lapsed."
           if direct_enabled else "nobody has claimed."),
    )
    def _sensor(context: SensorEvaluationContext, database: DatabaseResource,
                policy: PolicyResource) -> Iterator[RunRequest | SkipReason]:
        now = utcnow()
        max_attempts = policy.get().max_attempts
        with database.get().session() as session:
            failed = fail_exhausted(session, resource_type, now=now, max_attempts=max_attempts)
            due = due_subscriptions(session, resource_type, now=now,
                                    grace_seconds=grace_seconds,
                                    direct_enabled=direct_enabled, max_attempts=max_attempts)
            requests = [run_request(flow, subscription) for subscription in due]
        for subscription_id in failed:
            context.log.warning(f"subscription {subscription_id}: no attempts left; failed")
        if not requests:
            yield SkipReason(f"no {resource_type} subscription is waiting")
        yield from requests

    return _sensor


def build_sensors(*, grace_seconds: float, direct_enabled: bool,
                  interval_seconds: int) -> list[_SensorDefinition]:
    return [subscription_sensor(flow, resource_type, grace_seconds=grace_seconds,
                                direct_enabled=direct_enabled, interval_seconds=interval_seconds)
            for flow, resource_type in ((GRAPH_FLOW, "graph"), (REPOSITORY_FLOW, "repository"))]
