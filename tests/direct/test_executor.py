"""The direct executor and helper API: same flows as the jobs, operation events, background
reports to Dagster, and what happens when Redis or Dagster's storage misbehave."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, DagsterInstance
from sqlalchemy import select

from provisioning_pipelines import direct
from provisioning_pipelines.direct import DirectExecutor
from provisioning_pipelines.flows import GRAPH_FLOW, SubscriptionConfig
from provisioning_pipelines.runtime.reporting import MaterializationReporter
from provisioning_pipelines.runtime.resources import GraphEngineResource
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.ladybug import LadybugEngine
from provisioning_pipelines.storage.models import CreditPool, Graph, GraphSchema, Subscription
from tests.conftest import make_resources
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import run_job


def materializations(instance: DagsterInstance, key: list[str]) -> list[Any]:
    records = instance.fetch_materializations(AssetKey(key), limit=1000).records
    return [r.event_log_entry.asset_materialization for r in records]


@pytest.fixture
def executor(resources: dict[str, Any], dagster_instance: DagsterInstance
             ) -> Iterator[DirectExecutor]:
    store = resources["operation_events"].get()
    reporter = MaterializationReporter(dagster_instance, store, timeout=10)
    executor = DirectExecutor(resources, reporter=reporter, max_concurrency=8)
    yield executor
    executor.close()


def test_direct_path_and_dagster_job_make_the_same_graph(
    database: Database, resources: dict[str, Any], dagster_instance: DagsterInstance,
    executor: DirectExecutor,
) -> None:
    user = new_customer(database)
    request = {"schema_extensions": ["crm", "supply_chain"], "entity": {"name": "Acme"}}
    direct_sub = paid_graph_subscription(database, user, plan_name="ladybug-large", **request)
    job_sub = paid_graph_subscription(database, user, plan_name="ladybug-large", **request)

    made = executor.graph(direct_sub)
    ran = run_job(GRAPH_FLOW, SubscriptionConfig(subscription_id=job_sub),
                  instance=dagster_instance, resources=resources)
    assert ran.success and executor.reporter.wait_idle(10)

    with database.session() as session:
        graphs = {sub: session.get(Graph, session.get(Subscription, sub).resource_id)
                  for sub in (direct_sub, job_sub)}
        ignore = {"id", "subscription_id", "database_path", "created_at"}
        columns = [c.key for c in Graph.__table__.columns if c.key not in ignore]
        rows = [{c: getattr(g, c) for c in columns} for g in graphs.values()]
        assert rows[0] == rows[1]
        ddl = [session.scalar(select(GraphSchema.ddl).where(GraphSchema.graph_id == g.id))
               for g in graphs.values()]
        assert ddl[0] == ddl[1]
        balances = [session.scalar(select(CreditPool.balance)
                                   .where(CreditPool.graph_id == g.id)) for g in graphs.values()]
        assert balances == [50_000, 50_000]
    engine = LadybugEngine()
    paths = [Path(g.database_path) for g in graphs.values()]
    assert engine.list_tables(paths[0]) == engine.list_tables(paths[1])
    assert engine.count_rows(paths[0]) == engine.count_rows(paths[1])

    # Only this test's two graphs: the instance is shared with other tests' reports.
    ours = {made.result["graph_id"], graphs[job_sub].id}
    history = materializations(dagster_instance, ["provisioning", "graph"])
    by_graph = {m.metadata["graph_id"].value: m.metadata["provisioning_method"].value
                for m in history if m.metadata["graph_id"].value in ours}
    assert by_graph[made.result["graph_id"]] == "direct"
    assert by_graph[graphs[job_sub].id] == "dagster"
    assert executor.store.get(made.operation_id).dagster_report == "ok"


def test_direct_run_streams_its_progress_in_order(
    database: Database, executor: DirectExecutor
) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)

    made = executor.graph(sub_id)

    events = executor.store.events(made.operation_id)
    types = [e.type for e in events]
    assert types[0] == "operation_started" and types[-1] == "operation_completed"
    assert set(types[1:-1]) == {"operation_progress"} and len(types) >= 4
    percents = [e.data["progress"] for e in events]
    assert percents == sorted(percents) and percents[-1] == 100
    operation = executor.store.get(made.operation_id)
    assert operation.status == "completed" and operation.user_id == user.user_id
    assert operation.result["graph_id"] == made.result["graph_id"]


def test_failed_provisioning_raises_and_ends_the_operation_with_the_error(
    database: Database, executor: DirectExecutor
) -> None:
    from provisioning_pipelines.errors import PaymentRequired

    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user, paid=False)
    operation_id = f"op_{uuid.uuid4().hex}"
    with pytest.raises(PaymentRequired) as refused:
        executor.graph(sub_id, operation_id=operation_id)
    operation = executor.store.get(operation_id)
    assert operation.status == "failed" and operation.error == refused.value.message
    assert executor.store.events(operation_id)[-1].type == "operation_error"


class FlakyEngine(LadybugEngine):
    """Loses its first write to a transient I/O error, as a flaky network disk might."""

    failures_left = 1

    def ensure_database(self, path: Path, ddl: Any) -> bool:
        if FlakyEngine.failures_left:
            FlakyEngine.failures_left -= 1
            raise OSError("transient I/O error")
        return super().ensure_database(path, ddl)


class FlakyEngineResource(GraphEngineResource):
    def get(self) -> LadybugEngine:
        return FlakyEngine()


def test_executor_honours_the_steps_retry_policy(
    database: Database, resources: dict[str, Any], graph_dir: Path
) -> None:
    FlakyEngine.failures_left = 1
    engine = FlakyEngineResource(data_dir=str(graph_dir), buffer_pool_mb=16, use_templates=True)
    executor = DirectExecutor({**resources, "graph_engine": engine})
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)

    made = executor.graph(sub_id)

    assert FlakyEngine.failures_left == 0
    with database.session() as session:
        sub = session.get(Subscription, sub_id)
        assert (sub.status, sub.attempts) == ("active", 1)
    assert Path(made.result["database_path"]).exists()


class PairingEngine(LadybugEngine):
    """Counts the databases being made at once, and makes calls meet in pairs at a barrier:
    a pair can only pass if two calls really run at the same time."""

    barrier = threading.Barrier(2, timeout=60)
    lock = threading.Lock()
    running = 0
    most = 0
    unpaired = 0

    def ensure_database(self, path: Path, ddl: Any) -> bool:
        with PairingEngine.lock:
            PairingEngine.running += 1
            PairingEngine.most = max(PairingEngine.most, PairingEngine.running)
        try:
            try:
                PairingEngine.barrier.wait()
            except threading.BrokenBarrierError:
                with PairingEngine.lock:
                    PairingEngine.unpaired += 1
            return super().ensure_database(path, ddl)
        finally:
            with PairingEngine.lock:
                PairingEngine.running -= 1


class PairingEngineResource(GraphEngineResource):
    def get(self) -> LadybugEngine:
        return PairingEngine(template_dir=Path(self.data_dir) / ".templates")


def test_at_most_max_concurrency_provisionings_run_at_once(
    database: Database, resources: dict[str, Any], graph_dir: Path
) -> None:
    PairingEngine.barrier.reset()
    PairingEngine.most = PairingEngine.unpaired = 0
    engine = PairingEngineResource(data_dir=str(graph_dir), buffer_pool_mb=16,
                                   use_templates=True)
    executor = DirectExecutor({**resources, "graph_engine": engine}, max_concurrency=2)
    user = new_customer(database)
    subs = [paid_graph_subscription(database, user) for _ in range(6)]

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(*(executor.run_async(executor.graph, s) for s in subs))

    results = asyncio.run(all_at_once())
    executor.close()
    assert len({r.result["graph_id"] for r in results}) == 6
    assert PairingEngine.unpaired == 0  # two ran at once, every time
    assert PairingEngine.most == 2  # and never more


def test_fifty_concurrent_calls_and_repeats_make_fifty_graphs(
    database: Database, resources: dict[str, Any], graph_dir: Path,
    dagster_instance: DagsterInstance,
) -> None:
    user = new_customer(database)
    subs = [paid_graph_subscription(database, user) for _ in range(50)]
    repeats = subs[:10]
    store = resources["operation_events"].get()
    executor = DirectExecutor(resources, max_concurrency=8,
                              reporter=MaterializationReporter(dagster_instance, store,
                                                               timeout=15))
    previous = direct.configure(executor)
    try:
        async def burst() -> list[Any]:
            calls = [direct.run_graph_provisioning(s) for s in subs + repeats]
            return await asyncio.gather(*calls)

        results = asyncio.run(burst())
    finally:
        direct.configure(previous)
        executor.close()

    graph_of = {}
    for sub_id, made in zip(subs + repeats, results, strict=True):
        graph_of.setdefault(sub_id, made.result["resource_id"])
        assert graph_of[sub_id] == made.result["resource_id"]
    assert len(set(graph_of.values())) == 50
    assert len({made.operation_id for made in results}) == 60
    with database.session() as session:
        assert len(session.scalars(select(Graph.id)).all()) == 50
        assert {s.status for s in session.scalars(select(Subscription))} == {"active"}
        paths = set(session.scalars(select(Graph.database_path)).all())
    files = {str(p) for p in graph_dir.rglob("*") if p.is_file() and ".templates" not in p.parts}
    assert files == paths  # no orphan files, no sidecars left behind


def test_hanging_dagster_storage_delays_nothing_and_reports_timeout(
    database: Database, resources: dict[str, Any],
    hanging_dagster: tuple[DagsterInstance, Any],
) -> None:
    instance, lock = hanging_dagster
    store = resources["operation_events"].get()
    timeout = 2.0
    executor = DirectExecutor(resources, reporter=MaterializationReporter(
        instance, store, timeout=timeout))
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)

    started = time.monotonic()
    made = executor.graph(sub_id)
    returned = time.monotonic() - started

    assert returned < timeout  # the helper did not wait for the hung report
    assert store.get(made.operation_id).status == "completed"
    assert store.get(made.operation_id).dagster_report is None  # still pending
    while store.get(made.operation_id).dagster_report is None:
        assert time.monotonic() - started < timeout + 1, "no timeout outcome in time"
        time.sleep(0.05)
    operation = store.get(made.operation_id)
    assert operation.dagster_report == "timeout"
    assert "2 s" in operation.dagster_report_detail
    lock.rollback()  # the stuck report may now finish; let it, before the database goes
    executor.reporter.close()
    executor.reporter.join()


def test_provisioning_succeeds_with_redis_stopped_and_says_so(
    database: Database, graph_dir: Path, own_redis: tuple[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, server = own_redis
    executor = DirectExecutor(make_resources(database.url, graph_dir, REDIS_URL=url,
                                             REDIS_KEY_PREFIX="stopped:"))
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)
    server.kill()
    server.wait()

    with caplog.at_level(logging.WARNING, logger="provisioning_pipelines"):
        made = executor.graph(sub_id)

    assert Path(made.result["database_path"]).exists()
    with database.session() as session:
        assert session.get(Subscription, sub_id).status == "active"
    warnings = [r.getMessage() for r in caplog.records if "event store unavailable" in
                r.getMessage()]
    assert len(warnings) == 1 and made.operation_id in warnings[0]
    assert executor._events.failures >= 3
