"""Suspending a cancelled resource, and reactivating it within the grace.

Both start from a subscription or a graph: a billing event names the subscription; a user's
``DELETE /v1/graphs/{id}`` or ``POST /v1/graphs/{id}/restore`` names the graph (whose
subscription, if it has one, is cancelled or reactivated with it). Each change is one
conditional UPDATE (``services/graphs/lifecycle.py``), so the webhook's direct path and a
sensor's run racing on one resource change it once; a flow that finds the change made already
says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from dagster import Config
from pydantic import Field

from provisioning_pipelines.errors import InvalidRequest
from provisioning_pipelines.flows.asset_keys import GRAPH_ASSET, REPOSITORY_ASSET
from provisioning_pipelines.flows.steps import (
    GRAPH_TAG,
    SUBSCRIPTION_TAG,
    Flow,
    Outcome,
    StepContext,
    step,
)
from provisioning_pipelines.services import catalog
from provisioning_pipelines.services.access import repositories
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.services.graphs import lifecycle
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.storage.db import Database


class LifecycleConfig(Config):
    """The resource whose life changes: by its subscription, or by its graph."""

    subscription_id: str | None = Field(default=None, description="sub_… (or give graph_id)")
    graph_id: str | None = Field(default=None, description="kg… (or give subscription_id)")
    actor: str = Field(default="operator", description="Who asks, for the audit log.")
    reason: str = Field(default="", description="Why, for the audit log.")


@dataclass(frozen=True)
class Target:
    subscription_id: str | None
    graph_id: str | None
    resource_type: str
    resource_id: str | None
    user_id: str | None
    actor: str
    reason: str
    started_at: float
    changed: bool = False


def _target(database: Database, config: LifecycleConfig) -> Target:
    if not (config.subscription_id or config.graph_id):
        raise InvalidRequest("subscription_id or graph_id: one is required",
                             field="subscription_id")
    with database.session() as session:
        graph = None
        if config.graph_id:
            graph = graphs.top_level_graph(session, config.graph_id)
        subscription_id = config.subscription_id or (graph.subscription_id if graph else None)
        subscription = billing.get_subscription(session, subscription_id) \
            if subscription_id else None
        if graph is None and subscription is not None and subscription.resource_type == "graph":
            graph = graphs.graph_of_subscription(session, subscription.id)
        return Target(
            subscription_id=subscription.id if subscription else None,
            graph_id=graph.id if graph else None,
            resource_type=subscription.resource_type if subscription else "graph",
            resource_id=subscription.resource_id if subscription else graph.id if graph else None,
            user_id=subscription.user_id if subscription else graph.owner_user_id if graph
            else None,
            actor=config.actor, reason=config.reason, started_at=time.time())


def _outcome(target: Target, lifecycle_status: str, details: dict[str, Any],
             method_note: str) -> Outcome:
    asset = GRAPH_ASSET if target.resource_type == "graph" else REPOSITORY_ASSET
    result = {"subscription_id": target.subscription_id, "graph_id": target.graph_id,
              "resource_type": target.resource_type, "status": lifecycle_status,
              "changed": target.changed, **details}
    metadata = {"lifecycle": lifecycle_status, "changed": target.changed,
                "subscription_id": target.subscription_id or "",
                "graph_id": target.graph_id or "", "user_id": target.user_id or "",
                "note": method_note}
    return Outcome(asset_key=asset, result=result, metadata=metadata,
                   started_at=target.started_at, materialize=target.changed)


# --- suspension ----------------------------------------------------------------------------------


@step(config=LifecycleConfig)
def record_cancellation(ctx: StepContext, config: LifecycleConfig) -> Target:
    """Cancel the subscription (if it is not cancelled yet) that the resource belongs to."""
    target = _target(ctx.database, config)
    if target.subscription_id:
        with ctx.database.session() as session:
            billing.cancel(session, target.subscription_id, actor=config.actor)
    ctx.progress(f"Subscription {target.subscription_id or '-'} cancelled", 30)
    return target


@step()
def suspend_resource(ctx: StepContext, target: Target) -> Outcome:
    """Suspend the graph (roles off, credits frozen, deletion due after the grace), or revoke
    the repository access and freeze its credits."""
    with ctx.database.session() as session:
        if target.resource_type == "graph" and target.graph_id:
            changed = lifecycle.suspend_graph(
                session, target.graph_id, grace_seconds=ctx.policy.deletion_grace_seconds,
                actor=target.actor, reason=target.reason or "subscription cancelled")
            delete_after = graphs.top_level_graph(session, target.graph_id).delete_after
            details = {"delete_after": delete_after.isoformat() if delete_after else None}
        elif target.subscription_id and target.resource_type == "repository":
            subscription = billing.get_subscription(session, target.subscription_id)
            changed = lifecycle.suspend_repository_access(session, subscription,
                                                          actor=target.actor)
            details = {}
        else:
            changed, details = False, {}
    ctx.progress(f"Suspended {target.graph_id or target.resource_id or '-'}", 100)
    done = replace(target, changed=changed)
    # Nothing was made yet (cancelled before the payment): the subscription is cancelled and
    # there is no resource to call suspended.
    otherwise = "suspended" if target.graph_id or target.resource_id else "canceled"
    return _outcome(done, _state(ctx, target, otherwise), details,
                    "suspended" if changed else "already")


# --- reactivation --------------------------------------------------------------------------------


@step(config=LifecycleConfig)
def record_reactivation(ctx: StepContext, config: LifecycleConfig) -> Target:
    """Make the cancelled subscription active again, if its resource has not been deleted."""
    target = _target(ctx.database, config)
    with ctx.database.session() as session:
        if target.subscription_id:
            subscription = billing.get_subscription(session, target.subscription_id)
            if lifecycle.resource_state(session, subscription) == "gone":
                raise InvalidRequest("graph_id: the resource was deleted; it can be restored "
                                     "from a backup instead", field="graph_id")
            if subscription.status == "canceled":
                billing.reactivate(session, subscription, actor=config.actor)
    ctx.progress(f"Subscription {target.subscription_id or '-'} active again", 30)
    return target


@step()
def reactivate_resource(ctx: StepContext, target: Target) -> Outcome:
    """Make the suspended graph active (roles and credits back), or grant the repository
    access again."""
    with ctx.database.session() as session:
        if target.resource_type == "graph" and target.graph_id:
            changed = lifecycle.reactivate_graph(session, target.graph_id, actor=target.actor)
        elif target.subscription_id and target.resource_type == "repository":
            subscription = billing.get_subscription(session, target.subscription_id)
            repository, plan = catalog.repository_plan(subscription.plan_name)
            _access, changed = repositories.grant_access(
                session, user_id=subscription.user_id, repository=repository, plan=plan.name,
                subscription_id=subscription.id)
            lifecycle.unfreeze_repository_credits(session, subscription)
        else:
            changed = False
    ctx.progress(f"Reactivated {target.graph_id or target.resource_id or '-'}", 100)
    done = replace(target, changed=changed)
    return _outcome(done, _state(ctx, target, "active"), {},
                    "reactivated" if changed else "already")


def _state(ctx: StepContext, target: Target, otherwise: str) -> str:
    """The graph's status as the flow leaves it (a repository access has no status of its
    own: ``otherwise``)."""
    if not target.graph_id:
        return otherwise
    with ctx.database.session() as session:
        return graphs.top_level_graph(session, target.graph_id).status


def lifecycle_tags(config: LifecycleConfig) -> dict[str, str]:
    tags = {}
    if config.subscription_id:
        tags[SUBSCRIPTION_TAG] = config.subscription_id
    if config.graph_id:
        tags[GRAPH_TAG] = config.graph_id
    return tags


def lifecycle_owner(database: Database, config: LifecycleConfig) -> str | None:
    try:
        return _target(database, config).user_id
    except Exception:
        return None


def lifecycle_result(database: Database, config: LifecycleConfig) -> dict[str, Any]:
    target = _target(database, config)
    with database.session() as session:
        status = graphs.top_level_graph(session, target.graph_id).status \
            if target.graph_id else None
    return {"subscription_id": target.subscription_id, "graph_id": target.graph_id,
            "status": status}


SUSPENSION_FLOW = Flow(
    name="suspension", job_name="suspend_resource_job", operation_kind="suspension",
    description="Cancel a subscription and suspend its resource until it is deleted.",
    asset_key=GRAPH_ASSET, steps=(record_cancellation, suspend_resource),
    tags=lifecycle_tags, owner=lifecycle_owner, result=lifecycle_result)

REACTIVATION_FLOW = Flow(
    name="reactivation", job_name="reactivate_resource_job", operation_kind="reactivation",
    description="Make a cancelled subscription and its suspended resource active again.",
    asset_key=GRAPH_ASSET, steps=(record_reactivation, reactivate_resource),
    tags=lifecycle_tags, owner=lifecycle_owner, result=lifecycle_result)
