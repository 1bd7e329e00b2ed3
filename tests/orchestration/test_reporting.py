"""The background reporter: bounded, with a deadline per report, never piling up."""

from __future__ import annotations

from typing import Any

from dagster import AssetKey, AssetMaterialization, DagsterInstance

from provisioning_pipelines.orchestration.reporting import MaterializationReporter
from provisioning_pipelines.storage.events import InMemoryOperationStore


def graph_materialization(graph_id: str) -> AssetMaterialization:
    return AssetMaterialization(asset_key=AssetKey(["provisioning", "graph"]),
                                metadata={"graph_id": graph_id})


def test_a_burst_of_reports_to_a_hung_instance_does_not_pile_up(
    hanging_dagster: tuple[DagsterInstance, Any],
) -> None:
    instance, lock = hanging_dagster
    store = InMemoryOperationStore()
    reporter = MaterializationReporter(instance, store, timeout=1, max_workers=1, max_pending=2)
    operations = [store.create("graph_provisioning").id for _ in range(5)]

    for operation_id in operations:
        reporter.submit(operation_id, graph_materialization("kg0"))

    outcomes = [store.get(o).dagster_report for o in operations]
    assert outcomes[2:] == ["error"] * 3  # refused at once, not queued
    assert "too many reports pending" in store.get(operations[4]).dagster_report_detail
    assert reporter.wait_idle(10)
    assert [store.get(o).dagster_report for o in operations[:2]] == ["timeout", "timeout"]
    lock.rollback()
    reporter.close()
    reporter.join()


def test_clean_shutdown_waits_for_pending_reports(
    dagster_instance: DagsterInstance,
) -> None:
    store = InMemoryOperationStore()
    reporter = MaterializationReporter(dagster_instance, store, timeout=10)
    operations = [store.create("graph_provisioning").id for _ in range(5)]
    for operation_id in operations:
        reporter.submit(operation_id, graph_materialization(f"kg{operation_id[-16:]}"))

    reporter.close()

    assert [store.get(o).dagster_report for o in operations] == ["ok"] * 5
