"""The sweep of what failures leave on disk: old temp files and fork workspaces go, graph files
that no row owns are quarantined, checkpoints a full disk cut short are finished, and nothing
young or owned is touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dagster import DagsterInstance
from sqlalchemy import select, update

from provisioning_pipelines.flows import (
    DELETION_FLOW,
    GRAPH_FLOW,
    DeletionConfig,
    SubscriptionConfig,
)
from provisioning_pipelines.services import webhooks
from provisioning_pipelines.services.upkeep import housekeeping
from provisioning_pipelines.storage.db import Database, get_database
from provisioning_pipelines.storage.ladybug import sidecars
from provisioning_pipelines.storage.models import WebhookEvent
from tests.api.helpers import make_api
from tests.conftest import make_resources
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import run_direct
from tests.full_disk import SmallDisk, small_disk, unfinished_checkpoint

__all__ = ["small_disk"]


def age(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def stale_file(path: Path, content: bytes = b"left behind") -> Path:
    path.write_bytes(content)
    return age(path, 3600)


def test_a_sweep_takes_only_what_is_stale_and_keeps_what_a_row_owns(
    database: Database, resources: dict[str, Any], graph_dir: Path,
) -> None:
    sub_id = paid_graph_subscription(database, new_customer(database))
    owned = Path(run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                            resources).result["database_path"])
    host = owned.parent
    old_temp = stale_file(host / f".{owned.name}.0123456789ab.tmp")
    young_temp = host / ".kg1111111111111111.lbug.abcdefabcdef.tmp"
    young_temp.write_bytes(b"being made right now")
    workspace = host / ".fork-kg1.lbug-x1"
    workspace.mkdir()
    age(workspace, 3600)
    orphan = stale_file(host / "kg2222222222222222.lbug")
    age(owned, 3600)

    with database.session() as session:
        report = housekeeping.sweep(session, graph_dir, min_age_seconds=600)

    assert not old_temp.exists()
    assert young_temp.exists() and owned.exists()
    assert not workspace.exists()
    assert not orphan.exists()
    assert [p.name.split(".lbug")[0] for p in (host / ".quarantine").iterdir()] == [
        "kg2222222222222222"]
    assert (report.temp_files_removed, report.fork_workspaces_removed,
            report.orphans_quarantined) == (1, 1, [str(orphan)])


KILLED_WRITER = """
import os, sys, ladybug
db = ladybug.Database(sys.argv[1], buffer_pool_size=64 << 20, max_db_size=1 << 30)
ladybug.Connection(db).execute("CREATE (:Entity {identifier: 'kept', name: 'In the WAL'})")
os._exit(9)
"""


def test_a_sweep_finishes_what_a_full_disk_cut_short_and_clears_half_written_copies(
    small_disk: SmallDisk, database_url: str,
) -> None:
    database = get_database(database_url)
    graphs, backups = small_disk.root / "graphs", small_disk.root / "backups"
    resources = make_resources(database_url, graphs, BACKUP_DIR=str(backups))
    engine = resources["graph_engine"].get()
    user = new_customer(database)
    cut, killed = (Path(run_direct(GRAPH_FLOW, SubscriptionConfig(
        subscription_id=paid_graph_subscription(database, user)), resources).result[
            "database_path"]) for _ in range(2))
    left = unfinished_checkpoint(cut, "UNWIND range(1, 5000) AS i CREATE (:Entity {identifier: "
                                 "'e' + string(i), name: 'a name that takes room ' + "
                                 "string(i)})", small_disk, leave=1_000_000)
    assert ".shadow" in left
    small_disk.empty()
    age(Path(f"{cut}.shadow"), 3600)
    subprocess.run([sys.executable, "-c", KILLED_WRITER, str(killed)], check=False)
    assert Path(f"{killed}.wal").exists()  # a live graph's WAL: harmless, and not ours to take
    host = cut.parent
    half_backup = backups / cut.stem / f".bk_daily_{cut.stem}_20250101.lbug.0123456789ab.tmp"
    half_backup.parent.mkdir(parents=True)
    stale_file(half_backup)
    half_template = stale_file(graphs / ".templates" / ".abc.lbug.0123456789ab.tmp")
    lone_sidecar = stale_file(host / "kg3333333333333333.lbug.shadow")

    with database.session() as session:
        report = housekeeping.sweep(session, graphs, min_age_seconds=600, engine=engine,
                                    backup_dir=backups)

    assert report.recovered == [os.path.realpath(cut)] and report.not_recovered == []
    assert sidecars(cut) == [] and engine.count_rows(cut)["Entity"] == 5000
    assert [p.name for p in sidecars(killed)] == [f"{killed.name}.wal"]
    assert engine.count_rows(killed)["Entity"] == 1
    assert not half_backup.exists() and not half_template.exists()
    assert not lone_sidecar.exists()
    assert report.sidecars_quarantined == [str(lone_sidecar)]
    assert [p.name.split(".lbug")[0] for p in (host / ".quarantine").iterdir()] == [
        "kg3333333333333333"]
    assert report.temp_files_removed == 2


def test_a_file_at_a_deleted_graphs_place_is_an_orphan(
    database: Database, resources: dict[str, Any], graph_dir: Path,
) -> None:
    sub_id = paid_graph_subscription(database, new_customer(database))
    made = run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id), resources).result
    run_direct(DELETION_FLOW, DeletionConfig(graph_id=made["graph_id"], at_once=True),
               resources)
    again = stale_file(Path(made["database_path"]), b"a copy put back by hand")

    with database.session() as session:
        report = housekeeping.sweep(session, graph_dir, min_age_seconds=600)

    assert report.orphans_quarantined == [str(again)] and not again.exists()


def record_event(database: Database, event_id: str, *, days_ago: float,
                 body: dict[str, Any] | None = None) -> str:
    """A billing event recorded as the webhook does, received ``days_ago``."""
    raw = json.dumps(body or {"id": event_id, "type": "charge.refunded", "created": 1,
                              "data": {"object": {}}})
    with database.session() as session:
        applied = webhooks.record_and_apply(session, webhooks.read(raw))
        session.execute(update(WebhookEvent).where(WebhookEvent.id == applied.event_id)
                        .values(received_at=datetime.now(UTC) - timedelta(days=days_ago)))
    return applied.event_id


def event_ids(database: Database) -> set[str]:
    with database.session() as session:
        return set(session.scalars(select(WebhookEvent.id)))


def test_billing_events_past_their_retention_are_removed_and_rejected_ones_kept(
    database: Database,
) -> None:
    old = record_event(database, "evt_old", days_ago=31)
    young = record_event(database, "evt_young", days_ago=29)
    rejected = record_event(database, "evt_rejected", days_ago=90,
                            body={"id": "evt_rejected", "type": "x", "data": "not an object"})

    with database.session() as session:
        removed = housekeeping.remove_old_webhook_events(session, retention_days=30)

    assert removed == 1
    assert old not in event_ids(database)
    assert {young, rejected} <= event_ids(database)


def test_the_api_process_sweeper_removes_them_after_webhook_retention_days(
    database: Database, resources: dict[str, Any], dagster_instance: DagsterInstance,
) -> None:
    app, executor = make_api(database, resources, dagster_instance, WEBHOOK_RETENTION_DAYS=5)
    old = record_event(database, "evt_six_days", days_ago=6)
    young = record_event(database, "evt_four_days", days_ago=4)

    app.state.recovery.sweep()
    executor.close()

    assert old not in event_ids(database) and young in event_ids(database)
