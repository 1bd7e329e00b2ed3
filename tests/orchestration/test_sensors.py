"""The subscription sensors, evaluated through built sensor contexts (no daemon)."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, RunRequest, SensorResult, build_sensor_context
from sqlalchemy import func, select, update

from provisioning_pipelines.direct import DirectExecutor
from provisioning_pipelines.flows.steps import OPERATION_TAG
from provisioning_pipelines.orchestration.jobs import JOBS
from provisioning_pipelines.orchestration.sensors import build_sensors
from provisioning_pipelines.runtime.resources import DatabaseResource
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import Graph, Subscription, utcnow
from tests.conftest import REDIS_URL, make_policy, make_resources
from tests.factories import new_customer, paid_graph_subscription, paid_repository_subscription
from tests.flows.test_graph import _launch_in_another_process


def evaluate(database_url: str, *, direct_enabled: bool = True, resource: str = "graph",
             max_attempts: int = 3) -> SensorResult:
    graph_sensor, repository_sensor = build_sensors(grace_seconds=30,
                                                    direct_enabled=direct_enabled,
                                                    interval_seconds=30)
    chosen = graph_sensor if resource == "graph" else repository_sensor
    context = build_sensor_context(resources={
        "database": DatabaseResource(url=database_url),
        "policy": make_policy(max_attempts=max_attempts)})
    result = chosen(context)
    assert isinstance(result, SensorResult)
    return result


def requests(result: SensorResult) -> list[RunRequest]:
    return list(result.run_requests or [])


def age(database: Database, sub_id: str, seconds: float = 60, **values: Any) -> None:
    """Make the subscription look as it would ``seconds`` after its last change."""
    with database.session() as session:
        session.execute(update(Subscription).where(Subscription.id == sub_id).values(
            updated_at=utcnow() - timedelta(seconds=seconds), **values))


def test_fresh_payment_is_left_to_the_direct_path(database: Database, database_url: str) -> None:
    user = new_customer(database)
    paid_graph_subscription(database, user)
    result = evaluate(database_url)
    assert requests(result) == []
    assert result.skip_reason is not None
    assert "no graph subscription is waiting" in str(result.skip_reason.skip_message)


def test_with_direct_off_every_unclaimed_subscription_is_launched(
    database: Database, database_url: str
) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)
    [request] = requests(evaluate(database_url, direct_enabled=False))
    assert request.run_key == f"{sub_id}:attempt:1"
    assert request.tags["provisioning/subscription_id"] == sub_id
    assert request.tags["provisioning/graph_id"] == graphs.graph_id_for_subscription(sub_id)
    assert request.tags["provisioning/user_id"] == user.user_id
    assert request.tags["provisioning/attempt"] == "1"
    config = request.run_config
    assert config["ops"]["claim_subscription"]["config"]["subscription_id"] == sub_id


def test_stale_unclaimed_subscription_is_picked_up(database: Database, database_url: str) -> None:
    user = new_customer(database)
    graph_sub = paid_graph_subscription(database, user)
    repo_sub = paid_repository_subscription(database, user)
    age(database, graph_sub)
    age(database, repo_sub)
    assert [r.run_key for r in requests(evaluate(database_url))] == [f"{graph_sub}:attempt:1"]
    assert [r.run_key for r in requests(evaluate(database_url, resource="repository"))] == [
        f"{repo_sub}:attempt:1"]


def test_live_claim_is_skipped_and_lapsed_claim_is_picked_up(
    database: Database, database_url: str
) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)
    age(database, sub_id, claim_token="someone", attempts=1,
        lease_expires_at=utcnow() + timedelta(seconds=60))
    assert requests(evaluate(database_url)) == []
    age(database, sub_id, lease_expires_at=utcnow() - timedelta(seconds=1))
    [request] = requests(evaluate(database_url))
    assert request.run_key == f"{sub_id}:attempt:2"


def test_failed_attempt_gets_a_new_run_key_once_its_backoff_is_over(
    database: Database, database_url: str
) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)
    age(database, sub_id, attempts=1, last_error="disk full",
        retry_after=utcnow() + timedelta(seconds=60))
    assert requests(evaluate(database_url)) == []
    age(database, sub_id, retry_after=utcnow() - timedelta(seconds=1))
    [request] = requests(evaluate(database_url))
    assert request.run_key == f"{sub_id}:attempt:2"


def test_lapsed_last_attempt_fails_the_subscription_without_a_run(
    database: Database, database_url: str
) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)
    age(database, sub_id, claim_token="crashed", attempts=3,
        lease_expires_at=utcnow() - timedelta(seconds=1))
    assert requests(evaluate(database_url)) == []
    with database.session() as session:
        assert session.get(Subscription, sub_id).status == "failed"


def test_sensor_run_racing_the_direct_path_makes_one_graph(
    database: Database, database_url: str, resources: dict[str, Any],
    dagster_instance: DagsterInstance, graph_dir: Path,
) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)
    age(database, sub_id)
    [request] = requests(evaluate(database_url))
    subscription_id = request.tags["provisioning/subscription_id"]

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        launched = pool.submit(_launch_in_another_process, dagster_instance.get_ref(),
                               database_url, str(graph_dir), subscription_id)
        made = DirectExecutor(resources).graph(subscription_id)
        success, error = launched.result()

    assert success or "being provisioned by another worker" in error
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Graph)) == 1
        assert session.get(Subscription, sub_id).resource_id == made.result["resource_id"]
    assert len([p for p in graph_dir.rglob("*.lbug") if ".templates" not in p.parts]) == 1


def test_a_sensor_run_after_a_failed_direct_attempt_continues_the_customers_operation(
    postgres_database: Database, graph_dir: Path, dagster_instance: DagsterInstance,
    redis_prefix: str,
) -> None:
    """A direct attempt fails on a full disk (its error a progress event); the sensor's run, a
    Dagster run sharing the Redis store, continues and completes that same operation."""
    from provisioning_pipelines.flows import GRAPH_FLOW, SubscriptionConfig
    from provisioning_pipelines.services.provisioning import claims
    from tests.conftest import REDIS_URL, make_resources
    from tests.faults import FullDiskEngine, FullDiskEngineResource
    from tests.flows.helpers import run_job

    resources = make_resources(postgres_database.url, graph_dir, REDIS_URL=REDIS_URL,
                               REDIS_KEY_PREFIX=redis_prefix)
    FullDiskEngine.fills = 1
    full = {**resources, "graph_engine": FullDiskEngineResource(
        data_dir=str(graph_dir), buffer_pool_mb=16, use_templates=True)}
    user = new_customer(postgres_database)
    sub_id = paid_graph_subscription(postgres_database, user)
    executor = DirectExecutor(full)
    operation_id = executor.open_operation("graph_provisioning", user.user_id)
    with pytest.raises(claims.RetryScheduled):
        executor.graph(sub_id, operation_id=operation_id)
    assert not executor.store.get(operation_id).is_terminal  # type: ignore[union-attr]
    with postgres_database.session() as session:
        assert claims.operation_of(session, sub_id) == operation_id

    age(postgres_database, sub_id)
    [request] = requests(evaluate(postgres_database.url))
    assert request.tags["provisioning/operation_id"] == operation_id
    result = run_job(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                     instance=dagster_instance, resources=resources, tags=request.tags)
    executor.close()

    assert result.success
    events = executor.store.events(operation_id)
    assert [e.data["message"] for e in events if "failed:" in e.data["message"]] == [
        "attempt 1 of 3 failed: the disk was full; retrying shortly"]
    assert [e.type for e in events].count("operation_completed") == 1
    assert events[-1].type == "operation_completed"
    assert events[-1].data["result"]["graph_id"] == graphs.graph_id_for_subscription(sub_id)
    assert "database_path" not in events[-1].data["result"]


@pytest.mark.redis
def test_with_direct_off_the_webhook_answers_an_operation_that_the_sensors_run_ends(
    database: Database, database_url: str, graph_dir: Path, redis_prefix: str,
    dagster_instance: DagsterInstance,
) -> None:
    from tests.api.helpers import Api, make_api, serve
    from tests.api.test_app import checkout_event, subscribe_graph

    shared = {"REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": redis_prefix}
    resources = make_resources(database_url, graph_dir, **shared)
    app, executor = make_api(database, resources, dagster_instance, direct=False, **shared)
    with serve(app) as url, ThreadPoolExecutor(1) as pool:
        api = Api(url, database, executor)
        user = new_customer(database)
        sub_id = subscribe_graph(api, user.api_key)
        operation_id = api.deliver(checkout_event(sub_id)).json()["operation_id"]
        assert operation_id is not None
        watched = pool.submit(api.events, user.api_key, operation_id)

        [request] = requests(evaluate(database_url, direct_enabled=False))
        ran = JOBS["graph"].execute_in_process(
            run_config=request.run_config, tags=request.tags, instance=dagster_instance,
            resources=resources, raise_on_error=False)

        events = watched.result(timeout=120)
        with api.client(user.api_key) as client:
            operation = client.get(f"/v1/operations/{operation_id}").json()
    executor.close()

    assert request.tags[OPERATION_TAG] == operation_id
    assert ran.success
    graph_id = graphs.graph_id_for_subscription(sub_id)
    types = [kind for _, kind, _ in events]
    assert types[0] == "operation_started" and types[-1] == "operation_completed"
    assert ran.run_id in events[0][2]["message"]
    assert "operation_progress" in types  # the run's own steps, through Redis
    assert events[-1][2]["result"]["graph_id"] == graph_id
    assert operation["status"] == "completed"
    assert operation["result"]["graph_id"] == graph_id
    assert operation["result"]["run_id"] == ran.run_id
