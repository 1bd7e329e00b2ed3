"""The subgraph flow: checks under a lock, the parent's host and schema, and the optional fork."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, DagsterInstance
from sqlalchemy import func, select

from provisioning_pipelines.errors import Conflict, InvalidRequest, LimitReached, NotFound
from provisioning_pipelines.flows import GRAPH_FLOW, SUBGRAPH_FLOW, SubgraphConfig
from provisioning_pipelines.flows import SubscriptionConfig as Sub
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.ladybug import LadybugEngine
from provisioning_pipelines.storage.models import Graph, GraphSchema, GraphUser
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import job_error, run_direct, run_job


def parent_graph(database: Database, resources: dict[str, Any], *,
                 plan_name: str = "ladybug-large") -> tuple[str, str, Path]:
    """A provisioned graph with a little data in it; returns (user id, graph id, file)."""
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user, plan_name=plan_name,
                                     schema_extensions=["crm"])
    outcome = run_direct(GRAPH_FLOW, Sub(subscription_id=sub_id), resources)
    path = Path(outcome.result["database_path"])
    LadybugEngine().execute(path, [
        "CREATE (:Entity {identifier: 'acme', name: 'Acme'})",
        "CREATE (:Entity {identifier: 'globex', name: 'Globex'})",
        "CREATE (:Document {identifier: 'd1', title: 'Annual report'})",
        "MATCH (a:Entity {identifier: 'acme'}), (b:Entity {identifier: 'globex'}) "
        "CREATE (a)-[:RELATED_TO {relation: 'competitor'}]->(b)",
    ])
    return user.user_id, outcome.result["graph_id"], path


def subgraph_count(database: Database, parent_id: str) -> int:
    with database.session() as session:
        return session.scalar(select(func.count()).select_from(Graph)
                              .where(Graph.parent_graph_id == parent_id)) or 0


def test_subgraph_job_creates_a_child_on_the_parents_host_with_its_schema(
    database: Database, resources: dict[str, Any], dagster_instance: DagsterInstance
) -> None:
    user_id, parent_id, parent_path = parent_graph(database, resources)
    config = SubgraphConfig(user_id=user_id, parent_graph_id=parent_id, name="analysis",
                            description="what-if")

    result = run_job(SUBGRAPH_FLOW, config, instance=dagster_instance, resources=resources)

    assert result.success
    subgraph_id = f"{parent_id}_analysis"
    with database.session() as session:
        parent = session.get(Graph, parent_id)
        child = session.get(Graph, subgraph_id)
        assert child is not None
        assert (child.host_id, child.tier, child.org_id) == (parent.host_id, parent.tier,
                                                             parent.org_id)
        assert child.schema_extensions == ["crm"] and child.subgraph_index == 1
        assert session.get(GraphUser, (subgraph_id, user_id)).role == "admin"
        assert session.scalar(select(GraphSchema.schema_type)
                              .where(GraphSchema.graph_id == subgraph_id)) == "inherited"
    child_path = Path(child.database_path)
    assert child_path.parent == parent_path.parent
    engine = LadybugEngine()
    assert {t.name for t in engine.list_tables(child_path)} == {
        t.name for t in engine.list_tables(parent_path)}
    assert engine.count_rows(child_path)["Entity"] == 0
    event = dagster_instance.get_latest_materialization_event(
        AssetKey(["provisioning", "subgraph"]))
    metadata = event.asset_materialization.metadata
    assert metadata["graph_id"].value == subgraph_id
    assert metadata["parent_graph_id"].value == parent_id
    assert metadata["provisioning_method"].value == "dagster"


def test_fork_copies_the_parents_data(database: Database, resources: dict[str, Any]) -> None:
    user_id, parent_id, _ = parent_graph(database, resources)
    outcome = run_direct(SUBGRAPH_FLOW, SubgraphConfig(
        user_id=user_id, parent_graph_id=parent_id, name="copy", fork_parent=True), resources)

    assert outcome.result["fork_status"] == "completed"
    rows = LadybugEngine().count_rows(Path(outcome.result["database_path"]))
    assert (rows["Entity"], rows["Document"], rows["RELATED_TO"]) == (2, 1, 1)


def test_fork_of_chosen_tables_minus_exclusions(
    database: Database, resources: dict[str, Any]
) -> None:
    user_id, parent_id, _ = parent_graph(database, resources)
    outcome = run_direct(SUBGRAPH_FLOW, SubgraphConfig(
        user_id=user_id, parent_graph_id=parent_id, name="entities", fork_parent=True,
        fork_tables=["Entity", "Document", "RELATED_TO"], fork_exclude=["Doc*"]), resources)

    rows = LadybugEngine().count_rows(Path(outcome.result["database_path"]))
    assert (rows["Entity"], rows["Document"], rows["RELATED_TO"]) == (2, 0, 1)


def test_failed_fork_leaves_the_subgraph_and_says_so(
    database: Database, resources: dict[str, Any]
) -> None:
    user_id, parent_id, parent_path = parent_graph(database, resources)
    parent_path.write_bytes(b"not a database any more")

    outcome = run_direct(SUBGRAPH_FLOW, SubgraphConfig(
        user_id=user_id, parent_graph_id=parent_id, name="broken", fork_parent=True), resources)

    assert outcome.result["fork_status"] == "failed" and outcome.result["fork_error"]
    assert Path(outcome.result["database_path"]).exists()
    with database.session() as session:
        assert session.get(Graph, f"{parent_id}_broken").details["fork_status"] == "failed"


@pytest.mark.parametrize("name", ["../x", "a b", "x" * 21, "", "semi;colon", "ünï"])
def test_bad_subgraph_name_is_refused_with_nothing_made(
    database: Database, resources: dict[str, Any], graph_dir: Path, name: str
) -> None:
    user_id, parent_id, _ = parent_graph(database, resources)
    files_before = sorted(graph_dir.rglob("*.lbug"))
    with pytest.raises(InvalidRequest, match=r"name: .* is not a valid subgraph name"):
        run_direct(SUBGRAPH_FLOW, SubgraphConfig(
            user_id=user_id, parent_graph_id=parent_id, name=name), resources)
    assert subgraph_count(database, parent_id) == 0
    assert sorted(graph_dir.rglob("*.lbug")) == files_before


def test_subgraph_of_a_subgraph_is_refused(
    database: Database, resources: dict[str, Any]
) -> None:
    user_id, parent_id, _ = parent_graph(database, resources)
    run_direct(SUBGRAPH_FLOW, SubgraphConfig(user_id=user_id, parent_graph_id=parent_id,
                                             name="child"), resources)
    with pytest.raises(InvalidRequest, match="is itself a subgraph"):
        run_direct(SUBGRAPH_FLOW, SubgraphConfig(
            user_id=user_id, parent_graph_id=f"{parent_id}_child", name="grandchild"),
            resources)


def test_unknown_parent_and_someone_elses_parent_look_the_same(
    database: Database, resources: dict[str, Any]
) -> None:
    _owner, parent_id, _ = parent_graph(database, resources)
    stranger = new_customer(database)
    for user_id, graph_id in ((stranger.user_id, parent_id), (_owner, "kg0000000000000000")):
        with pytest.raises(NotFound, match="parent_graph_id: no graph"):
            run_direct(SUBGRAPH_FLOW, SubgraphConfig(user_id=user_id, parent_graph_id=graph_id,
                                                     name="x"), resources)


def test_standard_tier_allows_no_subgraphs(
    database: Database, resources: dict[str, Any], dagster_instance: DagsterInstance
) -> None:
    user_id, parent_id, _ = parent_graph(database, resources, plan_name="ladybug-standard")
    result = run_job(SUBGRAPH_FLOW, SubgraphConfig(user_id=user_id, parent_graph_id=parent_id,
                                                   name="x"),
                     instance=dagster_instance, resources=resources)
    assert not result.success
    assert "ladybug-standard allows no subgraphs" in job_error(result)
    assert subgraph_count(database, parent_id) == 0


def test_concurrent_creates_never_pass_the_tiers_limit(
    database: Database, resources: dict[str, Any], graph_dir: Path
) -> None:
    user_id, parent_id, _ = parent_graph(database, resources)
    outcomes: list[Any] = []

    def create(index: int) -> None:
        try:
            outcomes.append(run_direct(SUBGRAPH_FLOW, SubgraphConfig(
                user_id=user_id, parent_graph_id=parent_id, name=f"s{index}"), resources))
        except LimitReached as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(14)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(isinstance(o, LimitReached) for o in outcomes) == 4
    assert subgraph_count(database, parent_id) == 10
    with database.session() as session:
        assert session.get(Graph, parent_id).subgraph_count == 10
        indexes = session.scalars(select(Graph.subgraph_index)
                                  .where(Graph.parent_graph_id == parent_id)).all()
    assert sorted(indexes) == list(range(1, 11))
    children = [p for p in graph_dir.rglob(f"{parent_id}_*.lbug")]
    assert len(children) == 10
    with pytest.raises(LimitReached, match="already has 10 subgraphs"):
        run_direct(SUBGRAPH_FLOW, SubgraphConfig(user_id=user_id, parent_graph_id=parent_id,
                                                 name="eleventh"), resources)


def test_a_name_a_letters_case_apart_from_a_subgraphs_is_taken(
        database: Database, resources: dict[str, Any], graph_dir: Path) -> None:
    user_id, parent_id, _ = parent_graph(database, resources)
    run_direct(SUBGRAPH_FLOW, SubgraphConfig(user_id=user_id, parent_graph_id=parent_id,
                                             name="a1"), resources)
    with pytest.raises(Conflict, match=r"already has a subgraph 'a1' \(names are compared "
                                       r"case-blind\)"):
        run_direct(SUBGRAPH_FLOW, SubgraphConfig(user_id=user_id, parent_graph_id=parent_id,
                                                 name="A1"), resources)
    assert subgraph_count(database, parent_id) == 1
    assert [p.name for p in graph_dir.rglob(f"{parent_id}_*.lbug")] == [f"{parent_id}_a1.lbug"]
