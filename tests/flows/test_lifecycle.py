"""Suspension, reactivation, deletion, backups and restore: each flow through the Dagster job on a
real instance and through the direct path, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance
from sqlalchemy import func, select

from provisioning_pipelines.errors import Conflict
from provisioning_pipelines.flows import (
    BACKUP_FLOW,
    DELETION_FLOW,
    GRAPH_FLOW,
    REACTIVATION_FLOW,
    REPOSITORY_FLOW,
    RESTORE_FLOW,
    SUBGRAPH_DELETION_FLOW,
    SUBGRAPH_FLOW,
    SUSPENSION_FLOW,
    BackupConfig,
    DeletionConfig,
    Flow,
    LifecycleConfig,
    RestoreConfig,
    SubgraphConfig,
    SubgraphDeletionConfig,
    SubscriptionConfig,
)
from provisioning_pipelines.services.graphs import backups as backup_service
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.ladybug import files
from provisioning_pipelines.storage.models import (
    AuditLogEntry,
    CreditPool,
    Graph,
    GraphBackup,
    GraphHost,
    GraphUser,
    RepositoryAccess,
    Subscription,
)
from tests.conftest import make_resources
from tests.factories import new_customer, paid_graph_subscription, paid_repository_subscription
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


@pytest.fixture(params=PATHS)
def run(request: pytest.FixtureRequest, dagster_instance: DagsterInstance,
        resources: dict[str, Any]) -> Runner:
    return Runner(request.param, dagster_instance, resources)


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


def test_a_suspended_graph_is_deleted_after_its_grace_with_a_final_backup(
        run: Runner, database: Database, resources: dict[str, Any]) -> None:
    user_id, sub_id, graph_id = a_graph(database, resources)
    run_direct(SUBGRAPH_FLOW, SubgraphConfig(user_id=user_id, parent_graph_id=graph_id,
                                             name="child"), resources)
    before = graph_row(database, graph_id)
    run_direct(SUSPENSION_FLOW, LifecycleConfig(subscription_id=sub_id), resources)

    early = run.error(DELETION_FLOW, DeletionConfig(graph_id=graph_id))
    assert "suspended" in early and "due" in early
    with database.session() as session:  # the grace passes
        session.get(Graph, graph_id).delete_after = session.get(Graph, graph_id).suspended_at

    result = run(DELETION_FLOW, DeletionConfig(graph_id=graph_id, actor="reaper",
                                               reason="grace over"))

    assert result["status"] == "deleted"
    assert result["subgraphs_removed"] == [f"{graph_id}_child"]
    row = graph_row(database, graph_id)
    assert (row["status"], row["roles"], row["pools"]) == ("deleted", [], [])
    assert row["deleted_at"] is not None
    assert row["slots_used"] == before["slots_used"] - 1
    folder = before["path"].parent
    assert not any(p.name.startswith(graph_id) for p in folder.iterdir()), list(folder.iterdir())
    with database.session() as session:
        assert session.get(Graph, f"{graph_id}_child") is None
        final = session.get(GraphBackup, result["final_backup_id"])
        assert final is not None and final.kind == "final"
        kept_days = (final.expires_at - final.created_at).days
        final_path = Path(final.path)
    assert kept_days == 90
    assert final_path.is_file()
    manifest = json.loads(final_path.with_suffix(".json").read_text())
    assert manifest["graph_id"] == graph_id and manifest["schema"]["statements"]
    assert ("graph.deleted", "reaper") in audit_actions(database, graph_id)


def test_an_operator_deletes_a_live_graph_at_once(run: Runner, database: Database,
                                                  resources: dict[str, Any]) -> None:
    _user_id, _sub_id, graph_id = a_graph(database, resources)

    refused = run.error(DELETION_FLOW, DeletionConfig(graph_id=graph_id))
    assert "active" in refused

    result = run(DELETION_FLOW, DeletionConfig(graph_id=graph_id, at_once=True,
                                               reason="abuse report"))

    assert result["status"] == "deleted"
    assert not graph_row(database, graph_id)["path"].exists()


def test_deleting_a_subgraph_frees_its_name(run: Runner, database: Database,
                                            resources: dict[str, Any]) -> None:
    user_id, _sub_id, graph_id = a_graph(database, resources)
    made = run_direct(SUBGRAPH_FLOW, SubgraphConfig(
        user_id=user_id, parent_graph_id=graph_id, name="child"), resources).result

    result = run(SUBGRAPH_DELETION_FLOW, SubgraphDeletionConfig(
        user_id=user_id, parent_graph_id=graph_id, name="child"))

    assert result["status"] == "deleted"
    assert not Path(made["database_path"]).exists()
    with database.session() as session:
        assert session.get(Graph, graph_id).subgraph_count == 0
        assert session.get(Graph, made["graph_id"]) is None
    missing = run.error(SUBGRAPH_DELETION_FLOW, SubgraphDeletionConfig(
        user_id=user_id, parent_graph_id=graph_id, name="child"))
    assert "no subgraph 'child'" in missing
    run_direct(SUBGRAPH_FLOW, SubgraphConfig(user_id=user_id, parent_graph_id=graph_id,
                                             name="child"), resources)


# --- backups and restore --------------------------------------------------------------------------


def test_a_restored_backup_is_a_new_graph_with_the_same_tables_and_rows(
        run: Runner, database: Database, resources: dict[str, Any]) -> None:
    user_id, _sub_id, graph_id = a_graph(database, resources)
    engine = resources["graph_engine"].get()
    original = graph_row(database, graph_id)["path"]
    counts = engine.count_rows(original)

    backup = run(BACKUP_FLOW, BackupConfig(graph_id=graph_id, backup_id="bk_test1"))
    assert (backup["backup_id"], backup["size_bytes"] > 0) == ("bk_test1", True)
    engine.execute(original, ["CREATE (:Entity {identifier: 'later', name: 'After'})"])

    restored = run(RESTORE_FLOW, RestoreConfig(user_id=user_id, graph_id=graph_id,
                                               backup_id="bk_test1", restore_id="r1"))

    new_id = restored["graph_id"]
    assert new_id != graph_id and restored["status"] == "active"
    assert restored["restored_from"] == {"graph_id": graph_id, "backup_id": "bk_test1"}
    new_path = graph_row(database, new_id)["path"]
    assert engine.count_rows(new_path) == counts
    assert [t.name for t in engine.list_tables(new_path)] == \
        [t.name for t in engine.list_tables(original)]
    assert engine.count_rows(original)["Entity"] == counts["Entity"] + 1  # untouched
    row = graph_row(database, new_id)
    assert (row["status"], row["roles"], row["pools"]) == ("active", [True], ["active"])
    run_direct(SUBGRAPH_FLOW, SubgraphConfig(user_id=user_id, parent_graph_id=new_id,
                                             name="child"), resources)


def test_a_damaged_backup_is_refused_before_anything_is_made(
        run: Runner, database: Database, resources: dict[str, Any]) -> None:
    user_id, _sub_id, graph_id = a_graph(database, resources)
    run_direct(BACKUP_FLOW, BackupConfig(graph_id=graph_id, backup_id="bk_test2"), resources)
    with database.session() as session:
        path = Path(session.get(GraphBackup, "bk_test2").path)
        slots = session.scalar(select(func.sum(GraphHost.slots_used)))
        graphs_before = session.scalar(select(func.count()).select_from(Graph))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    error = run.error(RESTORE_FLOW, RestoreConfig(user_id=user_id, graph_id=graph_id,
                                                  backup_id="bk_test2", restore_id="r2"))

    assert "damaged" in error
    new_id = backup_service.restored_graph_id("r2")
    with database.session() as session:
        assert session.get(Graph, new_id) is None
        assert session.scalar(select(func.sum(GraphHost.slots_used))) == slots
        assert session.scalar(select(func.count()).select_from(Graph)) == graphs_before
    assert not list(graph_row(database, graph_id)["path"].parent.glob(f"{new_id}*"))


def test_a_backup_made_twice_is_one_backup(run: Runner, database: Database,
                                           resources: dict[str, Any]) -> None:
    _user_id, _sub_id, graph_id = a_graph(database, resources)
    config = BackupConfig(graph_id=graph_id, kind="daily")

    first = run(BACKUP_FLOW, config)
    second = run(BACKUP_FLOW, config)

    assert first["backup_id"] == second["backup_id"]
    assert first["backup_id"].startswith(f"bk_daily_{graph_id}_")
    with database.session() as session:
        backup = session.get(GraphBackup, first["backup_id"])
        assert (backup.expires_at - backup.created_at).days == 14  # ladybug-large keeps 14 days
    assert len(list(Path(backup.path).parent.glob("*.lbug"))) == 1


def test_a_graph_busy_with_a_deletion_is_not_backed_up(
        run: Runner, database: Database, resources: dict[str, Any]) -> None:
    from provisioning_pipelines.services.graphs import lifecycle

    _user_id, _sub_id, graph_id = a_graph(database, resources)
    with database.session() as session:
        lifecycle.claim_graph(session, graph_id, statuses=lifecycle.LIVE, lease_seconds=60)

    error = run.error(BACKUP_FLOW, BackupConfig(graph_id=graph_id))

    assert "busy" in error
    with pytest.raises(Conflict), database.session() as session:
        lifecycle.claim_graph(session, graph_id, statuses=lifecycle.LIVE, lease_seconds=60)


def test_backups_go_under_backup_dir(database_url: str, tmp_path: Path,
                                     dagster_instance: DagsterInstance) -> None:
    resources = make_resources(database_url, tmp_path / "graphs",
                               BACKUP_DIR=str(tmp_path / "elsewhere"))
    database = resources["database"].get()
    _user_id, _sub_id, graph_id = a_graph(database, resources)

    result = run_direct(BACKUP_FLOW, BackupConfig(graph_id=graph_id, backup_id="bk_x"),
                        resources).result

    assert result["backup_id"] == "bk_x"
    assert (tmp_path / "elsewhere" / graph_id / "bk_x.lbug").is_file()
    assert not files.has_sidecars(tmp_path / "elsewhere" / graph_id / "bk_x.lbug")
