"""The billing outbox, on both databases: a change decided here is written with the change itself
(and only then), billing's own changes are not sent back, a subscription unknown to billing has
nothing to send, one subscription's changes go in order, and a failed send waits its backoff."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from provisioning_pipelines.services import webhooks
from provisioning_pipelines.services.billing import outbox
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import BillingChange, Subscription, utcnow
from tests.factories import new_customer, paid_graph_subscription


def paid(database: Database, stripe_id: str | None = "sub_billing_1") -> str:
    sub_id = paid_graph_subscription(database, new_customer(database))
    with database.session() as session:
        session.get(Subscription, sub_id).stripe_subscription_id = stripe_id
    return sub_id


def rows(database: Database, sub_id: str) -> list[BillingChange]:
    with database.session() as session:
        found = list(session.scalars(select(BillingChange).where(
            BillingChange.subscription_id == sub_id).order_by(BillingChange.created_at)))
        session.expunge_all()
        return found


def test_a_users_cancellation_is_written_with_it_or_not_at_all(database: Database) -> None:
    sub_id = paid(database)

    with pytest.raises(RuntimeError), database.session() as session:
        billing.cancel(session, sub_id, actor="usr_1")
        raise RuntimeError("the transaction fails after the change")
    assert rows(database, sub_id) == []
    with database.session() as session:
        assert session.get(Subscription, sub_id).status == "provisioning"

    with database.session() as session:
        billing.cancel(session, sub_id, actor="usr_1")
    [row] = rows(database, sub_id)
    assert (row.action, row.status, row.stripe_subscription_id, row.actor) == (
        "cancel", "pending", "sub_billing_1", "usr_1")
    assert row.idempotency_key.startswith(outbox.KEY_PREFIX)

    with database.session() as session:  # cancelling again changes nothing, sends nothing
        assert billing.cancel(session, sub_id, actor="usr_1") is False
    assert len(rows(database, sub_id)) == 1


def test_billings_own_cancellation_is_not_sent_back(database: Database) -> None:
    by_webhook, by_reaper = paid(database), paid(database)
    event = {"id": f"evt_{uuid.uuid4().hex[:12]}", "type": "customer.subscription.deleted",
             "created": int(time.time()),
             "data": {"object": {"id": "sub_billing_1",
                                 "metadata": {"subscription_id": by_webhook}}}}
    with database.session() as session:
        assert webhooks.record_and_apply(session, webhooks.read(json.dumps(event))).canceled
        billing.cancel(session, by_reaper, actor="reaper")  # a period's end billing set
    assert rows(database, by_webhook) == [] and rows(database, by_reaper) == []


def test_a_subscription_billing_does_not_know_has_nothing_to_send(database: Database) -> None:
    sub_id = paid(database, stripe_id=None)
    with database.session() as session:
        billing.cancel(session, sub_id, actor="operator")
    [row] = rows(database, sub_id)
    assert row.status == "skipped" and "no subscription in the billing system" in row.last_error
    with database.session() as session:
        assert outbox.claim_next(session) is None


def test_one_subscriptions_changes_go_in_the_order_they_were_decided(
        database: Database) -> None:
    sub_id = paid(database)
    with database.session() as session:
        billing.cancel(session, sub_id, actor="usr_1")
    with database.session() as session:
        billing.reactivate(session, session.get(Subscription, sub_id), actor="usr_1")

    with database.session() as session:
        first = outbox.claim_next(session)
    with database.session() as session:
        assert outbox.claim_next(session) is None  # the reactivation waits for the cancellation
    assert first is not None and first.action == "cancel"
    with database.session() as session:
        outbox.mark_sent(session, first.change_id)
    with database.session() as session:
        second = outbox.claim_next(session)
    assert second is not None and second.action == "reactivate"
    assert second.params == {"cancel_at_period_end": False}
    assert first.idempotency_key != second.idempotency_key


def test_a_failed_send_waits_its_backoff_and_keeps_its_key(database: Database) -> None:
    sub_id = paid(database)
    with database.session() as session:
        billing.cancel(session, sub_id, actor="usr_1")
    now = utcnow()
    with database.session() as session:
        due = outbox.claim_next(session, now=now)
    assert due is not None
    with database.session() as session:
        at = outbox.mark_retry(session, due, "APIConnectionError: down", now=now)
    assert at - now == timedelta(seconds=outbox.BACKOFF_SECONDS)
    with database.session() as session:
        assert outbox.claim_next(session, now=at - timedelta(seconds=1)) is None
    with database.session() as session:
        again = outbox.claim_next(session, now=at)
    assert again is not None and again.idempotency_key == due.idempotency_key
    assert again.attempts == 1
    assert [outbox.backoff(n) for n in (1, 2, 3, 20)] == [5, 10, 20, outbox.MAX_BACKOFF_SECONDS]


def echo(sub_id: str, *, request: Any = None, cancel_at_period_end: bool = True,
         later: int = 1, **extra: Any) -> dict[str, Any]:
    """A ``customer.subscription.updated`` about the subscription, ``later`` seconds from now
    (updates of one second are ordered by their random ids)."""
    event: dict[str, Any] = {
        "id": f"evt_{uuid.uuid4().hex[:12]}", "type": "customer.subscription.updated",
        "created": int(time.time()) + later,
        "data": {"object": {"id": "sub_billing_1", "cancel_at_period_end": cancel_at_period_end,
                            "current_period_end": int(time.time()) + 86400,
                            "metadata": {"subscription_id": sub_id}}}, **extra}
    if request is not None:
        event["request"] = request
    return event


def test_an_event_naming_our_key_is_ours_and_one_naming_another_is_billings(
        database: Database) -> None:
    sub_id = paid(database)
    with database.session() as session:
        billing.cancel(session, sub_id, actor="usr_1")
    [row] = rows(database, sub_id)

    ours = echo(sub_id, request={"id": "req_1", "idempotency_key": row.idempotency_key})
    theirs = echo(sub_id, request={"id": "req_2", "idempotency_key": None}, later=2)
    with database.session() as session:
        applied = webhooks.record_and_apply(session, webhooks.read(json.dumps(ours)))
    assert applied.status == "ignored" and "our own change (cancel" in applied.ignored
    with database.session() as session:
        assert session.get(Subscription, sub_id).cancel_at is None
        assert session.get(BillingChange, row.id).echo_event_id == ours["id"]
        applied = webhooks.record_and_apply(session, webhooks.read(json.dumps(theirs)))
    assert applied.status == "applied"  # billing's own schedule is applied as before
    with database.session() as session:
        assert session.get(Subscription, sub_id).cancel_at is not None


def test_an_event_naming_no_request_is_ours_once_when_it_shows_what_we_sent(
        database: Database) -> None:
    sub_id = paid(database)
    with database.session() as session:
        billing.cancel(session, sub_id, actor="usr_1")
    with database.session() as session:
        due = outbox.claim_next(session)
        assert due is not None
    with database.session() as session:
        outbox.mark_sent(session, due.change_id)

    other_state = echo(sub_id, cancel_at_period_end=False)
    first, second = echo(sub_id, later=2), echo(sub_id, later=3)
    outcomes = []
    for event in (other_state, first, second):
        with database.session() as session:
            outcomes.append(webhooks.record_and_apply(session, webhooks.read(json.dumps(event))))
    assert [o.status for o in outcomes] == ["applied", "ignored", "applied"]
