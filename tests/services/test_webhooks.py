"""Billing events on their own: the signature check, recording once, and applying in any order."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import IntegrityError

from provisioning_pipelines.services import webhooks
from provisioning_pipelines.services.webhooks import InvalidWebhook
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import Subscription
from tests.factories import new_customer, paid_graph_subscription

SECRET = "whsec_test"


def event(kind: str, subscription_id: str, *, event_id: str | None = None,
          **obj: Any) -> dict[str, Any]:
    data = {"payment_status": "paid", "metadata": {"subscription_id": subscription_id}, **obj}
    return {"id": event_id or f"evt_{uuid.uuid4().hex[:16]}", "type": kind,
            "created": int(time.time()), "data": {"object": data}}


def apply(database: Database, body: dict[str, Any]) -> webhooks.Applied:
    with database.session() as session:
        return webhooks.record_and_apply(session, body)


def status(database: Database, sub_id: str) -> str:
    with database.session() as session:
        found = session.get(Subscription, sub_id)
        assert found is not None
        return found.status


def test_a_genuine_delivery_verifies() -> None:
    payload = json.dumps(event("checkout.session.completed", "sub_x")).encode()
    verified = webhooks.verify(payload, webhooks.sign(payload, SECRET), SECRET)
    assert verified["type"] == "checkout.session.completed"


@pytest.mark.parametrize("tamper", ["secret", "body", "stale", "missing", "not json"])
def test_anything_but_a_genuine_delivery_is_refused_with_400(tamper: str) -> None:
    payload = json.dumps(event("checkout.session.completed", "sub_x")).encode()
    signature: str | None = webhooks.sign(payload, SECRET)
    if tamper == "secret":
        signature = webhooks.sign(payload, "whsec_someone_else")
    elif tamper == "body":
        payload = payload.replace(b"paid", b"PAID")
    elif tamper == "stale":
        signature = webhooks.sign(payload, SECRET, int(time.time()) - 301)
    elif tamper == "missing":
        signature = None
    else:
        payload = b"{not json"
        signature = webhooks.sign(payload, SECRET)

    with pytest.raises(InvalidWebhook) as refused:
        webhooks.verify(payload, signature, SECRET)
    assert refused.value.status_code == 400


def test_a_paid_checkout_moves_the_subscription_on_and_says_what_to_provision(
    database: Database,
) -> None:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user, paid=False)

    applied = apply(database, event("checkout.session.completed", sub_id,
                                    subscription="stripe_sub_1", customer="cus_1"))

    assert applied.paid and applied.subscription_id == sub_id
    assert (applied.user_id, applied.resource_type) == (user.user_id, "graph")
    assert status(database, sub_id) == "provisioning"


def test_the_same_event_twice_is_refused_by_its_unique_id(database: Database) -> None:
    sub_id = paid_graph_subscription(database, new_customer(database), paid=False)
    body = event("checkout.session.completed", sub_id)
    apply(database, body)

    with pytest.raises(IntegrityError):
        apply(database, body)
    with database.session() as session:
        assert webhooks.is_duplicate(session, body["id"])


def test_events_we_do_not_act_on_are_recorded_and_ignored(database: Database) -> None:
    sub_id = paid_graph_subscription(database, new_customer(database), paid=False)

    unknown = apply(database, event("customer.created", sub_id))
    stranger = apply(database, event("checkout.session.completed", "sub_not_ours"))
    unpaid = apply(database, event("checkout.session.completed", sub_id,
                                   payment_status="unpaid"))

    assert unknown.ignored == "event type not handled"
    assert stranger.ignored == "no subscription of ours"
    assert not unpaid.paid and status(database, sub_id) == "pending_payment"


def test_a_later_event_finds_the_subscription_by_its_stripe_id(database: Database) -> None:
    sub_id = paid_graph_subscription(database, new_customer(database), paid=False)
    apply(database, event("checkout.session.completed", sub_id, subscription="stripe_sub_9"))

    deleted = {"id": f"evt_{uuid.uuid4().hex[:16]}", "type": "customer.subscription.deleted",
               "created": int(time.time()), "data": {"object": {"id": "stripe_sub_9"}}}
    applied = apply(database, deleted)

    assert applied.subscription_id == sub_id and status(database, sub_id) == "canceled"


@settings(max_examples=25, deadline=None)
@given(order=st.permutations(["checkout.session.completed", "customer.subscription.deleted",
                              "invoice.payment_failed"]),
       redeliver=st.lists(st.integers(0, 2), max_size=3))
def test_in_any_order_a_cancelled_subscription_is_never_provisioned_after(
    sqlite_database: Database, order: list[str], redeliver: list[int],
) -> None:
    database = sqlite_database
    sub_id = paid_graph_subscription(database, new_customer(database), paid=False)
    bodies = [event(kind, sub_id) for kind in order]
    paid_at: int | None = None
    for index in [*range(len(bodies)), *redeliver]:
        try:
            applied = apply(database, bodies[index])
        except IntegrityError:
            continue  # a redelivery: recorded already, changes nothing
        if applied.paid:
            paid_at = index

    cancel_at = order.index("customer.subscription.deleted")
    assert status(database, sub_id) == "canceled"
    assert paid_at is None or paid_at < cancel_at  # paid only if it came before the cancel
