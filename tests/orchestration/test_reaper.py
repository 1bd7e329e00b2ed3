"""The reaper sensor and the daily backup schedule, evaluated through built contexts; the runs
they ask for are then run, as the daemon would, and settle what was out of step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    DagsterInstance,
    RunRequest,
    SensorResult,
    build_schedule_context,
    build_sensor_context,
)
from sqlalchemy import select, update

from provisioning_pipelines.flows import (
    BACKUP_FLOW,
    FLOWS,
    GRAPH_FLOW,
    REPOSITORY_FLOW,
    SUSPENSION_FLOW,
    BackupConfig,
    LifecycleConfig,
    RestoreConfig,
    SubscriptionConfig,
)
from provisioning_pipelines.flows.backup import plan_restore
from provisioning_pipelines.orchestration.reaper import (
    lifecycle_reaper_sensor,
)
from provisioning_pipelines.orchestration.schedules import daily_graph_backups
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.graphs import backups, lifecycle, restores
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import (
    AuditLogEntry,
    Graph,
    GraphBackup,
    Subscription,
    utcnow,
)
from tests.factories import new_customer, paid_graph_subscription, paid_repository_subscription
from tests.flows.helpers import direct_context, run_direct, run_job

JOBS_BY_NAME = {flow.job_name: flow for flow in FLOWS}


def reap(resources: dict[str, Any], *, alert_minutes: float = 15) -> SensorResult:
    sensor = lifecycle_reaper_sensor(interval_seconds=30, alert_minutes=alert_minutes)
    context = build_sensor_context(resources={"database": resources["database"],
                                              "graph_engine": resources["graph_engine"]})
    result = sensor(context)
    assert isinstance(result, SensorResult)
    return result


def requested(result: SensorResult) -> list[tuple[str, dict[str, Any]]]:
    """(job, the first op's config) of each run the sensor asked for."""
    found = []
    for request in result.run_requests or []:
        assert isinstance(request, RunRequest)
        ops = request.run_config["ops"]
        found.append((request.job_name, next(iter(ops.values()))["config"]))
    return sorted(found, key=str)


def run_requested(result: SensorResult, resources: dict[str, Any]) -> None:
    for job_name, config in requested(result):
        flow = JOBS_BY_NAME[job_name]
        run_direct(flow, flow.config_cls(**config), resources)


def provisioned(database: Database, resources: dict[str, Any]) -> tuple[str, str]:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)
    graph_id = run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                          resources).result["graph_id"]
    return sub_id, graph_id


def test_nothing_due_is_a_skip(database: Database, resources: dict[str, Any]) -> None:
    provisioned(database, resources)
    result = reap(resources)
    assert requested(result) == []
    assert "no lifecycle change is due" in str(result.skip_reason.skip_message)


def test_a_cancellation_nobody_acted_on_is_suspended_and_a_graph_past_its_grace_deleted(
        database: Database, resources: dict[str, Any]) -> None:
    cancelled_sub, cancelled_graph = provisioned(database, resources)
    expired_sub, expired_graph = provisioned(database, resources)
    _, untouched = provisioned(database, resources)
    with database.session() as session:  # billing said so, and nobody acted on it
        session.get(Subscription, cancelled_sub).status = "canceled"
    run_direct(SUSPENSION_FLOW, LifecycleConfig(subscription_id=expired_sub), resources)
    with database.session() as session:
        session.get(Graph, expired_graph).delete_after = utcnow() - timedelta(seconds=1)

    result = reap(resources)

    assert requested(result) == sorted([
        ("delete_graph_job", {"graph_id": expired_graph, "at_once": False, "actor": "reaper",
                              "reason": "the grace after cancellation is over"}),
        ("suspend_resource_job", {"subscription_id": cancelled_sub, "graph_id": None,
                                  "actor": "reaper",
                                  "reason": "billing ended the subscription"}),
    ], key=str)
    # A second tick in the same window asks again under the same run keys: Dagster launches once.
    assert [r.run_key for r in reap(resources).run_requests] == \
        [r.run_key for r in result.run_requests]

    run_requested(result, resources)

    with database.session() as session:
        states = {graph_id: session.get(Graph, graph_id).status
                  for graph_id in (cancelled_graph, expired_graph, untouched)}
    assert states == {cancelled_graph: "suspended", expired_graph: "deleted",
                      untouched: "active"}
    assert requested(reap(resources)) == []


def test_a_graph_no_subscription_pays_for_is_suspended(
        database: Database, resources: dict[str, Any]) -> None:
    """An earlier version's restores made graphs without a subscription: the reaper suspends
    them (deleted after the grace), and their owner restores into a paid graph instead."""
    _sub_id, graph_id = provisioned(database, resources)
    _paid_sub, paid_graph = provisioned(database, resources)
    with database.session() as session:
        session.get(Graph, graph_id).subscription_id = None

    result = reap(resources)

    assert requested(result) == [
        ("suspend_resource_job", {"subscription_id": None, "graph_id": graph_id,
                                  "actor": "reaper", "reason": "paid for by no subscription"})]
    run_requested(result, resources)
    with database.session() as session:
        assert session.get(Graph, graph_id).status == "suspended"
        assert session.get(Graph, paid_graph).status == "active"
    assert requested(reap(resources)) == []


def test_a_period_end_cancellation_waits_for_the_period_to_end(
        database: Database, resources: dict[str, Any]) -> None:
    sub_id, graph_id = provisioned(database, resources)
    with database.session() as session:
        session.get(Subscription, sub_id).cancel_at = utcnow() + timedelta(days=3)
    assert requested(reap(resources)) == []

    with database.session() as session:
        session.get(Subscription, sub_id).cancel_at = utcnow() - timedelta(seconds=1)
    run_requested(reap(resources), resources)

    with database.session() as session:
        assert session.get(Graph, graph_id).status == "suspended"
        assert session.get(Subscription, sub_id).status == "canceled"


def test_a_repository_subscription_cancelled_behind_our_back_loses_its_access(
        database: Database, resources: dict[str, Any]) -> None:
    user = new_customer(database)
    sub_id = paid_repository_subscription(database, user)
    run_direct(REPOSITORY_FLOW, SubscriptionConfig(subscription_id=sub_id), resources)
    with database.session() as session:
        session.get(Subscription, sub_id).status = "canceled"

    run_requested(reap(resources), resources)

    with database.session() as session:
        assert lifecycle.out_of_step(session, now=datetime.now(UTC)) == []


@pytest.mark.parametrize("swapped", [False, True], ids=["before the swap", "after the swap"])
def test_a_dead_restore_is_finished_or_undone_and_expired_backups_are_removed(
        database: Database, resources: dict[str, Any], swapped: bool) -> None:
    sub_id, graph_id = provisioned(database, resources)
    run_direct(BACKUP_FLOW, BackupConfig(graph_id=graph_id, backup_id="bk_old"), resources)
    engine = resources["graph_engine"].get()
    with database.session() as session:
        user_id = session.get(Subscription, sub_id).user_id
        path = Path(session.get(Graph, graph_id).database_path)
    engine.execute(path, ["CREATE (:Entity {identifier: 'later', name: 'Later'})"])
    later = engine.count_rows(path)["Entity"]
    # A restore whose worker died with the graph marked (its file replaced, or not yet).
    context = direct_context(resources)
    work = plan_restore(context, RestoreConfig(user_id=user_id, graph_id=graph_id,
                                               backup_id="bk_old"))
    with database.session() as session:
        graph = session.get(Graph, graph_id)
        restores.begin_restore(session, work.plan, graph, None)
    if swapped:  # the host swapped it in, and the worker died before its rows
        with database.session() as session:
            host = hosts.graph_host(session, resources["graph_engine"].hosts(), work.host_id)
        host.restore(graph_id, graph_id, "bk_old", work.plan.checksum)
    with database.session() as session:
        session.execute(update(Graph).where(Graph.id == graph_id).values(
            lifecycle_lease_expires_at=utcnow() - timedelta(seconds=1)))
        backup = session.get(GraphBackup, "bk_old")
        backup.expires_at = utcnow() - timedelta(seconds=1)
        backup_file = Path(backup.path)

    reap(resources)

    with database.session() as session:
        graph = session.get(Graph, graph_id)
        assert (graph.status, graph.lifecycle_token) == ("active", None)
        assert "restoring" not in graph.details
        assert ("restored_from" in graph.details) is swapped
        assert session.get(GraphBackup, "bk_old") is None
    assert engine.count_rows(path)["Entity"] == (later - 1 if swapped else later)
    assert not backup_file.exists() and not backup_file.with_suffix(".json").exists()


def test_a_paid_customer_without_a_resource_is_an_alert_once(
        database: Database, resources: dict[str, Any],
        capfd: pytest.CaptureFixture[str]) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)
    with database.session() as session:
        session.get(Subscription, sub_id).paid_at = utcnow() - timedelta(minutes=20)

    reap(resources)
    reap(resources)

    alerts = [line for line in capfd.readouterr().err.splitlines()
              if "ERROR - ALERT" in line and sub_id in line]
    assert len(alerts) == 2  # logged on every tick while it lasts
    with database.session() as session:
        recorded = session.scalars(select(AuditLogEntry.action).where(
            AuditLogEntry.subject_id == sub_id,
            AuditLogEntry.action == "alert.paid_without_resource")).all()
    assert recorded == ["alert.paid_without_resource"]  # written down once


def test_the_daily_schedule_backs_up_every_live_graph_once_a_day(
        database: Database, resources: dict[str, Any], dagster_instance: DagsterInstance) -> None:
    _, first = provisioned(database, resources)
    suspended_sub, suspended = provisioned(database, resources)
    _, deleted = provisioned(database, resources)
    run_direct(SUSPENSION_FLOW, LifecycleConfig(subscription_id=suspended_sub), resources)
    with database.session() as session:
        session.get(Graph, deleted).status = "deleted"
    day = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)

    context = build_schedule_context(scheduled_execution_time=day,
                                     resources={"database": resources["database"]})
    found = list(daily_graph_backups(context))

    assert sorted(r.run_key for r in found) == sorted(
        f"bk_daily_{g}_20261128" for g in (first, suspended))
    request = next(r for r in found if first in r.run_key)
    config = BackupConfig(**request.run_config["ops"]["claim_graph_for_backup"]["config"])
    result = run_job(BACKUP_FLOW, config, instance=dagster_instance, resources=resources)
    assert result.success
    with database.session() as session:
        backup = session.get(GraphBackup, f"bk_daily_{first}_20261128")
        assert backup is not None and backup.kind == "daily"
        assert backups.backups_of(session, first) == [backup]
