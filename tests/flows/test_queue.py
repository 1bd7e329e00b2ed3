"""A full tier queues paid subscriptions instead of failing them, and added capacity provisions
them in the order they paid, exactly once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance
from sqlalchemy import func, select

from provisioning_pipelines.flows import (
    DELETION_FLOW,
    GRAPH_FLOW,
    DeletionConfig,
    SubscriptionConfig,
)
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.provisioning import claims, queue
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import Graph, GraphHost, Subscription
from tests.conftest import make_resources
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import run_direct, run_job

TIER = "ladybug-standard"


@pytest.fixture
def small(database_url: str, graph_dir: Path) -> dict[str, Any]:
    """Resources whose local hosts hold two graphs each."""
    return make_resources(database_url, graph_dir, LOCAL_HOST_CAPACITY=2)


def pay_and_provision(database: Database, resources: dict[str, Any], count: int) -> list[str]:
    user = new_customer(database)
    subs = []
    for _ in range(count):
        sub_id = paid_graph_subscription(database, user, plan_name=TIER)
        run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id), resources)
        subs.append(sub_id)
    return subs


def states(database: Database, subs: list[str]) -> list[tuple[str, int | None, int]]:
    with database.session() as session:
        found = []
        for sub_id in subs:
            subscription = session.get(Subscription, sub_id)
            found.append((subscription.status, claims.position_of(session, subscription),
                          subscription.attempts))
        return found


def slots(database: Database) -> list[tuple[str, int, int]]:
    with database.session() as session:
        return [(h.id, h.slots_used, h.capacity) for h in session.scalars(
            select(GraphHost).where(GraphHost.tier == TIER).order_by(GraphHost.id))]


def provision_released(database: Database, resources: dict[str, Any]) -> list[str]:
    with database.session() as session:
        released = queue.release(session, TIER)
    for due in released:
        run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=due.subscription_id),
                   resources)
    return [due.subscription_id for due in released]


def test_a_full_tier_queues_in_order_and_added_capacity_provisions_the_head(
        database: Database, small: dict[str, Any], graph_dir: Path) -> None:
    subs = pay_and_provision(database, small, 5)

    assert states(database, subs) == [("active", None, 1), ("active", None, 1),
                                      ("queued", 1, 0), ("queued", 2, 0), ("queued", 3, 0)]
    assert slots(database) == [("local-ladybug-standard", 2, 2)]

    with database.session() as session:
        hosts.add_host(session, tier=TIER, capacity=2, data_root=None,
                       graph_data_dir=graph_dir)
    assert provision_released(database, small) == subs[2:4]

    assert [s for s, _, _ in states(database, subs)] == ["active"] * 4 + ["queued"]
    assert states(database, subs)[4] == ("queued", 1, 0)
    assert slots(database) == [("ladybug-standard-2", 2, 2), ("local-ladybug-standard", 2, 2)]
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Graph)) == 4


def test_a_new_payment_does_not_jump_the_queue(
        database: Database, small: dict[str, Any]) -> None:
    first = pay_and_provision(database, small, 3)  # two active, one queued
    with database.session() as session:
        graph_id = session.get(Subscription, first[0]).resource_id
    run_direct(DELETION_FLOW, DeletionConfig(graph_id=graph_id, at_once=True), small)
    assert slots(database) == [("local-ladybug-standard", 1, 2)]  # a slot is free

    late = pay_and_provision(database, small, 1)  # the queue is not empty: it waits behind

    assert states(database, [first[2], *late]) == [("queued", 1, 0), ("queued", 2, 0)]
    assert provision_released(database, small) == [first[2]]
    assert states(database, [first[2], *late]) == [("active", None, 1), ("queued", 1, 0)]


def test_a_released_subscription_is_provisioned_once_by_racing_workers(
        database: Database, small: dict[str, Any], graph_dir: Path) -> None:
    subs = pay_and_provision(database, small, 4)
    with database.session() as session:
        hosts.add_host(session, tier=TIER, capacity=2, data_root=None,
                       graph_data_dir=graph_dir)
        released = queue.release(session, TIER)

    def provision(sub_id: str) -> str:
        try:
            return run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                              small).result["status"]
        except claims.ClaimHeld:
            return "held by the other"

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(provision, [d.subscription_id for d in released] * 2))

    assert "active" in answers
    assert [s for s, _, _ in states(database, subs)] == ["active"] * 4
    with database.session() as session:
        graphs_made = session.scalar(select(func.count()).select_from(Graph))
        used = session.scalar(select(func.sum(GraphHost.slots_used))
                              .where(GraphHost.tier == TIER))
    assert graphs_made == used == 4


def test_a_run_on_a_full_tier_queues_without_failing(
        database: Database, small: dict[str, Any], dagster_instance: DagsterInstance) -> None:
    pay_and_provision(database, small, 2)
    sub_id = paid_graph_subscription(database, new_customer(database), plan_name=TIER)

    result = run_job(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                     instance=dagster_instance, resources=small)

    assert result.success
    outcome = result.output_for_node("activate_subscription")
    assert outcome.pending and outcome.result == {
        "subscription_id": sub_id, "status": "queued", "queue_position": 1}
    assert states(database, [sub_id]) == [("queued", 1, 0)]
    # Provisioning it again while nothing is free says where it waits, and fails nothing.
    again = run_job(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                    instance=dagster_instance, resources=small)
    assert not again.success
    assert states(database, [sub_id]) == [("queued", 1, 0)]


def test_a_drained_host_takes_no_new_graph(database: Database, small: dict[str, Any],
                                           graph_dir: Path) -> None:
    pay_and_provision(database, small, 1)
    with database.session() as session:
        hosts.set_status(session, "local-ladybug-standard", "draining")
    waiting = pay_and_provision(database, small, 1)
    assert states(database, waiting) == [("queued", 1, 0)]

    with database.session() as session:
        hosts.set_status(session, "local-ladybug-standard", "available")
    assert provision_released(database, small) == waiting
    assert states(database, waiting) == [("active", None, 1)]
