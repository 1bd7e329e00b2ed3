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
from datetime import datetime

from sqlalchemy.orm import Session

from provisioning_pipelines.services.provisioning import claims, queue
from provisioning_pipelines.services.provisioning.claims import DueSubscription


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
        due.failed += claims.fail_exhausted(session, resource_type, now=now,
                                            max_attempts=max_attempts, actor=actor)
        found += claims.due_for_launch(session, resource_type, now=now,
                                       grace_seconds=grace_seconds,
                                       direct_enabled=direct_enabled, max_attempts=max_attempts)
        for item in found:
            if item.subscription_id not in seen:
                seen.add(item.subscription_id)
                due.subscriptions.append(item)
    return due
