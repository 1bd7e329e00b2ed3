"""What a billing change starts: the one answer the webhook, ``webhooks replay`` and the reaper
all act on.

A payment provisions the subscription's resource; a cancellation suspends it; a payment for a
cancelled subscription reactivates it. Every one of those flows is idempotent, so a webhook's
direct run and the reaper's later run of the same change make it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from provisioning_pipelines.flows.graph import GRAPH_FLOW
from provisioning_pipelines.flows.repository import REPOSITORY_FLOW
from provisioning_pipelines.flows.steps import Flow
from provisioning_pipelines.flows.subscription import SubscriptionConfig
from provisioning_pipelines.flows.suspension import (
    REACTIVATION_FLOW,
    SUSPENSION_FLOW,
    LifecycleConfig,
)
from provisioning_pipelines.services.webhooks import Applied

#: The flow that provisions each kind of paid subscription.
SUBSCRIPTION_FLOWS: dict[str, Flow] = {"graph": GRAPH_FLOW, "repository": REPOSITORY_FLOW}

#: What billing did to a subscription.
BillingChange = Literal["paid", "canceled", "reactivated"]


@dataclass(frozen=True)
class FollowUp:
    flow: Flow
    config: Any


def follow_up(change: BillingChange, subscription_id: str, *, resource_type: str | None = None,
              actor: str, reason: str) -> FollowUp:
    """The flow (and its config) that makes the resource follow ``change``; ``resource_type``
    is needed for a payment (which flow provisions it)."""
    if change == "paid":
        return FollowUp(SUBSCRIPTION_FLOWS[str(resource_type)],
                        SubscriptionConfig(subscription_id=subscription_id))
    flow = SUSPENSION_FLOW if change == "canceled" else REACTIVATION_FLOW
    return FollowUp(flow, LifecycleConfig(subscription_id=subscription_id, actor=actor,
                                          reason=reason))


def started_by(applied: Applied) -> FollowUp | None:
    """The flow an applied billing event starts (none for one that changed nothing)."""
    change = applied.change
    if change is None or applied.subscription_id is None:
        return None
    return follow_up(change, applied.subscription_id, resource_type=applied.resource_type,
                     actor="billing", reason=f"billing event {applied.event_id}")
