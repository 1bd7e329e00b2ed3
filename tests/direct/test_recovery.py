"""Claims held by a heartbeat, work lost to a takeover told as such, lapsed work resumed."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

from provisioning_pipelines.direct import DirectExecutor
from provisioning_pipelines.direct.recovery import Recovery
from provisioning_pipelines.runtime.resources import GraphEngineResource
from provisioning_pipelines.services.provisioning import claims, leases
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.ladybug import LadybugEngine
from provisioning_pipelines.storage.models import Graph, Subscription, utcnow
from tests.conftest import make_policy
from tests.factories import new_customer, paid_graph_subscription


class GatedEngine(LadybugEngine):
    """Makes each database only once the test opens the gate."""

    gate = threading.Event()
    waiting = threading.Event()

    def ensure_database(self, path: Path, ddl: Any) -> bool:
        GatedEngine.waiting.set()
        assert GatedEngine.gate.wait(60), "the test never opened the gate"
        return super().ensure_database(path, ddl)


class GatedEngineResource(GraphEngineResource):
    def get(self) -> LadybugEngine:
        return GatedEngine(template_dir=Path(self.data_dir) / ".templates")


def gated(graph_dir: Path) -> GatedEngineResource:
    GatedEngine.gate.clear()
    GatedEngine.waiting.clear()
    return GatedEngineResource(data_dir=str(graph_dir), buffer_pool_mb=16, use_templates=True)


def row(database: Database, sub_id: str) -> Subscription:
    with database.session() as session:
        found = session.get(Subscription, sub_id)
        assert found is not None
        return found


def test_a_heartbeat_keeps_the_claim_while_the_work_outlasts_its_lease(
    database: Database, resources: dict[str, Any], graph_dir: Path,
) -> None:
    sub_id = paid_graph_subscription(database, new_customer(database))
    lease = 2.0
    executor = DirectExecutor({**resources, "graph_engine": gated(graph_dir),
                               "policy": make_policy(claim_lease_seconds=lease)})
    worker = threading.Thread(target=executor.graph, args=(sub_id,))
    worker.start()
    assert GatedEngine.waiting.wait(30)
    keeper = leases.keeper(database, lease)
    beats = keeper.beats

    time.sleep(lease * 2.5)  # it would have lapsed twice over without a heartbeat
    with database.session() as session:
        try:
            claims.claim(session, sub_id, lease_seconds=lease, max_attempts=3)
            taken_over = True
        except claims.ClaimHeld:
            taken_over = False
    GatedEngine.gate.set()
    worker.join(30)

    assert not taken_over
    assert keeper.beats - beats >= 3
    assert row(database, sub_id).status == "active" and row(database, sub_id).attempts == 1


def test_a_worker_whose_claim_was_taken_over_reports_the_other_workers_result(
    database: Database, resources: dict[str, Any], graph_dir: Path,
) -> None:
    sub_id = paid_graph_subscription(database, new_customer(database))
    stalled = DirectExecutor({**resources, "graph_engine": gated(graph_dir)})
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(stalled.graph(sub_id)))
    worker.start()
    assert GatedEngine.waiting.wait(30)
    with database.session() as session:  # as if the stalled worker had missed its heartbeats
        session.execute(update(Subscription).where(Subscription.id == sub_id)
                        .values(lease_expires_at=utcnow() - timedelta(seconds=1)))

    taken = DirectExecutor(resources).graph(sub_id)
    GatedEngine.gate.set()
    worker.join(30)

    [late] = results
    assert late.result["completed_by"] == "another worker"
    assert late.result["resource_id"] == taken.result["graph_id"]
    operation = stalled.store.get(late.operation_id)
    assert operation is not None and operation.status == "completed"  # not failed
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Graph)) == 1


def test_an_api_process_resumes_lapsed_work_and_continues_its_operation(
    database: Database, resources: dict[str, Any],
) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)
    executor = DirectExecutor(resources)
    operation_id = executor.open_operation("graph_provisioning", user.user_id)
    executor.store.start(operation_id)
    executor.store.progress(operation_id, "claimed by a worker that then died", 10)
    with database.session() as session:
        session.execute(update(Subscription).where(Subscription.id == sub_id).values(
            claim_token="dead-worker", attempts=1, operation_id=operation_id,
            lease_expires_at=utcnow() - timedelta(seconds=1)))
    recovery = Recovery(executor, interval=0.1, grace_seconds=30, sweep_interval=0,
                        stray_age_seconds=600)

    async def heal() -> None:
        recovery.start()
        try:
            while row(database, sub_id).status != "active":
                await asyncio.sleep(0.05)
            while executor.store.get(operation_id).status != "completed" or \
                    recovery.resumed < 1:
                await asyncio.sleep(0.05)
        finally:
            await recovery.stop()

    asyncio.run(asyncio.wait_for(heal(), 60))

    assert row(database, sub_id).attempts == 2
    events = [event.type for event in executor.store.events(operation_id)]
    assert events[0] == "operation_started" and events[-1] == "operation_completed"
    assert recovery.resumed == 1
    executor.close()


def test_an_operation_left_open_by_a_worker_that_died_after_settling_is_ended(
    database: Database, resources: dict[str, Any],
) -> None:
    user = new_customer(database)
    executor = DirectExecutor(resources)
    done, failed = (paid_graph_subscription(database, user) for _ in range(2))
    executor.graph(done)
    orphans = {}
    for sub_id, status, error in ((done, "active", None), (failed, "failed", "disk full")):
        operation_id = executor.open_operation("graph_provisioning", user.user_id)
        executor.store.start(operation_id)  # the worker died before it could end this
        with database.session() as session:
            session.execute(update(Subscription).where(Subscription.id == sub_id).values(
                status=status, last_error=error, operation_id=operation_id,
                updated_at=utcnow() - timedelta(minutes=5)))
        orphans[status] = operation_id
    recovery = Recovery(executor, interval=0, grace_seconds=15, sweep_interval=0,
                        stray_age_seconds=600)

    assert recovery.end_orphaned_operations() == 2
    assert recovery.end_orphaned_operations() == 0  # each once

    completed = executor.store.get(orphans["active"])
    assert completed.status == "completed"
    assert completed.result["completed_by"] == "another worker"
    assert completed.result["subscription_id"] == done
    failed_op = executor.store.get(orphans["failed"])
    assert failed_op.status == "failed" and failed_op.error == "disk full"
    executor.close()
