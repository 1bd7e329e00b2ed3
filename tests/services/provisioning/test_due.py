"""What is due now, the one answer the sensors and the resumer act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provisioning_pipelines.flows import GRAPH_FLOW, SubscriptionConfig
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.provisioning.due import due_now
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import Subscription, utcnow
from tests.conftest import make_resources
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import run_direct

TIER = "ladybug-standard"


@pytest.fixture
def small(database_url: str, graph_dir: Path) -> dict[str, Any]:
    return make_resources(database_url, graph_dir, LOCAL_HOST_CAPACITY=1)


@pytest.mark.parametrize("direct_enabled", [True, False])
def test_a_released_subscription_is_due_once_and_an_exhausted_one_fails(
        database: Database, small: dict[str, Any], graph_dir: Path,
        direct_enabled: bool) -> None:
    user = new_customer(database)
    subs = [paid_graph_subscription(database, user, plan_name=TIER) for _ in range(2)]
    for sub_id in subs:  # the second waits in the queue: the host holds one graph
        run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id), small)
    exhausted = paid_graph_subscription(database, user, plan_name=TIER)
    with database.session() as session:
        session.get(Subscription, exhausted).attempts = 3
        assert session.get(Subscription, subs[1]).status == "queued"
        hosts.add_host(session, tier=TIER, capacity=1, data_root=None,
                       graph_data_dir=graph_dir)

    with database.session() as session:
        due = due_now(session, ["graph", "repository_access"], now=utcnow(), grace_seconds=30,
                      direct_enabled=direct_enabled, max_attempts=3, actor="sensor")

    assert [item.subscription_id for item in due.subscriptions] == [subs[1]]
    assert due.subscriptions[0].attempt == 1
    assert due.failed == [exhausted]
    with database.session() as session:
        assert session.get(Subscription, subs[1]).status == "provisioning"
        assert session.get(Subscription, exhausted).status == "failed"
