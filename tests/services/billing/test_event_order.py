"""A customer's billing events in any order converge: generated sequences of checkouts,
cancellations, period-end updates and failed payments, delivered shuffled, some twice, end in
the same subscription and the same graph as the same events delivered in the order they were
created. What each event starts (provisioning, suspension, reactivation) runs after it, as the
webhook's direct path runs it, and the reaper's query settles whatever is left."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import IntegrityError

from provisioning_pipelines.flows import (
    GRAPH_FLOW,
    REACTIVATION_FLOW,
    SUSPENSION_FLOW,
    LifecycleConfig,
    SubscriptionConfig,
)
from provisioning_pipelines.services import webhooks
from provisioning_pipelines.services.billing import event_order
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.graphs import lifecycle
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.storage.db import Database, dispose_database, get_database
from provisioning_pipelines.storage.models import Subscription
from tests.conftest import make_resources
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import run_direct

BASE = 1_790_000_000  # the first event's second
NOW = datetime.fromtimestamp(BASE + 3600, UTC)  # when the reaper looks, after every event


@pytest.fixture(scope="module")
def ordering_database(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[Database]:
    """A SQLite database of this module's own, whose hosts never fill up (every example makes
    graphs of its own)."""
    path = tmp_path_factory.mktemp("ordering") / "app.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    database = get_database(url)
    with database.session() as session:
        for host in hosts.ensure_local_hosts(session, path.parent / "graphs"):
            host.capacity = 1_000_000
    yield database
    dispose_database(url)


@pytest.fixture(scope="module")
def resources(ordering_database: Database) -> dict[str, Any]:
    return make_resources(ordering_database.url, Path(ordering_database.url[10:]).parent /
                          "graphs")


# An event: (kind, seconds after BASE, for an update: cancel at the period's end?, period end
# in the past?)
EVENTS = st.tuples(
    st.sampled_from(["checkout.session.completed", "customer.subscription.deleted",
                     "customer.subscription.updated", "invoice.payment_failed"]),
    st.integers(0, 4), st.booleans(), st.booleans())


def body(sub_id: str, index: int, spec: tuple[str, int, bool, bool]) -> dict[str, Any]:
    kind, offset, at_period_end, ended = spec
    obj: dict[str, Any] = {"metadata": {"subscription_id": sub_id}}
    if kind == "checkout.session.completed":
        obj["payment_status"] = "paid"
    if kind == "customer.subscription.updated":
        obj["cancel_at_period_end"] = at_period_end
        obj["current_period_end"] = BASE - 86400 if ended else BASE + 30 * 86400
    return {"id": f"evt_{index:02d}_{uuid.uuid4().hex[:8]}", "type": kind,
            "created": BASE + offset, "data": {"object": obj}}


def deliver(database: Database, resources: dict[str, Any], event: dict[str, Any]) -> None:
    """Apply the event, then run what it starts, as the webhook's direct path does."""
    try:
        with database.session() as session:
            applied = webhooks.record_and_apply(session, webhooks.read(json.dumps(event)))
    except IntegrityError:
        return  # a redelivery
    config = LifecycleConfig(subscription_id=applied.subscription_id, actor="billing")
    if applied.paid:
        run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=applied.subscription_id),
                   resources)
    elif applied.canceled:
        run_direct(SUSPENSION_FLOW, config, resources)
    elif applied.reactivated:
        run_direct(REACTIVATION_FLOW, config, resources)


def settle(database: Database, resources: dict[str, Any], sub_id: str) -> None:
    """What the reaper sensor would launch, until nothing is out of step."""
    for _ in range(3):
        with database.session() as session:
            changes = [c for c in lifecycle.out_of_step(session, now=NOW)
                       if c["subscription_id"] == sub_id]
        if not changes:
            return
        for change in changes:
            flow = SUSPENSION_FLOW if change["action"] == "suspend" else REACTIVATION_FLOW
            run_direct(flow, LifecycleConfig(subscription_id=sub_id, actor="reaper"), resources)
    raise AssertionError("the reaper never settled the subscription")


def state(database: Database, sub_id: str) -> tuple[str, datetime | None, bool]:
    """What the customer has: the subscription's status and scheduled end, and whether the
    graph is usable."""
    with database.session() as session:
        subscription = session.get(Subscription, sub_id)
        assert subscription is not None
        graph = graphs.graph_of_subscription(session, sub_id)
        return (subscription.status, subscription.cancel_at,
                graph is not None and graph.status == "active")


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(EVENTS, min_size=2, max_size=6), data=st.data())
def test_events_in_any_order_and_redelivered_converge_to_the_ordered_outcome(
        ordering_database: Database, resources: dict[str, Any], specs: list[Any],
        data: st.DataObject) -> None:
    database = ordering_database
    ordered_sub = paid_graph_subscription(database, new_customer(database), paid=False)
    shuffled_sub = paid_graph_subscription(database, new_customer(database), paid=False)
    ordered = [body(ordered_sub, i, spec) for i, spec in enumerate(specs)]
    shuffled = [body(shuffled_sub, i, spec) for i, spec in enumerate(specs)]
    # The order they were created in: by time, then paying before updating before ending.
    ordered.sort(key=lambda e: (e["created"], event_order.RANK[e["type"]], e["id"]))
    arrival = data.draw(st.permutations(range(len(shuffled))), label="arrival")
    redelivered = data.draw(st.lists(st.sampled_from(range(len(shuffled))), max_size=3),
                            label="redelivered")

    for event in ordered:
        deliver(database, resources, event)
    for index in [*arrival, *redelivered]:
        deliver(database, resources, shuffled[index])
    settle(database, resources, ordered_sub)
    settle(database, resources, shuffled_sub)

    assert state(database, shuffled_sub) == state(database, ordered_sub)
    status, _cancel_at, usable = state(database, shuffled_sub)
    # Never a usable graph for a cancelled subscription, nor an active one without it.
    assert usable == (status == "active")


def test_a_cancellation_before_the_checkout_never_provisions(
        database: Database, graph_dir: Path) -> None:
    resources = make_resources(database.url, graph_dir)
    sub_id = paid_graph_subscription(database, new_customer(database), paid=False)
    checkout = body(sub_id, 0, ("checkout.session.completed", 0, False, False))
    deleted = body(sub_id, 1, ("customer.subscription.deleted", 1, False, False))

    deliver(database, resources, deleted)
    deliver(database, resources, checkout)

    assert state(database, sub_id) == ("canceled", None, False)
    assert list(graph_dir.rglob("*.lbug")) == []


def test_a_stale_update_does_not_extend_what_a_deletion_ended(
        database: Database, graph_dir: Path) -> None:
    """The seed's incident: an immediate deletion, then 0.4 s later an older event that set the
    end back to the period's end. The graph stays suspended."""
    resources = make_resources(database.url, graph_dir)
    sub_id = paid_graph_subscription(database, new_customer(database), paid=False)
    deliver(database, resources, body(sub_id, 0, ("checkout.session.completed", 0, False,
                                                  False)))
    deleted = body(sub_id, 2, ("customer.subscription.deleted", 3, False, False))
    stale_paid = body(sub_id, 1, ("checkout.session.completed", 1, False, False))

    deliver(database, resources, deleted)
    deliver(database, resources, stale_paid)

    assert state(database, sub_id) == ("canceled", None, False)
    with database.session() as session:
        graph = graphs.graph_of_subscription(session, sub_id)
        assert graph is not None and graph.status == "suspended"
        assert graph.delete_after is not None
        assert graph.delete_after - graph.suspended_at == timedelta(days=7)


def test_a_user_cancellation_is_newer_than_any_event_sent_before_it(
        database: Database, graph_dir: Path) -> None:
    resources = make_resources(database.url, graph_dir)
    sub_id = paid_graph_subscription(database, new_customer(database), paid=False)
    checkout = body(sub_id, 0, ("checkout.session.completed", 0, False, False))
    deliver(database, resources, checkout)
    run_direct(SUSPENSION_FLOW, LifecycleConfig(subscription_id=sub_id, actor="usr_1"),
               resources)
    late_again = dict(body(sub_id, 1, ("checkout.session.completed", 1, False, False)))

    deliver(database, resources, late_again)  # created before the user cancelled

    assert state(database, sub_id) == ("canceled", None, False)
