"""The billing outbox on Dagster's side: a cancellation made in a Dagster run (a UI launch,
``--via-dagster``, direct provisioning off) is sent by the billing sensor, with no API process
up; without ``STRIPE_API_KEY`` the sensor says nothing is sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe
from dagster import DagsterInstance, SensorResult, build_sensor_context

from provisioning_pipelines.flows import SUSPENSION_FLOW, LifecycleConfig
from provisioning_pipelines.orchestration.billing import billing_outbox_sensor
from provisioning_pipelines.services.billing import outbox
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import Subscription
from tests.billing_server import API_KEY, Front, LocalStripe, billing_subscription, local_stripe
from tests.conftest import make_resources
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import run_job


@pytest.fixture
def billing(tmp_path: Path) -> Iterator[tuple[LocalStripe, Front]]:
    with local_stripe(tmp_path) as served:
        yield served


def tick(resources: dict[str, Any]) -> SensorResult:
    context = build_sensor_context(resources={"database": resources["database"],
                                              "billing": resources["billing"]})
    result = billing_outbox_sensor(interval_seconds=30)(context)
    assert isinstance(result, SensorResult)
    return result


def test_a_cancellation_in_a_dagster_run_is_sent_by_the_sensor(
        postgres_database: Database, graph_dir: Path, dagster_instance: DagsterInstance,
        billing: tuple[LocalStripe, Front]) -> None:
    server, front = billing
    client = stripe.StripeClient(API_KEY, base_addresses={
        "api": f"http://127.0.0.1:{server.port}"})
    _customer, stripe_id = billing_subscription(client)
    resources = make_resources(postgres_database.url, graph_dir, STRIPE_API_KEY=API_KEY,
                               STRIPE_API_BASE=front.url,
                               DIRECT_GRAPH_PROVISIONING_ENABLED="false")
    sub_id = paid_graph_subscription(postgres_database, new_customer(postgres_database))
    with postgres_database.session() as session:
        session.get(Subscription, sub_id).stripe_subscription_id = stripe_id

    ran = run_job(SUSPENSION_FLOW, LifecycleConfig(subscription_id=sub_id, actor="operator"),
                  instance=dagster_instance, resources=resources)
    assert ran.success

    result = tick(resources)
    assert "1 sent" in str(result.skip_reason)
    [seen] = front.seen
    assert seen.form == {"cancel_at_period_end": "true"}
    with postgres_database.session() as session:
        [change] = outbox.changes_of(session)
        assert (change["status"], change["actor"]) == ("sent", "operator")
    assert client.v1.subscriptions.retrieve(stripe_id).cancel_at_period_end is True
    assert "0 sent" in str(tick(resources).skip_reason)


def test_without_a_key_the_sensor_sends_nothing_and_says_so(database: Database,
                                                             graph_dir: Path) -> None:
    result = tick(make_resources(database.url, graph_dir))
    assert "STRIPE_API_KEY is not set" in str(result.skip_reason)
