"""Billing events on their own: the signature check, recording once, and applying in any order."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from provisioning_pipelines.errors import Conflict, NotFound
from provisioning_pipelines.services import webhooks
from provisioning_pipelines.services.billing.events import sign
from provisioning_pipelines.services.webhooks import InvalidWebhook
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import AuditLogEntry, Subscription
from tests.factories import new_customer, paid_graph_subscription

SECRET = "whsec_test"


def event(kind: str, subscription_id: str, *, event_id: str | None = None,
          **obj: Any) -> dict[str, Any]:
    data = {"payment_status": "paid", "metadata": {"subscription_id": subscription_id}, **obj}
    return {"id": event_id or f"evt_{uuid.uuid4().hex[:16]}", "type": kind,
            "created": int(time.time()), "data": {"object": data}}


def apply(database: Database, body: dict[str, Any] | str) -> webhooks.Applied:
    raw = body if isinstance(body, str) else json.dumps(body)
    with database.session() as session:
        return webhooks.record_and_apply(session, webhooks.read(raw))


def status(database: Database, sub_id: str) -> str:
    with database.session() as session:
        found = session.get(Subscription, sub_id)
        assert found is not None
        return found.status


def test_a_genuine_delivery_verifies() -> None:
    payload = json.dumps(event("checkout.session.completed", "sub_x")).encode()
    verified = webhooks.verify(payload, sign(payload, SECRET), SECRET)
    assert verified.event is not None and verified.rejected is None
    assert verified.event_type == "checkout.session.completed"
    assert verified.raw == payload.decode()


@pytest.mark.parametrize("tamper", ["secret", "body", "stale", "missing", "not json"])
def test_anything_but_a_genuine_delivery_is_refused_with_400(tamper: str) -> None:
    payload = json.dumps(event("checkout.session.completed", "sub_x")).encode()
    signature: str | None = sign(payload, SECRET)
    if tamper == "secret":
        signature = sign(payload, "whsec_someone_else")
    elif tamper == "body":
        payload = payload.replace(b"paid", b"PAID")
    elif tamper == "stale":
        signature = sign(payload, SECRET, int(time.time()) - 301)
    elif tamper == "missing":
        signature = None
    else:
        payload = b"{not json"
        signature = sign(payload, SECRET)

    with pytest.raises(InvalidWebhook) as refused:
        webhooks.verify(payload, signature, SECRET)
    assert refused.value.status_code == 400


@pytest.mark.parametrize("ahead", [3600, 301 + 60])
def test_a_signature_dated_beyond_the_tolerance_ahead_is_refused(ahead: int) -> None:
    payload = json.dumps(event("checkout.session.completed", "sub_x")).encode()
    signature = sign(payload, SECRET, int(time.time()) + ahead)
    with pytest.raises(InvalidWebhook, match="in the future") as refused:
        webhooks.verify(payload, signature, SECRET)
    assert refused.value.status_code == 400 and refused.value.field == "Stripe-Signature"


def test_a_signature_a_little_ahead_is_clock_skew_and_accepted() -> None:
    payload = json.dumps(event("checkout.session.completed", "sub_x")).encode()
    assert webhooks.verify(payload, sign(payload, SECRET, int(time.time()) + 60), SECRET)


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


def test_a_payment_is_audited_once_with_its_event_recorded_and_a_second_one_is_not(
    database: Database,
) -> None:
    sub_id = paid_graph_subscription(database, new_customer(database), paid=False)
    first = {**event("checkout.session.completed", sub_id), "created": int(time.time()) - 5}
    second = event("checkout.session.completed", sub_id)  # newer, but nothing left to pay

    assert apply(database, first).paid
    assert not apply(database, second).paid

    with database.session() as session:
        paid = session.scalars(select(AuditLogEntry.subject_id).where(
            AuditLogEntry.action == "subscription.paid")).all()
        events = {row["event_id"]: row["status"] for row in webhooks.list_events(session)}
        subscription = session.get(Subscription, sub_id)
        assert subscription is not None
        assert subscription.last_event_id == second["id"]  # the newest decision is remembered
    assert paid == [sub_id]
    assert events == {first["id"]: "applied", second["id"]: "applied"}


def test_the_same_event_twice_is_refused_by_its_unique_id(database: Database) -> None:
    sub_id = paid_graph_subscription(database, new_customer(database), paid=False)
    body = event("checkout.session.completed", sub_id)
    apply(database, body)

    with pytest.raises(IntegrityError):
        apply(database, body)
    with database.session() as session:
        assert webhooks.is_duplicate(session, body["id"])
        [row] = webhooks.list_events(session)
    assert (row["event_id"], row["status"]) == (body["id"], "applied")


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


def test_an_older_payment_racing_a_cancellation_waits_for_it_and_is_ignored(
    postgres_database: Database,
) -> None:
    """Two events about one subscription are decided one after the other, on its locked row:
    a payment that arrives while a newer cancellation is being applied waits, then sees it.
    Decided on a row read unlocked, the payment wrote its older key over the cancellation's,
    and a third event between the two then provisioned a cancelled subscription."""
    database = postgres_database
    sub_id = paid_graph_subscription(database, new_customer(database), paid=False)
    now = int(time.time())
    cancellation = {**event("customer.subscription.deleted", sub_id), "created": now}
    payment = {**event("checkout.session.completed", sub_id), "created": now - 20}
    between = {**event("checkout.session.completed", sub_id), "created": now - 10}
    with ThreadPoolExecutor(1) as racer, database.session() as session:
        webhooks.record_and_apply(session, webhooks.read(json.dumps(cancellation)))
        racing = racer.submit(apply, database, payment)
        _wait_until_a_statement_waits_for_a_lock(database)
        session.commit()  # the cancellation lands while the payment waits
        assert racing.result(timeout=60).ignored == "older than an event already applied"
    assert status(database, sub_id) == "canceled"
    assert apply(database, between).ignored == "older than an event already applied"
    assert status(database, sub_id) == "canceled"


def _wait_until_a_statement_waits_for_a_lock(database: Database) -> None:
    """Until a connection to this database waits for a row lock (no fixed sleep)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with database.engine.connect() as connection:  # a fresh snapshot of the activity
            waiting = connection.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'").scalar()
        if waiting:
            return
        time.sleep(0.01)
    raise AssertionError("the racing delivery never waited for the subscription's row")


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda e: e.update(data=["not", "an", "object"]), "data.object: expected an object"),
    (lambda e: e.update(created=1e300), "created: expected seconds since 1970"),
    (lambda e: e.update(id="x" * 129), "id: longer than 128 characters"),
    (lambda e: e.update(type="t" * 65), "type: longer than 64 characters"),
    (lambda e: e["data"]["object"].update(customer="cus\x00"),
     "data.object.customer: contains a NUL character"),
    (lambda e: e["data"]["object"].update(metadata="sub_1"),
     "data.object.metadata: expected an object"),
    (lambda e: e["data"]["object"].update(cancel_at_period_end="yes"),
     "data.object.cancel_at_period_end: expected true or false, got 'yes'"),
    (lambda e: e["data"]["object"].update(current_period_end="soon"),
     "data.object.current_period_end: expected seconds since 1970"),
])
def test_a_genuine_event_we_cannot_apply_is_kept_as_rejected_with_its_reason(
    database: Database, mutate: Any, reason: str,
) -> None:
    sub_id = paid_graph_subscription(database, new_customer(database), paid=False)
    body = event("checkout.session.completed", sub_id)
    mutate(body)

    applied = apply(database, body)

    assert applied.ignored is not None and applied.ignored.startswith(reason)
    assert status(database, sub_id) == "pending_payment"
    with database.session() as session:
        [row] = webhooks.list_events(session, rejected_only=True)
    assert row["status"] == "rejected" and row["reason"] == applied.ignored


def test_an_event_too_deep_to_read_is_kept_under_a_stable_id(database: Database) -> None:
    raw = "[" * 100_000 + "]" * 100_000

    first = apply(database, raw)

    assert first.ignored == "body: nested too deeply to read"
    assert first.event_id.startswith("unreadable_")
    with pytest.raises(IntegrityError):  # its redelivery is a duplicate, not a second row
        apply(database, raw)


def test_non_json_is_refused_not_kept() -> None:
    with pytest.raises(InvalidWebhook, match="not JSON"):
        webhooks.read("{'single': 'quotes'}")


def test_a_rejected_event_is_replayed_once_it_can_be_applied(database: Database) -> None:
    sub_id = paid_graph_subscription(database, new_customer(database), paid=False)
    body = event("checkout.session.completed", sub_id)
    with database.session() as session:  # as if an older release had refused it
        delivery = webhooks.read(json.dumps(body))
        webhooks.record_rejected(session, delivery, "refused by an older release")

    with database.session() as session:
        applied = webhooks.replay(session, body["id"])

    assert applied.paid and status(database, sub_id) == "provisioning"
    with database.session() as session:
        assert webhooks.list_events(session, rejected_only=True) == []
        with pytest.raises(Conflict, match="only a rejected event is replayed"):
            webhooks.replay(session, body["id"])
        with pytest.raises(NotFound):
            webhooks.replay(session, "evt_never_sent")
