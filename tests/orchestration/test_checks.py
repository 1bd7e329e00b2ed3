"""The operator's asset checks, run as Dagster runs them, and the run-failure sensor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import DagsterInstance, Definitions, build_run_status_sensor_context
from sqlalchemy import select, update

from provisioning_pipelines.flows import (
    DELETION_FLOW,
    GRAPH_FLOW,
    SUBGRAPH_FLOW,
    SUSPENSION_FLOW,
    DeletionConfig,
    LifecycleConfig,
    SubgraphConfig,
    SubscriptionConfig,
)
from provisioning_pipelines.orchestration.assets import ASSETS
from provisioning_pipelines.orchestration.checks import (
    CHECKS,
    build_run_failure_sensor,
    provisioning_checks_job,
)
from provisioning_pipelines.orchestration.jobs import JOBS
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import AuditLogEntry, Graph, GraphHost
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import run_direct


def run_checks(resources: dict[str, Any], instance: DagsterInstance) -> dict[str, Any]:
    definitions = Definitions(assets=ASSETS, asset_checks=CHECKS,
                              jobs=[provisioning_checks_job], resources=resources)
    result = definitions.resolve_job_def("provisioning_checks_job").execute_in_process(
        instance=instance)
    assert result.success
    return {evaluation.check_name: evaluation
            for evaluation in result.get_asset_check_evaluations()}


def test_checks_pass_on_a_healthy_install_and_name_what_breaks(
    database: Database, resources: dict[str, Any], graph_dir: Path,
    dagster_instance: DagsterInstance,
) -> None:
    user = new_customer(database)
    made = [run_direct(GRAPH_FLOW, SubscriptionConfig(
        subscription_id=paid_graph_subscription(database, user)), resources).result
            for _ in range(2)]

    healthy = run_checks(resources, dagster_instance)
    assert {name: check.passed for name, check in healthy.items()} == {
        "graph_files_hold_their_schema": True, "hosts_within_capacity": True,
        "files_match_rows": True}
    assert healthy["graph_files_hold_their_schema"].metadata["graphs_checked"].value == 2

    Path(made[0]["database_path"]).unlink()  # a file lost
    (Path(made[1]["database_path"]).parent / "kg9999999999999999.lbug").write_bytes(b"stray")
    with database.session() as session:  # a slot count gone wrong
        session.execute(update(GraphHost).where(GraphHost.id == made[1]["host_id"])
                        .values(slots_used=7))

    broken = run_checks(resources, dagster_instance)
    assert not any(check.passed for check in broken.values())
    files = broken["files_match_rows"].metadata["findings"].value
    host = made[1]["host_id"]
    assert f"{made[0]['graph_id']}: no file on host {made[0]['host_id']}" in files
    assert f"kg9999999999999999: a graph file on host {host} no row places there" in files
    assert made[0]["graph_id"] in broken["graph_files_hold_their_schema"].metadata[
        "findings"].value
    assert "slots_used is 7 but 2 graphs live there" in broken["hosts_within_capacity"].metadata[
        "findings"].value


def test_a_failed_provisioning_run_is_recorded_by_the_sensor(
    database: Database, resources: dict[str, Any], dagster_instance: DagsterInstance,
) -> None:
    unpaid = paid_graph_subscription(database, new_customer(database), paid=False)
    result = JOBS["graph"].execute_in_process(
        run_config=GRAPH_FLOW.run_config(SubscriptionConfig(subscription_id=unpaid)),
        instance=dagster_instance, resources=resources, raise_on_error=False,
        tags=GRAPH_FLOW.run_tags(SubscriptionConfig(subscription_id=unpaid)))
    assert not result.success
    failure = next(event for event in result.all_events if event.is_run_failure)
    run = dagster_instance.get_run_by_id(result.run_id)
    sensor = build_run_failure_sensor()

    sensor(build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_event=failure, dagster_instance=dagster_instance,
        dagster_run=run, resources={"database": resources["database"]}).for_run_failure())

    with database.session() as session:
        entry = session.scalar(select(AuditLogEntry).where(
            AuditLogEntry.action == "run.failed"))
        assert entry is not None and entry.subject_id == unpaid
        assert entry.details["run_id"] == result.run_id
        assert "not paid yet" in entry.details["error"]
        assert session.scalar(select(Graph.id)) is None


def test_a_business_refusal_is_one_line_in_the_run(
    database: Database, resources: dict[str, Any], dagster_instance: DagsterInstance,
) -> None:
    unpaid = paid_graph_subscription(database, new_customer(database), paid=False)
    result = JOBS["graph"].execute_in_process(
        run_config=GRAPH_FLOW.run_config(SubscriptionConfig(subscription_id=unpaid)),
        instance=dagster_instance, resources=resources, raise_on_error=False)

    [failure] = [event for event in result.all_events if event.is_step_failure]
    error = failure.step_failure_data.error
    assert error.message.strip().endswith("is not paid yet (status pending_payment)")
    assert error.cause is None  # no chained stack trace of our own code
    metadata = {key: value.value for key, value in
                failure.step_failure_data.user_failure_data.metadata.items()}
    assert metadata == {"error": "PaymentRequired", "step": "claim_subscription",
                        "field": "subscription_id"}


def test_checks_stay_green_after_a_deletion_a_suspension_and_a_subgraph(
    database: Database, resources: dict[str, Any], dagster_instance: DagsterInstance,
) -> None:
    user = new_customer(database)
    made = [run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=paid_graph_subscription(
        database, user, plan_name="ladybug-large")), resources).result for _ in range(3)]
    deleted, suspended, _active = (graph["graph_id"] for graph in made)
    run_direct(SUBGRAPH_FLOW, SubgraphConfig(user_id=user.user_id, parent_graph_id=suspended,
                                             name="child"), resources)
    run_direct(DELETION_FLOW, DeletionConfig(graph_id=deleted, at_once=True,
                                             reason="graphs delete --now"), resources)
    run_direct(SUSPENSION_FLOW, LifecycleConfig(graph_id=suspended), resources)

    checks = run_checks(resources, dagster_instance)

    assert {name: (check.passed, check.metadata["findings"].value)
            for name, check in checks.items()} == {
        "graph_files_hold_their_schema": (True, "none"), "hosts_within_capacity": (True, "none"),
        "files_match_rows": (True, "none")}
    # the suspended graph, its subgraph and the active one; not the tombstone
    assert checks["graph_files_hold_their_schema"].metadata["graphs_checked"].value == 3
