"""Backups and restores: a restored backup is a new graph; a damaged or doubled one makes none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance
from sqlalchemy import func, select

from provisioning_pipelines.errors import Conflict
from provisioning_pipelines.flows import (
    BACKUP_FLOW,
    RESTORE_FLOW,
    SUBGRAPH_FLOW,
    BackupConfig,
    RestoreConfig,
    SubgraphConfig,
)
from provisioning_pipelines.services.graphs import backups as backup_service
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.ladybug import files
from provisioning_pipelines.storage.models import (
    Graph,
    GraphBackup,
    GraphHost,
)
from tests.conftest import make_resources
from tests.flows.helpers import run_direct
from tests.flows.lifecycle_helpers import (
    Runner,
    a_graph,
    graph_row,
)


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
