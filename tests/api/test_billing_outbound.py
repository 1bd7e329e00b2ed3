"""Billing both ways, over real HTTP: a cancellation or a reactivation made through the API
reaches a real local Stripe (``localstripe`` as a process, behind the tests' recording front,
``tests/billing_server.py``) once, with an idempotency key, through a killed server and a lost
answer; and the webhook Stripe sends back because of it is recognised as ours."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import stripe
from dagster import DagsterInstance
from sqlalchemy import select

from provisioning_pipelines.services.billing import outbound, outbox
from provisioning_pipelines.services.billing.events import billing_event
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import BillingChange, Subscription, utcnow
from tests.api.helpers import Api, make_api, serve
from tests.api.test_app import subscribe_graph
from tests.api.test_lifecycle_api import finished
from tests.billing_server import API_KEY, Front, LocalStripe, billing_subscription, local_stripe
from tests.conftest import make_resources
from tests.factories import new_customer


class Billing:
    def __init__(self, server: LocalStripe, front: Front) -> None:
        self.server = server
        self.front = front
        # Straight to the server, not through the front: what the tests set up or look at.
        self.client = stripe.StripeClient(
            API_KEY, base_addresses={"api": f"http://127.0.0.1:{server.port}"},
            max_network_retries=0)

    def subscription(self, stripe_id: str) -> dict[str, Any]:
        return self.client.v1.subscriptions.retrieve(stripe_id).to_dict()


@pytest.fixture
def billing(tmp_path: Path) -> Iterator[Billing]:
    with local_stripe(tmp_path) as (server, front):
        yield Billing(server, front)


def billing_api(database: Database, graph_dir: Path, instance: DagsterInstance,
                billing: Billing, **settings: Any) -> tuple[Any, Any]:
    resources = make_resources(database.url, graph_dir, STRIPE_API_KEY=API_KEY,
                               STRIPE_API_BASE=billing.front.url)
    return make_api(database, resources, instance, **settings)


@pytest.fixture
def api(postgres_database: Database, graph_dir: Path, dagster_instance: DagsterInstance,
        billing: Billing) -> Iterator[Api]:
    """The app with billing outbound on; its own delivery loop off (the tests run rounds)."""
    app, executor = billing_api(postgres_database, graph_dir, dagster_instance, billing,
                                BILLING_OUTBOX_INTERVAL_SECONDS=0)
    with serve(app) as url:
        served = Api(url, postgres_database, executor)
        served.app = app  # type: ignore[attr-defined]
        yield served
    executor.close()


def deliver(api: Api, **when: Any) -> outbound.Delivered:
    return outbound.deliver_due(api.database, api.executor.resources["billing"].sender(),
                                **when)


def active_in_billing(api: Api, billing: Billing) -> tuple[Any, str, str, str]:
    """A user whose graph subscription was paid through billing: (user, ours, billing's id,
    graph)."""
    user = new_customer(api.database)
    sub_id = subscribe_graph(api, user.api_key)
    customer, stripe_id = billing_subscription(billing.client)
    answer = api.deliver(billing_event(sub_id, id=f"cs_{sub_id}", customer=customer,
                                       subscription=stripe_id))
    assert answer.status_code == 200, answer.text
    graph_id = api.wait_status(user.api_key, sub_id, "active")["resource_id"]
    return user, sub_id, stripe_id, graph_id


def changes(api: Api, sub_id: str) -> list[BillingChange]:
    with api.database.session() as session:
        found = list(session.scalars(select(BillingChange).where(
            BillingChange.subscription_id == sub_id).order_by(BillingChange.created_at)))
        session.expunge_all()
        return found


def cancel(api: Api, user: Any, sub_id: str) -> None:
    with api.client(user.api_key) as client:
        answer = client.delete(f"/v1/subscriptions/{sub_id}")
    assert answer.status_code == 202, answer.text
    kind, _data = finished(api, user.api_key, answer.json()["operation_id"])
    assert kind == "operation_completed"


def test_a_cancellation_through_the_api_reaches_billing_once_with_its_key(
        api: Api, billing: Billing) -> None:
    user, sub_id, stripe_id, _graph = active_in_billing(api, billing)

    cancel(api, user, sub_id)
    [row] = changes(api, sub_id)
    assert (row.action, row.status, row.stripe_subscription_id) == ("cancel", "pending",
                                                                    stripe_id)
    assert billing.front.seen == [] and not billing.subscription(stripe_id)[
        "cancel_at_period_end"]

    assert len(deliver(api).sent) == 1
    assert deliver(api).sent == []  # a sent change is not sent again
    [seen] = billing.front.seen
    assert (seen.method, seen.path, seen.form, seen.outcome) == (
        "POST", f"/v1/subscriptions/{stripe_id}", {"cancel_at_period_end": "true"},
        "forwarded")
    assert seen.idempotency_key == row.idempotency_key
    assert billing.subscription(stripe_id)["cancel_at_period_end"] is True
    [row] = changes(api, sub_id)
    assert row.status == "sent" and row.sent_at is not None


def test_billing_killed_keeps_the_change_and_it_lands_once_after_the_restart(
        api: Api, billing: Billing) -> None:
    user, sub_id, stripe_id, _graph = active_in_billing(api, billing)
    cancel(api, user, sub_id)

    billing.server.kill()
    now = utcnow()
    down = deliver(api, now=now)
    assert down.retrying and not down.sent
    [row] = changes(api, sub_id)
    assert row.status == "pending" and row.attempts == 1
    assert row.last_error.startswith("APIConnectionError")
    assert [s.outcome for s in billing.front.seen] == ["down"]

    billing.server.start()  # the same port and the store it had
    assert deliver(api, now=now + timedelta(seconds=1)).sent == []  # not before its backoff
    back = deliver(api, now=now + timedelta(seconds=outbox.BACKOFF_SECONDS))
    assert len(back.sent) == 1
    assert [s.outcome for s in billing.front.seen] == ["down", "forwarded"]
    assert {s.idempotency_key for s in billing.front.seen} == {row.idempotency_key}
    assert len(billing.front.forwarded("POST")) == 1
    assert billing.subscription(stripe_id)["cancel_at_period_end"] is True


def test_an_answer_lost_after_the_change_is_retried_with_its_key_and_applied_once(
        api: Api, billing: Billing) -> None:
    user, sub_id, _stripe_id, _graph = active_in_billing(api, billing)
    cancel(api, user, sub_id)

    billing.front.lose_next_answer = True
    now = utcnow()
    assert deliver(api, now=now).retrying
    assert len(deliver(api, now=now + timedelta(seconds=outbox.BACKOFF_SECONDS)).sent) == 1
    assert [s.outcome for s in billing.front.seen] == ["lost", "replayed"]
    assert len({s.idempotency_key for s in billing.front.seen}) == 1
    assert len(billing.front.forwarded("POST")) == 1  # one change at the billing system


def test_the_webhook_billing_sends_back_is_ours_and_changes_nothing(
        api: Api, billing: Billing) -> None:
    user, sub_id, stripe_id, _graph = active_in_billing(api, billing)
    cancel(api, user, sub_id)
    deliver(api)
    [row] = changes(api, sub_id)

    # What Stripe sends after our request: the subscription as it is now, naming the request.
    echo = {"id": f"evt_echo_{sub_id}", "type": "customer.subscription.updated",
            "created": int(time.time()), "object": "event",
            "request": {"id": "req_ours", "idempotency_key": billing.front.seen[0]
                        .idempotency_key},
            "data": {"object": billing.subscription(stripe_id),
                     "previous_attributes": {"cancel_at_period_end": False}}}
    answer = api.deliver(echo)
    assert answer.status_code == 200
    assert answer.json()["ignored"] == (f"our own change (cancel, billing change {row.id}), "
                                        "applied already")
    with api.database.session() as session:
        subscription = session.get(Subscription, sub_id)
        assert (subscription.status, subscription.cancel_at) == ("canceled", None)
        assert session.get(BillingChange, row.id).echo_event_id == echo["id"]
    assert len(billing.front.forwarded()) == 1  # and nothing was sent because of it


def test_a_reactivation_through_the_api_reaches_billing_once_and_its_echo_is_ours(
        postgres_database: Database, graph_dir: Path, dagster_instance: DagsterInstance,
        billing: Billing) -> None:
    # This app delivers by itself, as a deployed API process does (every 0.1 s here).
    app, executor = billing_api(postgres_database, graph_dir, dagster_instance, billing,
                                BILLING_OUTBOX_INTERVAL_SECONDS=0.1)
    with serve(app) as url:
        api = Api(url, postgres_database, executor)
        user, sub_id, stripe_id, graph_id = active_in_billing(api, billing)
        with api.client(user.api_key) as client:
            assert client.delete(f"/v1/graphs/{graph_id}").status_code == 202
            wait_for(lambda: [c.status for c in changes(api, sub_id)] == ["sent"])
            restored = client.post(f"/v1/graphs/{graph_id}/restore")
            assert restored.status_code == 202
            kind, _ = finished(api, user.api_key, restored.json()["operation_id"])
            assert kind == "operation_completed"
        wait_for(lambda: [c.status for c in changes(api, sub_id)] == ["sent", "sent"])

        cancelled, reactivated = changes(api, sub_id)
        assert (cancelled.action, reactivated.action) == ("cancel", "reactivate")
        assert [(s.form, s.idempotency_key) for s in billing.front.forwarded()] == [
            ({"cancel_at_period_end": "true"}, cancelled.idempotency_key),
            ({"cancel_at_period_end": "false"}, reactivated.idempotency_key)]
        assert billing.subscription(stripe_id)["cancel_at_period_end"] is False

        echo = {"id": f"evt_echo_{sub_id}", "type": "customer.subscription.updated",
                "created": int(time.time()),
                "request": {"id": "req_ours", "idempotency_key": reactivated.idempotency_key},
                "data": {"object": billing.subscription(stripe_id)}}
        answer = api.deliver(echo).json()
        assert answer["ignored"].startswith("our own change (reactivate")
        with api.database.session() as session:
            assert session.get(Subscription, sub_id).status == "active"
    executor.close()


def test_a_subscription_billing_refuses_is_kept_failed_and_not_sent_again(
        api: Api, billing: Billing) -> None:
    user, sub_id, _stripe_id, _graph = active_in_billing(api, billing)
    with api.database.session() as session:  # an id billing has never heard of
        session.get(Subscription, sub_id).stripe_subscription_id = "sub_unknown_to_billing"
    cancel(api, user, sub_id)

    assert len(deliver(api).failed) == 1
    [row] = changes(api, sub_id)
    assert row.status == "failed" and row.last_error.startswith("InvalidRequestError")
    assert deliver(api, now=utcnow() + timedelta(days=1)).failed == []
    assert len(billing.front.seen) == 1


def test_a_new_payment_for_a_cancelled_subscription_is_the_one_told_next(
        api: Api, billing: Billing) -> None:
    user, sub_id, first_id, _graph = active_in_billing(api, billing)
    cancel(api, user, sub_id)
    deliver(api)
    _customer, second_id = billing_subscription(billing.client)
    answer = api.deliver(billing_event(sub_id, event_id=f"evt_again_{sub_id}",
                                       created=int(time.time()) + 2, subscription=second_id))
    assert answer.status_code == 200 and "ignored" not in answer.json()
    api.wait_status(user.api_key, sub_id, "active")

    cancel(api, user, sub_id)
    deliver(api)
    assert [s.path for s in billing.front.forwarded()] == [
        f"/v1/subscriptions/{first_id}", f"/v1/subscriptions/{second_id}"]


def wait_for(condition: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
