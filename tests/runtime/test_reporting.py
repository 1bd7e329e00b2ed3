"""The background reporter: bounded, with a deadline per report, never piling up, holding its
connection to Dagster's database."""

from __future__ import annotations

from typing import Any

from dagster import AssetKey, AssetMaterialization, DagsterInstance, instance_for_test
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from provisioning_pipelines.runtime.reporting import MaterializationReporter
from provisioning_pipelines.storage.events import InMemoryOperationStore
from tests.conftest import POSTGRES_URL, create_postgres_database, drop_postgres_database


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


def test_an_instance_the_reporter_makes_keeps_its_connection_between_reports(
    postgres_server: str,
) -> None:
    """dagster-postgres connects afresh for every write unless told otherwise: a reporter in a
    long-lived API process holds a connection, so a burst of reports costs no new server
    processes."""
    url = create_postgres_database("pp_report")
    try:
        with instance_for_test(overrides={"storage": {"postgres": {"postgres_url": url}}}) \
                as instance:
            store = InMemoryOperationStore()
            reporter = MaterializationReporter(lambda: instance, store, timeout=10,
                                               max_workers=1)
            operations = [store.create("graph_provisioning").id for _ in range(3)]
            for operation_id in operations:
                reporter.submit(operation_id, graph_materialization(f"kg{operation_id[-16:]}"))
            assert reporter.wait_idle(30)

            assert [store.get(o).dagster_report for o in operations] == ["ok"] * 3
            assert _connections_to(url) >= 1  # held open in the pool, not closed after each
            reporter.close()
            reporter.join()
    finally:
        drop_postgres_database(url)


def _connections_to(url: str) -> int:
    engine = create_engine(POSTGRES_URL)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"),
                {"name": make_url(url).database}))
    finally:
        engine.dispose()


def test_reports_that_wait_together_land_together_each_asset_with_its_latest(
    hanging_dagster: tuple[DagsterInstance, Any],
) -> None:
    """Reports queued behind a slow write go in batches, one per asset key: every one lands in
    the asset's history, in order, and each asset's latest is its own last report."""
    instance, lock = hanging_dagster
    store = InMemoryOperationStore()
    reporter = MaterializationReporter(instance, store, timeout=60, max_workers=1)
    keys = [AssetKey(["provisioning", "graph"]), AssetKey(["provisioning", "subscription"])]
    operations = [store.create("graph_provisioning").id for _ in range(30)]
    for index, operation_id in enumerate(operations):  # the first holds the worker up
        reporter.submit(operation_id, AssetMaterialization(
            asset_key=keys[index % 2], metadata={"index": index}))
    lock.rollback()

    assert reporter.wait_idle(60)

    assert [store.get(o).dagster_report for o in operations] == ["ok"] * 30
    for parity, key in enumerate(keys):
        history = instance.fetch_materializations(key, limit=100).records
        indexes = [r.asset_materialization.metadata["index"].value for r in history]
        assert sorted(indexes) == list(range(parity, 30, 2))
        latest = instance.get_latest_materialization_event(key)
        assert latest.asset_materialization.metadata["index"].value == 28 + parity
    reporter.close()
    reporter.join()
