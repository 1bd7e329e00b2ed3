"""Backups, forks and restores on a host whose disk runs out of room (a real tmpfs, filled):
a failure leaves nothing that changes how the graph opens, and a fork that could not read its
parent fails, saying so in words the customer can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provisioning_pipelines.errors import EngineError
from provisioning_pipelines.flows import (
    BACKUP_FLOW,
    GRAPH_FLOW,
    RESTORE_FLOW,
    SUBGRAPH_FLOW,
    BackupConfig,
    RestoreConfig,
    SubgraphConfig,
    SubscriptionConfig,
)
from provisioning_pipelines.storage.db import Database, get_database
from provisioning_pipelines.storage.ladybug import LadybugEngine, sidecars
from provisioning_pipelines.storage.ladybug import backups as backup_files
from tests.conftest import make_resources
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import run_direct
from tests.full_disk import SmallDisk, small_disk, unfinished_checkpoint

__all__ = ["small_disk"]

ROWS = 5000
ENTITIES = (f"UNWIND range(1, {ROWS}) AS i CREATE (:Entity {{identifier: 'e' + string(i), "
            "name: 'an entity with a name long enough to take some room ' + string(i)})")


def on_disk(database_url: str, disk: SmallDisk) -> dict[str, Any]:
    """Graphs and backups on the one small disk, as on a host whose backups are local."""
    return make_resources(database_url, disk.root / "graphs",
                          BACKUP_DIR=str(disk.root / "backups"))


def a_graph_with_rows(database: Database, resources: dict[str, Any], *,
                      write: Any = None) -> tuple[str, str, Path]:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user, plan_name="ladybug-large")
    made = run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id), resources)
    path = Path(made.result["database_path"])
    (write or (lambda p: LadybugEngine().execute(p, [ENTITIES])))(path)
    return user.user_id, made.result["graph_id"], path


def stray_files(disk: SmallDisk) -> list[str]:
    """Temp files and fork workspaces anywhere on the disk."""
    return sorted(str(p.relative_to(disk.root)) for p in disk.root.rglob(".*")
                  if p.name != ".templates" and ".templates" not in p.parent.parts)


@pytest.mark.parametrize("where", ["before the copy", "half-way through the copy"])
def test_a_backup_that_runs_out_of_room_leaves_nothing_and_the_graph_forks_whole(
        small_disk: SmallDisk, database_url: str, where: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    database = get_database(database_url)
    resources = on_disk(database_url, small_disk)
    user_id, graph_id, path = a_graph_with_rows(database, resources)
    if where == "half-way through the copy":  # the room went after the check: the copy fills
        monkeypatch.setattr(backup_files, "ensure_room", lambda *a: None, raising=False)
    small_disk.fill(leave=path.stat().st_size // 2)

    with pytest.raises(EngineError, match="space"):
        run_direct(BACKUP_FLOW, BackupConfig(graph_id=graph_id), resources)

    assert sidecars(path) == [] and stray_files(small_disk) == []
    assert LadybugEngine().count_rows(path)["Entity"] == ROWS  # read on the disk still full
    small_disk.empty()
    fork = run_direct(SUBGRAPH_FLOW, SubgraphConfig(
        user_id=user_id, parent_graph_id=graph_id, name="copy", fork_parent=True), resources)
    assert fork.result["fork_status"] == "completed", fork.result
    assert fork.result["rows_copied"]["Entity"] == ROWS


def test_a_fork_whose_parent_cannot_be_read_fails_and_says_why(
        small_disk: SmallDisk, database_url: str) -> None:
    database = get_database(database_url)
    resources = on_disk(database_url, small_disk)
    # The parent's last checkpoint ran out of room; the disk stays nearly full: room for the
    # subgraph's empty file, none to finish the parent's checkpoint.
    user_id, graph_id, path = a_graph_with_rows(database, resources, write=lambda p: (
        unfinished_checkpoint(p, ENTITIES, small_disk, leave=1_000_000)))
    assert [s.name[len(path.name):] for s in sidecars(path)].count(".shadow") == 1
    small_disk.release(512 * 1024)

    fork = run_direct(SUBGRAPH_FLOW, SubgraphConfig(
        user_id=user_id, parent_graph_id=graph_id, name="early", fork_parent=True), resources)

    assert fork.result["fork_status"] == "failed", fork.result
    error = fork.result["fork_error"]
    assert error.startswith(f"the parent graph {graph_id} could not be read (its host has "
                            "run out of disk space), so nothing was copied"), error
    assert "exception" not in error.lower() and ".lbug" not in error
    assert LadybugEngine().count_rows(Path(fork.result["database_path"]))["Entity"] == 0

    small_disk.empty()  # the operator frees space: the next read finishes the checkpoint
    again = run_direct(SUBGRAPH_FLOW, SubgraphConfig(
        user_id=user_id, parent_graph_id=graph_id, name="later", fork_parent=True), resources)
    assert again.result["fork_status"] == "completed", again.result
    assert again.result["rows_copied"]["Entity"] == ROWS
    assert sidecars(path) == []


@pytest.mark.parametrize("where", ["before the copy", "half-way through the copy"])
def test_a_restore_that_runs_out_of_room_leaves_the_graph_as_it_was(
        small_disk: SmallDisk, database_url: str, where: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    database = get_database(database_url)
    resources = on_disk(database_url, small_disk)
    user_id, graph_id, path = a_graph_with_rows(database, resources)
    run_direct(BACKUP_FLOW, BackupConfig(graph_id=graph_id, backup_id="bk_full1"), resources)
    if where == "half-way through the copy":
        monkeypatch.setattr(backup_files, "ensure_room", lambda *a: None, raising=False)
    small_disk.fill(leave=path.stat().st_size // 2)

    with pytest.raises(EngineError, match="space"):
        run_direct(RESTORE_FLOW, RestoreConfig(user_id=user_id, graph_id=graph_id,
                                               backup_id="bk_full1"), resources)

    assert stray_files(small_disk) == []
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert LadybugEngine().count_rows(path)["Entity"] == ROWS
