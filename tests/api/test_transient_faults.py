"""An operation ends once, truthfully: a transient fault in one attempt is a progress event on
the customer's operation, the next attempt (the resumer here) continues that same operation to
``completed``, and only the last attempt's failure ends it ``failed``, with a sentence and a
code, never a server path, a host, a port or a driver's message.

Faults are real: the database is cut through a TCP proxy in front of the shared PostgreSQL, and
the disk fills (``OSError(ENOSPC)``) at the lowest write of a new graph, the copy of the schema
template into its temp file (``LadybugEngine._copy``). Events are in the real Redis store.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

from dagster import DagsterInstance

from provisioning_pipelines.runtime.resources import GraphEngineResource
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.services.billing.events import billing_event
from provisioning_pipelines.services.graphs.records import graph_id_for_subscription
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.ladybug import LadybugEngine
from tests.api.helpers import Api, make_api, serve
from tests.conftest import REDIS_URL, make_resources
from tests.factories import new_customer, paid_graph_subscription
from tests.faults import FullDiskEngine, FullDiskEngineResource
from tests.tcp_proxy import TcpProxy

#: A claim lapses, and the resumer looks, quickly: the next attempt starts within a second or so.
FAST = {"PROVISIONING_CLAIM_LEASE_SECONDS": 1, "PROVISIONING_RESUME_INTERVAL_SECONDS": 0.2}
ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[\w.-]+/)+[\w.-]*")


class GatedEngine(LadybugEngine):
    """Holds the first graph's file until the test opens the gate."""

    gate = threading.Event()
    waiting = threading.Event()

    def ensure_database(self, path: Path, ddl: Any) -> bool:
        if not GatedEngine.gate.is_set():
            GatedEngine.waiting.set()
            assert GatedEngine.gate.wait(60), "the test never opened the gate"
        return super().ensure_database(path, ddl)


class GatedEngineResource(GraphEngineResource):
    def get(self) -> LadybugEngine:
        return GatedEngine(template_dir=Path(self.data_dir) / ".templates")


def app_on(database: Database, graph_dir: Path, instance: DagsterInstance, prefix: str,
           engine: GraphEngineResource, **settings: Any) -> tuple[Any, Any]:
    values = {"REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": prefix, **FAST, **settings}
    resources = {**make_resources(database.url, graph_dir, **values), "graph_engine": engine}
    return make_api(database, resources, instance, **values)


def leaks(events: list[tuple[str, str, dict[str, Any]]], *secrets: str) -> list[str]:
    """What of the events a customer should never read: paths, hosts, ports, driver text."""
    found = []
    for _, _, data in events:
        text = json.dumps(data)
        found += ABSOLUTE_PATH.findall(text)
        found += [word for word in ("127.0.0.1", "localhost", "Errno", "psycopg2",
                                    "OperationalError", *secrets) if word in text]
    return found


def attempts(database: Database, sub_id: str) -> int:
    with database.session() as session:
        return billing.get_subscription(session, sub_id).attempts


def retries(events: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    return [data["message"] for _, kind, data in events
            if kind == "operation_progress" and "failed:" in data["message"]]


def test_a_full_disk_in_the_first_attempt_is_retried_under_the_customers_operation(
    postgres_database: Database, graph_dir: Path, dagster_instance: DagsterInstance,
    redis_prefix: str,
) -> None:
    FullDiskEngine.fills = 1
    engine = FullDiskEngineResource(data_dir=str(graph_dir), buffer_pool_mb=16,
                                    use_templates=True)
    app, executor = app_on(postgres_database, graph_dir, dagster_instance, redis_prefix, engine)
    user = new_customer(postgres_database)
    sub_id = paid_graph_subscription(postgres_database, user, paid=False)
    with serve(app) as base:
        api = Api(base, postgres_database, executor)
        answer = api.deliver(billing_event(sub_id, event_id=f"evt_{sub_id}"))
        operation_id = answer.json()["operation_id"]
        events = api.events(user.api_key, operation_id)
        with api.client(user.api_key) as client:
            operation = client.get(f"/v1/operations/{operation_id}").json()
            subscription = client.get(f"/v1/subscriptions/{sub_id}").json()
    executor.close()

    assert FullDiskEngine.fills == 0  # the fault happened
    assert retries(events) == ["attempt 1 of 3 failed: the disk was full; retrying shortly"]
    kinds = [kind for _, kind, _ in events]
    assert kinds.count("operation_completed") == 1 and "operation_error" not in kinds
    assert kinds[-1] == "operation_completed"
    graph_id = graph_id_for_subscription(sub_id)
    assert events[-1][2]["result"]["graph_id"] == graph_id
    assert operation["status"] == "completed" and operation["error"] is None
    assert subscription["status"] == "active" and attempts(postgres_database, sub_id) == 2
    assert leaks(events, str(graph_dir)) == []


def test_a_disk_that_stays_full_fails_the_operation_once_with_a_sentence_and_a_code(
    postgres_database: Database, graph_dir: Path, dagster_instance: DagsterInstance,
    redis_prefix: str,
) -> None:
    FullDiskEngine.fills = 1000
    engine = FullDiskEngineResource(data_dir=str(graph_dir), buffer_pool_mb=16,
                                    use_templates=True)
    app, executor = app_on(postgres_database, graph_dir, dagster_instance, redis_prefix, engine,
                           PROVISIONING_MAX_ATTEMPTS=2)
    user = new_customer(postgres_database)
    sub_id = paid_graph_subscription(postgres_database, user, paid=False)
    with serve(app) as base:
        api = Api(base, postgres_database, executor)
        operation_id = api.deliver(billing_event(sub_id, event_id=f"evt_{sub_id}")
                                   ).json()["operation_id"]
        events = api.events(user.api_key, operation_id)
        with api.client(user.api_key) as client:
            operation = client.get(f"/v1/operations/{operation_id}").json()
            subscription = client.get(f"/v1/subscriptions/{sub_id}").json()
    executor.close()

    assert retries(events) == ["attempt 1 of 2 failed: the disk was full; retrying shortly"]
    errors = [data for _, kind, data in events if kind == "operation_error"]
    assert errors == [events[-1][2]]  # failed once, and last
    assert errors[0]["error"] == "the disk was full"
    assert errors[0]["error_code"] == "disk_full"
    assert operation["status"] == "failed" and operation["error_code"] == "disk_full"
    assert subscription["status"] == "failed" and subscription["error"] == "the disk was full"
    assert leaks(events, str(graph_dir)) == []


def test_a_database_cut_in_the_first_attempt_is_retried_under_the_customers_operation(
    cut_off_database: tuple[Database, TcpProxy], graph_dir: Path,
    dagster_instance: DagsterInstance, redis_prefix: str,
) -> None:
    database, proxy = cut_off_database
    GatedEngine.gate.clear()
    GatedEngine.waiting.clear()
    engine = GatedEngineResource(data_dir=str(graph_dir), buffer_pool_mb=16, use_templates=True)
    app, executor = app_on(database, graph_dir, dagster_instance, redis_prefix, engine)
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user, paid=False)
    with serve(app) as base:
        api = Api(base, database, executor)
        operation_id = api.deliver(billing_event(sub_id, event_id=f"evt_{sub_id}")
                                   ).json()["operation_id"]
        assert GatedEngine.waiting.wait(30)  # the first attempt's rows are in; its file is next
        proxy.stop()  # PostgreSQL goes away: open connections reset, new ones refused
        GatedEngine.gate.set()
        deadline = time.monotonic() + 60
        while not any("failed:" in e.data.get("message", "")
                      for e in executor.store.events(operation_id)):
            assert time.monotonic() < deadline, executor.store.events(operation_id)
            time.sleep(0.05)
        assert not executor.store.get(operation_id).is_terminal  # type: ignore[union-attr]
        proxy.start()  # back; the lapsed claim is resumed
        events = api.events(user.api_key, operation_id)
        with api.client(user.api_key) as client:
            subscription = client.get(f"/v1/subscriptions/{sub_id}").json()
    executor.close()

    assert retries(events) == [
        "attempt 1 of 3 failed: the database was unavailable; retrying in 1 s"]
    kinds = [kind for _, kind, _ in events]
    assert "operation_error" not in kinds and kinds[-1] == "operation_completed"
    assert events[-1][2]["result"]["graph_id"] == graph_id_for_subscription(sub_id)
    assert subscription["status"] == "active" and attempts(database, sub_id) == 2
    assert leaks(events, str(proxy.port), str(graph_dir)) == []
