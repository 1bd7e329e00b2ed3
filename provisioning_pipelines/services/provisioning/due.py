"""What is due now: the one answer the sensors (a Dagster run each) and the API's resumer (the
direct path) both act on.

In order: free slots go to the queue first, oldest first (a released subscription is due at
once, for whoever released it); subscriptions with no attempts left are failed, not launched;
then the claimable ones (with direct provisioning on, only those whose lease lapsed or that
sat unclaimed past the grace period: the direct path is working on the rest).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from provisioning_pipelines.services.provisioning import claims, queue
from provisioning_pipelines.services.provisioning.claims import DueSubscription
from provisioning_pipelines.storage.models import Subscription

#: Subscriptions a sensor looks at per tick and resource type.
LAUNCH_BATCH = 50


@dataclass
class Due:
    #: Subscriptions an attempt should start for now, each once, released ones first.
    subscriptions: list[DueSubscription] = field(default_factory=list)
    #: Subscriptions just failed for having no attempts left.
    failed: list[str] = field(default_factory=list)


def due_now(session: Session, resource_types: Iterable[str], *, now: datetime,
            grace_seconds: float, direct_enabled: bool, max_attempts: int,
            actor: str) -> Due:
    """What of ``resource_types`` is due at ``now``; ``actor`` (``sensor``, ``resumer``) is
    audited on the subscriptions it fails."""
    due = Due()
    seen: set[str] = set()
    for resource_type in resource_types:
        found = queue.release(session, now=now) if resource_type == "graph" else []
        due.failed += fail_exhausted(session, resource_type, now=now,
                                            max_attempts=max_attempts, actor=actor)
        found += due_for_launch(session, resource_type, now=now,
                                       grace_seconds=grace_seconds,
                                       direct_enabled=direct_enabled, max_attempts=max_attempts)
        for item in found:
            if item.subscription_id not in seen:
                seen.add(item.subscription_id)
                due.subscriptions.append(item)
    return due


def due_for_launch(
    session: Session, resource_type: str, *, now: datetime, grace_seconds: float,
    direct_enabled: bool, max_attempts: int,
) -> list[DueSubscription]:
    """Subscriptions a run should be launched for now: claimable ones, and with direct
    provisioning on only those whose lease lapsed or that sat unclaimed past the grace period
    (the direct path is working on the rest)."""
    due = and_(claims.claimable(now, max_attempts), Subscription.resource_type == resource_type)
    if direct_enabled:
        quiet_since = now - timedelta(seconds=grace_seconds)
        due = and_(due, or_(Subscription.claim_token.is_not(None),
                            Subscription.updated_at <= quiet_since))
    rows = session.execute(
        select(Subscription.id, Subscription.user_id, Subscription.attempts,
               Subscription.resource_type, Subscription.operation_id)
        .where(due).order_by(Subscription.updated_at).limit(LAUNCH_BATCH)
    ).all()
    return [DueSubscription(row.id, row.user_id, row.attempts + 1, row.resource_type,
                            row.operation_id) for row in rows]


def fail_exhausted(session: Session, resource_type: str, *, now: datetime,
                   max_attempts: int, actor: str = "sensor") -> list[str]:
    """Subscriptions whose last attempt ended or lapsed get no run: they are marked failed."""
    candidates = session.scalars(
        select(Subscription.id).where(
            Subscription.status == "provisioning", Subscription.resource_type == resource_type,
            Subscription.attempts >= max_attempts, claims.free(now))
    ).all()
    reason = f"no attempts left of {max_attempts}"
    return [subscription_id for subscription_id in candidates
            if claims.give_up(session, subscription_id, now=now, actor=actor, reason=reason)]
