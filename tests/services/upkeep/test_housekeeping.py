"""The sweep of what crashes leave on disk: old temp files and fork workspaces go, graph files
that no row owns are quarantined, and nothing young or owned is touched."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dagster import DagsterInstance
from sqlalchemy import select, update

from provisioning_pipelines.flows import GRAPH_FLOW, SubscriptionConfig
from provisioning_pipelines.services import webhooks
from provisioning_pipelines.services.upkeep import housekeeping
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import WebhookEvent
from tests.api.helpers import make_api
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import run_direct


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
