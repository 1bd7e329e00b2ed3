"""Provision a graph database for a paid graph subscription.

When the tier has no free slot the subscription is queued
(``services/provisioning/queue.py``), not failed: the run ends, its operation stays open, and
whoever provisions it once a slot is free continues that operation.
"""

from __future__ import annotations

from provisioning_pipelines.errors import CapacityExhausted
from provisioning_pipelines.flows.asset_keys import GRAPH_ASSET
from provisioning_pipelines.flows.steps import GRAPH_TAG, Flow, StepContext
from provisioning_pipelines.flows.subscription import (
    SubscriptionConfig,
    SubscriptionWork,
    activate_subscription,
    attempt_step,
    claim_subscription,
    subscription_owner,
    subscription_result,
    subscription_tags,
)
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.services.provisioning import queue

GraphConfig = SubscriptionConfig


@attempt_step
def create_graph_database(ctx: StepContext, work: SubscriptionWork) -> SubscriptionWork:
    """Create the graph: database file with its schema, schema rows, admin role, credit pool."""
    if work.claim.already_active:
        return work
    plan = graphs.plan_graph(work.claim)
    ctx.progress(f"Creating graph {plan.graph_id} ({plan.tier.name}, {len(plan.ddl)} "
                 "schema statements)", 30)
    try:
        details = graphs.create_graph(ctx.database, ctx.hosts, work.claim, plan,
                                      graph_data_dir=ctx.graph_data_dir,
                                      local_host_capacity=ctx.local_host_capacity,
                                      local_hosts=ctx.local_hosts)
    except CapacityExhausted as full:
        with ctx.database.session() as session:
            position = queue.enqueue(session, work.claim)
        ctx.progress(f"Queued at position {position}: {full.message}; it is provisioned as "
                     "soon as a slot is free")
        return work.with_details(queued=position, tier=plan.tier.name)
    ctx.progress(f"Graph {plan.graph_id} created with {len(details['tables'])} tables", 80)
    return work.with_details(resource_id=plan.graph_id, **details)


def graph_tags(config: SubscriptionConfig) -> dict[str, str]:
    """The graph id is derived from the subscription, so a launch already knows it."""
    return {**subscription_tags(config),
            GRAPH_TAG: graphs.graph_id_for_subscription(config.subscription_id)}


GRAPH_FLOW = Flow(
    name="graph",
    job_name="provision_graph_job",
    operation_kind="graph_provisioning",
    description="Provision a LadybugDB graph database for a paid graph subscription.",
    asset_key=GRAPH_ASSET,
    steps=(claim_subscription, create_graph_database, activate_subscription),
    tags=graph_tags,
    owner=subscription_owner,
    result=subscription_result,
)
