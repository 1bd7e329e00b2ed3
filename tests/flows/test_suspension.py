"""Suspension and reactivation: a cancelled resource is suspended, and comes back in the grace."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from provisioning_pipelines.flows import (
    REACTIVATION_FLOW,
    REPOSITORY_FLOW,
    SUBGRAPH_FLOW,
    SUSPENSION_FLOW,
    LifecycleConfig,
    SubgraphConfig,
    SubscriptionConfig,
)
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import (
    CreditPool,
    RepositoryAccess,
)
from tests.factories import new_customer, paid_repository_subscription
from tests.flows.helpers import run_direct
from tests.flows.lifecycle_helpers import (
    Runner,
    a_graph,
    audit_actions,
    graph_row,
    subscription_status,
)


def test_cancelling_suspends_the_graph_and_undoing_it_brings_it_back(
        run: Runner, database: Database, resources: dict[str, Any]) -> None:
    user_id, sub_id, graph_id = a_graph(database, resources)

    result = run(SUSPENSION_FLOW, LifecycleConfig(subscription_id=sub_id, actor="billing",
                                                  reason="evt_1"))

    assert (result["status"], result["changed"], result["graph_id"]) == ("suspended", True,
                                                                         graph_id)
    row = graph_row(database, graph_id)
    assert (row["status"], row["roles"], row["pools"]) == ("suspended", [False], ["frozen"])
    assert row["delete_after"] is not None and row["path"].is_file()
    assert subscription_status(database, sub_id) == "canceled"
    # No new subgraph of a suspended graph.
    refused = run.error(SUBGRAPH_FLOW, SubgraphConfig(user_id=user_id, parent_graph_id=graph_id,
                                                      name="child"))
    assert "suspended" in refused

    again = run(SUSPENSION_FLOW, LifecycleConfig(graph_id=graph_id))
    assert again["changed"] is False
    assert [a for a, _ in audit_actions(database, graph_id)].count("graph.suspended") == 1

    back = run(REACTIVATION_FLOW, LifecycleConfig(graph_id=graph_id, actor=user_id))

    assert (back["status"], back["changed"]) == ("active", True)
    row = graph_row(database, graph_id)
    assert (row["status"], row["roles"], row["pools"], row["delete_after"]) == (
        "active", [True], ["active"], None)
    assert subscription_status(database, sub_id) == "active"
    run(SUBGRAPH_FLOW, SubgraphConfig(user_id=user_id, parent_graph_id=graph_id, name="child"))
    if run.path == "job":
        methods = [m.metadata["provisioning_method"].value
                   for m in run.materializations(("provisioning", "graph"))
                   if m.metadata.get("graph_id") and m.metadata["graph_id"].value == graph_id
                   and "lifecycle" in m.metadata]
        assert methods == ["dagster", "dagster"]  # suspended, reactivated; the no-op is not


def test_a_cancelled_repository_subscription_loses_its_access_and_credits_freeze(
        run: Runner, database: Database, resources: dict[str, Any]) -> None:
    user = new_customer(database)
    sub_id = paid_repository_subscription(database, user)
    run_direct(REPOSITORY_FLOW, SubscriptionConfig(subscription_id=sub_id), resources)

    run(SUSPENSION_FLOW, LifecycleConfig(subscription_id=sub_id))

    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(RepositoryAccess)) == 0
        assert session.scalar(select(CreditPool.status)) == "frozen"

    run(REACTIVATION_FLOW, LifecycleConfig(subscription_id=sub_id))

    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(RepositoryAccess)) == 1
        assert session.scalar(select(CreditPool.status)) == "active"
    assert subscription_status(database, sub_id) == "active"


# --- deletion -------------------------------------------------------------------------------------
