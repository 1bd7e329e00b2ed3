"""Backups and restores: a restore replaces a paid graph's data and makes no graph; a damaged
backup touches nothing; a backup made twice is one."""

from __future__ import annotations

import threading
import time
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
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.ladybug import files
from provisioning_pipelines.storage.models import (
    Graph,
    GraphBackup,
    GraphHost,
    GraphUser,
)
from tests.conftest import make_resources
from tests.flows.helpers import run_direct
from tests.flows.lifecycle_helpers import (
    Runner,
    a_graph,
    graph_row,
)


def graph_count(database: Database) -> int:
    with database.session() as session:
        return session.scalar(select(func.count()).select_from(Graph))


def test_a_restored_backup_replaces_the_graphs_data_and_makes_no_graph(
        run: Runner, database: Database, resources: dict[str, Any]) -> None:
    user_id, _sub_id, graph_id = a_graph(database, resources)
    engine = resources["graph_engine"].get()
    path = graph_row(database, graph_id)["path"]
    counts = engine.count_rows(path)
    backup = run(BACKUP_FLOW, BackupConfig(graph_id=graph_id, backup_id="bk_test1"))
    assert (backup["backup_id"], backup["size_bytes"] > 0) == ("bk_test1", True)
    engine.execute(path, ["CREATE (:Entity {identifier: 'later', name: 'After'})"])
    before = graph_count(database)

    restored = run(RESTORE_FLOW, RestoreConfig(user_id=user_id, graph_id=graph_id,
                                               backup_id="bk_test1"))

    assert (restored["graph_id"], restored["status"]) == (graph_id, "active")
    assert restored["restored_from"] == {"graph_id": graph_id, "backup_id": "bk_test1"}
    assert engine.count_rows(path) == counts  # the row written after the backup is gone
    assert graph_count(database) == before
    assert not files.has_sidecars(path)
    assert not list(path.parent.glob(f".{path.name}.*.tmp"))
    with database.session() as session:
        graph = session.get(Graph, graph_id)
        assert "restoring" not in graph.details and graph.lifecycle_token is None
    run_direct(SUBGRAPH_FLOW, SubgraphConfig(user_id=user_id, parent_graph_id=graph_id,
                                             name="child"), resources)


def test_a_deleted_graphs_backup_restores_only_into_a_graph_of_a_new_payment(
        run: Runner, database: Database, resources: dict[str, Any]) -> None:
    from provisioning_pipelines.flows import DELETION_FLOW, DeletionConfig

    user_id, _sub_id, graph_id = a_graph(database, resources)
    run(BACKUP_FLOW, BackupConfig(graph_id=graph_id, backup_id="bk_gone"))
    run(DELETION_FLOW, DeletionConfig(graph_id=graph_id, at_once=True))
    before = graph_count(database)

    error = run.error(RESTORE_FLOW, RestoreConfig(user_id=user_id, graph_id=graph_id,
                                                  backup_id="bk_gone"))
    assert "deleted" in error and "into_graph_id" in error
    assert graph_count(database) == before

    # A new payment: a second subscription of the same user, and its graph.
    _other_user, _other_sub, other_graph = a_graph(database, resources)
    with database.session() as session:  # theirs: its owner and an admin (roles.py decides)
        session.get(Graph, other_graph).owner_user_id = user_id
        session.add(GraphUser(graph_id=other_graph, user_id=user_id, role="admin"))
    restored = run(RESTORE_FLOW, RestoreConfig(user_id=user_id, graph_id=graph_id,
                                               backup_id="bk_gone", into_graph_id=other_graph))
    assert (restored["graph_id"], restored["status"]) == (other_graph, "active")
    assert graph_count(database) == before + 1  # the new subscription's graph, no other


def test_no_backup_is_restored_into_a_graph_nobody_pays_for(
        run: Runner, database: Database, resources: dict[str, Any]) -> None:
    from provisioning_pipelines.storage.models import Subscription

    user_id, sub_id, graph_id = a_graph(database, resources)
    run(BACKUP_FLOW, BackupConfig(graph_id=graph_id, backup_id="bk_unpaid"))
    engine = resources["graph_engine"].get()
    path = graph_row(database, graph_id)["path"]
    engine.execute(path, ["CREATE (:Entity {identifier: 'kept', name: 'Kept'})"])
    counts = engine.count_rows(path)
    with database.session() as session:
        session.get(Subscription, sub_id).status = "canceled"

    error = run.error(RESTORE_FLOW, RestoreConfig(user_id=user_id, graph_id=graph_id,
                                                  backup_id="bk_unpaid"))

    assert "canceled" in error and "active subscription" in error
    assert engine.count_rows(path) == counts


def test_a_damaged_backup_is_refused_before_anything_is_touched(
        run: Runner, database: Database, resources: dict[str, Any]) -> None:
    user_id, _sub_id, graph_id = a_graph(database, resources)
    run_direct(BACKUP_FLOW, BackupConfig(graph_id=graph_id, backup_id="bk_test2"), resources)
    engine = resources["graph_engine"].get()
    live = graph_row(database, graph_id)["path"]
    engine.execute(live, ["CREATE (:Entity {identifier: 'later', name: 'After'})"])
    counts = engine.count_rows(live)
    with database.session() as session:
        path = Path(session.get(GraphBackup, "bk_test2").path)
        slots = session.scalar(select(func.sum(GraphHost.slots_used)))
    graphs_before = graph_count(database)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    error = run.error(RESTORE_FLOW, RestoreConfig(user_id=user_id, graph_id=graph_id,
                                                  backup_id="bk_test2"))

    assert "damaged" in error
    assert engine.count_rows(live) == counts
    with database.session() as session:
        assert session.scalar(select(func.sum(GraphHost.slots_used))) == slots
        assert session.get(Graph, graph_id).lifecycle_token is None
    assert graph_count(database) == graphs_before
    assert not list(live.parent.glob(f".{live.name}.*.tmp"))


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


def test_a_graph_busy_past_the_wait_is_not_backed_up(
        run: Runner, database: Database, resources: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from provisioning_pipelines.flows import backup
    from provisioning_pipelines.services.graphs import lifecycle

    monkeypatch.setattr(backup, "WAIT_FOR_GRAPH_SECONDS", 0.3)
    _user_id, _sub_id, graph_id = a_graph(database, resources)
    with database.session() as session:
        lifecycle.claim_graph(session, graph_id, statuses=lifecycle.LIVE, lease_seconds=60)

    error = run.error(BACKUP_FLOW, BackupConfig(graph_id=graph_id))

    assert "busy" in error
    with pytest.raises(Conflict), database.session() as session:
        lifecycle.claim_graph(session, graph_id, statuses=lifecycle.LIVE, lease_seconds=60)


def test_a_backup_asked_while_another_holds_the_graph_waits_for_it(
        run: Runner, database: Database, resources: dict[str, Any]) -> None:
    """"Back up now" twice: the second waits for the first to give the graph back."""
    from provisioning_pipelines.services.graphs import lifecycle

    _user_id, _sub_id, graph_id = a_graph(database, resources)
    with database.session() as session:
        held = lifecycle.claim_graph(session, graph_id, statuses=lifecycle.LIVE,
                                     lease_seconds=60)

    def give_back() -> None:
        time.sleep(0.5)
        with database.session() as session:
            lifecycle.release_graph(session, held)

    releaser = threading.Thread(target=give_back)
    releaser.start()
    made = run(BACKUP_FLOW, BackupConfig(graph_id=graph_id, backup_id="bk_waited"))
    releaser.join()
    assert made["backup_id"] == "bk_waited" and made["size_bytes"] > 0


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
