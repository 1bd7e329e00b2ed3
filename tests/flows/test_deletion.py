"""Deletion: a suspended graph after its grace, an operator's at once, and a subgraph."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from provisioning_pipelines.flows import (
    DELETION_FLOW,
    SUBGRAPH_DELETION_FLOW,
    SUBGRAPH_FLOW,
    SUSPENSION_FLOW,
    DeletionConfig,
    LifecycleConfig,
    SubgraphConfig,
    SubgraphDeletionConfig,
)
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import (
    Graph,
    GraphBackup,
)
from tests.flows.helpers import run_direct
from tests.flows.lifecycle_helpers import (
    Runner,
    a_graph,
    audit_actions,
    graph_row,
)


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
