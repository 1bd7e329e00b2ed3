"""The graph flow, through its Dagster job on dagster-postgres and through the direct executor."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, DagsterInstance
from sqlalchemy import func, select, update

from provisioning_pipelines.errors import (
    Conflict,
    EngineError,
    InvalidRequest,
    NotFound,
    PaymentRequired,
)
from provisioning_pipelines.flows import GRAPH_FLOW, SubscriptionConfig, run_step
from provisioning_pipelines.flows.steps import Outcome
from provisioning_pipelines.runtime.resources import GraphEngineResource
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.services.provisioning import claims
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.ladybug import LadybugEngine
from provisioning_pipelines.storage.models import (
    CreditPool,
    Graph,
    GraphHost,
    GraphSchema,
    GraphUser,
    Invoice,
    Subscription,
    utcnow,
)
from tests.conftest import make_policy, make_resources
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import direct_context, job_error, run_direct, run_job


def subscription(database: Database, subscription_id: str) -> Subscription:
    with database.session() as session:
        row = session.get(Subscription, subscription_id)
        assert row is not None
        return row


def count(database: Database, model: Any) -> int:
    with database.session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def slots_used(database: Database) -> int:
    with database.session() as session:
        return sum(session.scalars(select(GraphHost.slots_used)).all())


def graph_files(graph_dir: Path) -> list[Path]:
    return sorted(p for p in graph_dir.rglob("*.lbug") if ".templates" not in p.parts)


def test_graph_job_provisions_a_paid_subscription(
    database: Database, resources: dict[str, Any], dagster_instance: DagsterInstance,
    graph_dir: Path,
) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user, schema_extensions=["accounting"])

    result = run_job(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                     instance=dagster_instance, resources=resources)

    assert result.success
    sub = subscription(database, sub_id)
    graph_id = graphs.graph_id_for_subscription(sub_id)
    assert (sub.status, sub.resource_id, sub.claim_token) == ("active", graph_id, None)
    assert graphs.GRAPH_ID.fullmatch(graph_id)
    with database.session() as session:
        graph = session.get(Graph, graph_id)
        assert graph is not None and graph.tier == "ladybug-standard"
        assert graph.graph_type == "generic" and graph.schema_extensions == ["accounting"]
        assert session.get(GraphUser, (graph_id, user.user_id)).role == "admin"
        schema = session.scalar(select(GraphSchema).where(GraphSchema.graph_id == graph_id))
        assert schema is not None and "CREATE NODE TABLE" in schema.ddl
        pool = session.scalar(select(CreditPool).where(CreditPool.graph_id == graph_id))
        assert pool is not None and pool.balance == 10_000
    assert graph_files(graph_dir) == [Path(graph.database_path)]
    tables = {t.name for t in LadybugEngine().list_tables(Path(graph.database_path))}
    assert {"Entity", "Document"} <= tables and len(tables) > 4
    assert slots_used(database) == 1

    event = dagster_instance.get_latest_materialization_event(AssetKey(["provisioning", "graph"]))
    assert event is not None and event.run_id == result.run_id
    metadata = event.asset_materialization.metadata
    assert metadata["provisioning_method"].value == "dagster"
    assert metadata["graph_id"].value == graph_id
    assert metadata["user_id"].value == user.user_id
    assert metadata["tier"].value == "ladybug-standard"
    assert metadata["duration_ms"].value > 0
    tags = dagster_instance.get_run_by_id(result.run_id).tags
    assert tags["provisioning/subscription_id"] == sub_id
    assert tags["provisioning/graph_id"] == graph_id
    assert tags["provisioning/user_id"] == user.user_id


def test_entity_graph_starts_with_its_entity(
    database: Database, resources: dict[str, Any]
) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(
        database, user, entity={"name": "Acme Corp", "website": "https://acme.example"}
    )
    outcome = run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id), resources)
    path = Path(outcome.result["database_path"])
    rows = LadybugEngine().query(path, "MATCH (e:Entity) RETURN e.name AS name")
    assert rows == [{"name": "Acme Corp"}]
    with database.session() as session:
        assert session.get(Graph, outcome.result["graph_id"]).graph_type == "entity"


def test_customer_billed_by_invoice_gets_one_invoice(
    database: Database, resources: dict[str, Any]
) -> None:
    user = new_customer(database, invoice_billing=True)
    sub_id = paid_graph_subscription(database, user, plan_name="ladybug-large")
    run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id), resources)
    run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id), resources)
    with database.session() as session:
        invoices = session.scalars(select(Invoice)).all()
        assert [(i.subscription_id, i.amount_cents) for i in invoices] == [(sub_id, 19_900)]


def test_card_customer_gets_no_invoice(database: Database, resources: dict[str, Any]) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)
    run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id), resources)
    assert count(database, Invoice) == 0


def test_run_after_success_returns_the_same_graph_and_makes_nothing(
    database: Database, resources: dict[str, Any], dagster_instance: DagsterInstance,
    graph_dir: Path,
) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)
    first = run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id), resources)

    again = run_job(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                    instance=dagster_instance, resources=resources)

    assert again.success
    outcome = again.output_for_node("activate_subscription")
    assert outcome.result["resource_id"] == first.result["graph_id"]
    assert outcome.result["already_active"] is True
    assert count(database, Graph) == 1 and len(graph_files(graph_dir)) == 1
    assert slots_used(database) == 1


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda db, user: "sub_missing", NotFound, "no subscription 'sub_missing'"),
        (lambda db, user: paid_graph_subscription(db, user, paid=False), PaymentRequired,
         "not paid yet"),
    ],
    ids=["unknown subscription", "not paid"],
)
def test_subscription_that_cannot_be_claimed_is_refused_and_left_alone(
    database: Database, resources: dict[str, Any], graph_dir: Path, make: Any,
    error: type[Exception], message: str,
) -> None:
    user = new_customer(database)
    sub_id = make(database, user)
    with pytest.raises(error, match=message):
        run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id), resources)
    assert count(database, Graph) == 0 and graph_files(graph_dir) == []
    if sub_id != "sub_missing":
        assert subscription(database, sub_id).status == "pending_payment"


def force_request(database: Database, sub_id: str, **values: Any) -> None:
    """A subscription row as a buggy or older client might have written it."""
    with database.session() as session:
        session.execute(update(Subscription).where(Subscription.id == sub_id).values(**values))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"plan_name": "ladybug-huge"}, "plan_name: unknown tier 'ladybug-huge'"),
        ({"request": {"graph": {"name": "g", "schema_extensions": ["astrology"]}}},
         "schema_extensions: unknown extension 'astrology'"),
        ({"request": {"graph": {"name": "g", "custom_schema": {"nodes": [
            {"name": "Person", "primary_key": "id",
             "properties": [{"name": "id", "type": "VARCHAR"}]}]}}}},
         "custom_schema.nodes[0].properties[0].type"),
    ],
    ids=["unknown tier", "unknown extension", "malformed custom schema"],
)
def test_invalid_graph_request_fails_at_once_with_nothing_made(
    database: Database, resources: dict[str, Any], dagster_instance: DagsterInstance,
    graph_dir: Path, values: dict[str, Any], message: str,
) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)
    force_request(database, sub_id, **values)

    result = run_job(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                     instance=dagster_instance, resources=resources)

    assert not result.success
    assert message in job_error(result)
    sub = subscription(database, sub_id)
    assert sub.status == "failed" and message in (sub.last_error or "")
    assert sub.attempts == 1  # a bad request is not worth a second attempt
    assert count(database, Graph) == 0 and graph_files(graph_dir) == []
    assert slots_used(database) == 0


@pytest.mark.parametrize(
    ("graph", "field"),
    [
        ({"name": "g", "schema_extensions": ["astrology"]}, "schema_extensions"),
        ({"name": ""}, "graph.name"),
        ({"name": "g", "custom_schema": {"nodes": []}}, "custom_schema"),
    ],
)
def test_invalid_graph_request_is_refused_before_payment(
    database: Database, graph: dict[str, Any], field: str
) -> None:
    from provisioning_pipelines.services import requests as subscriptions

    user = new_customer(database)
    with database.session() as session, pytest.raises(InvalidRequest) as refused:
        subscriptions.request_graph(session, user_id=user.user_id, plan_name="ladybug-standard",
                                    graph=graph)
    assert field in str(refused.value)


class FailingAfterCreate(LadybugEngine):
    """An engine that makes the database file and then breaks, as a full disk might (in the
    engine's own words, which name the file's path)."""

    def ensure_database(self, path: Path, ddl: Any) -> bool:
        super().ensure_database(path, ddl)
        assert path.exists()
        raise EngineError(f"graph database {path.name}: IO exception: Cannot write to file "
                          f"{path}.wal: No space left on device")


class FailingEngineResource(GraphEngineResource):
    def get(self) -> LadybugEngine:
        return FailingAfterCreate(template_dir=Path(self.data_dir) / ".templates")


def failing_engine(graph_dir: Path) -> FailingEngineResource:
    return FailingEngineResource(data_dir=str(graph_dir), buffer_pool_mb=16, use_templates=True)


def test_failure_after_the_file_exists_undoes_the_attempt(
    database: Database, resources: dict[str, Any], dagster_instance: DagsterInstance,
    graph_dir: Path,
) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)
    resources = {**resources, "graph_engine": failing_engine(graph_dir),
                 "policy": make_policy(max_attempts=1)}

    result = run_job(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                     instance=dagster_instance, resources=resources)

    assert not result.success
    assert "No space left on device" in job_error(result)  # the operator's view: all of it
    sub = subscription(database, sub_id)
    assert sub.status == "failed" and sub.last_error == "the disk was full"  # the customer's
    assert sub.claim_token is None
    assert graph_files(graph_dir) == []
    assert slots_used(database) == 0
    for model in (Graph, GraphSchema, GraphUser, CreditPool):
        assert count(database, model) == 0, model.__name__


def test_failed_attempts_stay_provisioning_until_the_last(
    database: Database, resources: dict[str, Any], graph_dir: Path
) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)
    failing = {**resources, "graph_engine": failing_engine(graph_dir)}

    for attempt in (1, 2):
        with pytest.raises(claims.RetryScheduled,
                           match=f"attempt {attempt} of 3 failed: the disk was full") as retry:
            run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id), failing)
        assert isinstance(retry.value.__cause__, EngineError)
        sub = subscription(database, sub_id)
        assert (sub.status, sub.attempts, sub.claim_token) == ("provisioning", attempt, None)
        assert sub.last_error == "the disk was full"
    with pytest.raises(EngineError):
        run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id), failing)
    assert subscription(database, sub_id).status == "failed"
    with pytest.raises(Conflict, match="is failed"):
        run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id), resources)

    outcome = run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id,
                                                        retry_failed=True), resources)
    sub = subscription(database, sub_id)
    assert (sub.status, sub.attempts, sub.last_error) == ("active", 1, None)
    assert graph_files(graph_dir) == [Path(outcome.result["database_path"])]


def test_backoff_holds_the_next_attempt_back(
    database: Database, resources: dict[str, Any], graph_dir: Path
) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)
    failing = {**resources, "graph_engine": failing_engine(graph_dir),
               "policy": make_policy(retry_backoff_seconds=60)}
    with pytest.raises(claims.RetryScheduled, match="retrying in 60 s"):
        run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id), failing)
    with pytest.raises(claims.ClaimHeld, match="retry after"):
        run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id), resources)


def _launch_in_another_process(instance_ref: Any, database_url: str, graph_dir: str,
                               sub_id: str) -> tuple[bool, str]:
    """One Dagster run in its own process, as the run launcher would start it."""
    resources = make_resources(database_url, graph_dir)
    with DagsterInstance.from_ref(instance_ref) as instance:
        result = run_job(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                         instance=instance, resources=resources)
        return result.success, "" if result.success else job_error(result)


def test_two_concurrent_runs_make_one_graph(
    database: Database, database_url: str, dagster_instance: DagsterInstance, graph_dir: Path,
) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)
    args = (dagster_instance.get_ref(), database_url, str(graph_dir), sub_id)

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_launch_in_another_process, *zip(args, args, strict=True)))

    assert any(success for success, _ in results)
    for success, error in results:
        assert success or "being provisioned by another worker" in error
    assert subscription(database, sub_id).status == "active"
    assert count(database, Graph) == 1 and len(graph_files(graph_dir)) == 1
    assert slots_used(database) == 1


def test_many_concurrent_direct_runs_for_one_subscription_make_one_graph(
    database: Database, resources: dict[str, Any], graph_dir: Path
) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)
    outcomes: list[Any] = []

    def provision() -> None:
        try:
            outcomes.append(run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                                       resources))
        except claims.ClaimHeld as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=provision) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    made = [o for o in outcomes if isinstance(o, Outcome) and not o.result["already_active"]]
    assert len(made) == 1
    assert count(database, Graph) == 1 and len(graph_files(graph_dir)) == 1


def test_run_after_a_crash_finishes_the_same_graph(
    database: Database, resources: dict[str, Any], dagster_instance: DagsterInstance,
    graph_dir: Path,
) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)
    ctx = direct_context(resources)
    claim_step, create_step, _activate = GRAPH_FLOW.steps
    work = run_step(create_step, ctx, run_step(claim_step, ctx,
                                               SubscriptionConfig(subscription_id=sub_id)))
    made = work.details["database_path"]
    # The worker dies here, before activation; its lease runs out.
    force_request(database, sub_id, lease_expires_at=utcnow() - timedelta(seconds=1))
    assert subscription(database, sub_id).resource_id == work.details["graph_id"]

    result = run_job(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                     instance=dagster_instance, resources=resources)

    assert result.success
    sub = subscription(database, sub_id)
    assert (sub.status, sub.resource_id, sub.attempts) == ("active", work.details["graph_id"], 2)
    assert result.output_for_node("activate_subscription").result["resumed"] is True
    assert graph_files(graph_dir) == [Path(made)]
    assert count(database, Graph) == 1 and count(database, CreditPool) == 1
    assert slots_used(database) == 1
