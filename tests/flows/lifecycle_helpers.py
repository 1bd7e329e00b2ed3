"""What the lifecycle flows' tests share: a runner for either path, a made graph, its rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance
from sqlalchemy import select

from provisioning_pipelines.flows import (
    GRAPH_FLOW,
    Flow,
    SubscriptionConfig,
)
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import (
    AuditLogEntry,
    CreditPool,
    Graph,
    GraphHost,
    GraphUser,
    Subscription,
)
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import job_error, run_direct, run_job

PATHS = ["job", "direct"]


class Runner:
    """Runs a flow by one path and gives back its result, or its error message."""

    def __init__(self, path: str, instance: DagsterInstance, resources: dict[str, Any]) -> None:
        self.path = path
        self.instance = instance
        self.resources = resources

    def __call__(self, flow: Flow, config: Any) -> dict[str, Any]:
        if self.path == "direct":
            return run_direct(flow, config, self.resources).result
        result = run_job(flow, config, instance=self.instance, resources=self.resources)
        assert result.success, job_error(result)
        outcome = result.output_for_node(flow.steps[-1].name)
        return outcome.result

    def error(self, flow: Flow, config: Any) -> str:
        if self.path == "direct":
            with pytest.raises(Exception) as raised:
                run_direct(flow, config, self.resources)
            return str(raised.value)
        result = run_job(flow, config, instance=self.instance, resources=self.resources)
        assert not result.success
        return job_error(result)

    def materializations(self, asset: tuple[str, ...]) -> list[Any]:
        from dagster import AssetKey

        records = self.instance.fetch_materializations(AssetKey(list(asset)), limit=1000)
        return [record.asset_materialization for record in records.records]


def a_graph(database: Database, resources: dict[str, Any], **graph: Any) -> tuple[str, str, str]:
    """(user, subscription, graph) of a provisioned graph with a few rows."""
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user, plan_name="ladybug-large", **graph)
    result = run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id), resources).result
    engine = resources["graph_engine"].get()
    engine.execute(Path(result["database_path"]), [
        "CREATE (:Entity {identifier: 'acme', name: 'Acme'})",
        "CREATE (:Entity {identifier: 'globex', name: 'Globex'})",
        "CREATE (:Document {identifier: 'd1', title: 'Annual report'})",
        "MATCH (a:Entity {identifier: 'acme'}), (b:Entity {identifier: 'globex'}) "
        "CREATE (a)-[:RELATED_TO {relation: 'competitor'}]->(b)",
    ])
    return user.user_id, sub_id, result["graph_id"]


def graph_row(database: Database, graph_id: str) -> dict[str, Any]:
    with database.session() as session:
        graph = session.get(Graph, graph_id)
        assert graph is not None
        roles = session.scalars(select(GraphUser.enabled).where(GraphUser.graph_id == graph_id))
        pools = session.scalars(select(CreditPool.status).where(CreditPool.graph_id == graph_id))
        host = session.get(GraphHost, graph.host_id)
        return {"status": graph.status, "roles": list(roles), "pools": list(pools),
                "path": Path(graph.database_path), "delete_after": graph.delete_after,
                "slots_used": host.slots_used if host else None,
                "deleted_at": graph.deleted_at}


def subscription_status(database: Database, sub_id: str) -> str:
    with database.session() as session:
        subscription = session.get(Subscription, sub_id)
        assert subscription is not None
        return subscription.status


def audit_actions(database: Database, subject_id: str) -> list[tuple[str, str]]:
    with database.session() as session:
        rows = session.execute(
            select(AuditLogEntry.action, AuditLogEntry.actor)
            .where(AuditLogEntry.subject_id == subject_id).order_by(AuditLogEntry.id)).all()
        return [(action, actor) for action, actor in rows]


# --- suspension and reactivation ------------------------------------------------------------------
