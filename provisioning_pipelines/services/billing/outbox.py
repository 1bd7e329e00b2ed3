"""The billing outbox: what this product decided about a subscription that the billing system
must hear of (a cancellation, a reactivation), kept until it is sent.

A row is written in the transaction of the change itself, so a change that commits is one that
will be sent, and one rolled back is never sent. Workers (each API process's recovery loop, and
Dagster's billing sensor, with direct provisioning on or off) claim due rows one at a time,
send each with the row's own idempotency key (the same on every retry, so the billing system
applies it once) and retry, with backoff, what failed for a reason that may pass. Rows of one
subscription go in the order they were decided.

What is sent (``CHANGES``): a cancellation sets ``cancel_at_period_end`` on the billing
system's subscription (no further charge, nothing refunded, and still resumable until the
period ends); a reactivation clears it. A ``DELETE`` would end that subscription for good, and
Stripe cannot resume an ended one, so a reactivation within the grace could not be told.

The billing system reports each change back as a webhook; ``echo_of`` recognises it as ours
(by the idempotency key Stripe names in the event's ``request``, or, from a server that names
none, as the report of the change just sent), and the webhook treats it as applied already.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from provisioning_pipelines.storage.models import BillingChange, Subscription, new_id, utcnow

#: What each change asks of the billing system's subscription (``POST /v1/subscriptions/{id}``).
CHANGES: dict[str, dict[str, Any]] = {"cancel": {"cancel_at_period_end": True},
                                      "reactivate": {"cancel_at_period_end": False}}
#: Actors that only carry out what billing decided (the reaper ends a subscription at the
#: period's end billing set): nothing of theirs is sent back.
BILLING_ACTORS = frozenset({"billing", "reaper"})
#: Every idempotency key of ours starts so: an event that names another key is not ours.
KEY_PREFIX = "pp-billing-"
#: A failed attempt n waits ``BACKOFF_SECONDS * 2**(n-1)``, at most ``MAX_BACKOFF_SECONDS``.
BACKOFF_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 900.0
#: How long a worker holds a row it is sending (longer than one request's timeout).
LEASE_SECONDS = 60.0
NO_BILLING_ID = ("nothing to send: the subscription has no subscription in the billing system "
                 "(never paid through it, or billed by invoice)")


@dataclass(frozen=True)
class Due:
    """A row a worker has claimed, with what it must send."""

    change_id: str
    subscription_id: str
    action: str
    stripe_subscription_id: str
    idempotency_key: str
    attempts: int

    @property
    def params(self) -> dict[str, Any]:
        return CHANGES[self.action]


def record(session: Session, subscription: Subscription, action: str, *,
           actor: str) -> BillingChange | None:
    """Queue ``action`` for the billing system, in the caller's transaction; None when the
    change came from billing itself."""
    if actor in BILLING_ACTORS:
        return None
    now = utcnow()
    change = BillingChange(
        id=new_id("bc"), subscription_id=subscription.id, action=action,
        stripe_subscription_id=subscription.stripe_subscription_id,
        idempotency_key=KEY_PREFIX + uuid.uuid4().hex, actor=actor[:128], status="pending",
        attempts=0, next_attempt_at=now, created_at=now)
    if subscription.stripe_subscription_id is None:
        change.status, change.last_error = "skipped", NO_BILLING_ID
    session.add(change)
    return change


def claim_next(session: Session, *, now: datetime | None = None,
               lease_seconds: float = LEASE_SECONDS) -> Due | None:
    """Win the oldest due row whose subscription has no older row still to send, for
    ``lease_seconds``; None when nothing is due. The caller commits before sending."""
    now = now or utcnow()
    earlier = aliased(BillingChange)
    candidates = session.scalars(
        select(BillingChange.id)
        .where(BillingChange.status == "pending", BillingChange.next_attempt_at <= now,
               _unclaimed(now),
               ~exists().where(earlier.subscription_id == BillingChange.subscription_id,
                               earlier.status == "pending",
                               earlier.created_at < BillingChange.created_at))
        .order_by(BillingChange.created_at).limit(5)).all()
    for change_id in candidates:
        won = session.execute(
            update(BillingChange)
            .where(BillingChange.id == change_id, BillingChange.status == "pending",
                   _unclaimed(now))
            .values(claimed_until=now + timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False))
        if won.rowcount == 1:
            row = session.get(BillingChange, change_id)
            assert row is not None and row.stripe_subscription_id is not None
            return Due(row.id, row.subscription_id, row.action, row.stripe_subscription_id,
                       row.idempotency_key, row.attempts)
    return None


def _unclaimed(now: datetime) -> Any:
    return or_(BillingChange.claimed_until.is_(None), BillingChange.claimed_until < now)


def mark_sent(session: Session, change_id: str, *, now: datetime | None = None) -> None:
    _settle(session, change_id, status="sent", sent_at=now or utcnow(), last_error=None)


def mark_retry(session: Session, due: Due, error: str, *, now: datetime | None = None
               ) -> datetime:
    """Try ``due`` again after its backoff; returns when."""
    at = (now or utcnow()) + timedelta(seconds=backoff(due.attempts + 1))
    _settle(session, due.change_id, next_attempt_at=at, last_error=error[:2000])
    return at


def mark_failed(session: Session, change_id: str, error: str) -> None:
    """The billing system refused the change: it is kept, with why, and not sent again."""
    _settle(session, change_id, status="failed", last_error=error[:2000])


def _settle(session: Session, change_id: str, **values: Any) -> None:
    session.execute(update(BillingChange).where(BillingChange.id == change_id)
                    .values(attempts=BillingChange.attempts + 1, claimed_until=None, **values)
                    .execution_options(synchronize_session=False))


def backoff(attempt: int) -> float:
    return min(BACKOFF_SECONDS * 2 ** max(attempt - 1, 0), MAX_BACKOFF_SECONDS)


def echo_of(session: Session, subscription_id: str, event: dict[str, Any]
            ) -> BillingChange | None:
    """The change of ours that ``event`` (``customer.subscription.updated`` or ``.deleted``)
    reports back, or None for a change billing made itself.

    Stripe names the request that caused an event, with its idempotency key, in
    ``event.request``; a key of ours is ours, any other (or none) is billing's own. An event
    without ``request`` (a server that does not say) is ours when it shows what the newest
    change sent for the subscription asked for and nothing reported that change back yet.
    """
    request = event.get("request")
    if isinstance(request, dict):
        key = request.get("idempotency_key")
        if not isinstance(key, str) or not key.startswith(KEY_PREFIX):
            return None
        change = session.scalar(select(BillingChange).where(
            BillingChange.idempotency_key == key,
            BillingChange.subscription_id == subscription_id))
    else:
        change = session.scalar(
            select(BillingChange)
            .where(BillingChange.subscription_id == subscription_id,
                   BillingChange.status != "skipped")
            .order_by(BillingChange.created_at.desc()).limit(1))
        if change is None or not _shows(change, event):
            return None
    if change is not None and change.echo_event_id is None:
        change.echo_event_id = str(event.get("id"))[:128]
    return change


def _shows(change: BillingChange, event: dict[str, Any]) -> bool:
    """Whether an event that names no request reports ``change``: sent, not reported yet, an
    update made after it was decided showing what it asked for."""
    obj = event["data"]["object"]
    created = event.get("created")
    return (change.status == "sent" and change.echo_event_id is None
            and event.get("type") == "customer.subscription.updated"
            and obj.get("cancel_at_period_end") is CHANGES[change.action]["cancel_at_period_end"]
            and isinstance(created, int | float) and not isinstance(created, bool)
            and created >= change.created_at.timestamp() - 1)


def changes_of(session: Session, *, status: str | None = None, limit: int = 100
               ) -> list[dict[str, Any]]:
    """Rows newest first, as an operator reads them."""
    query = select(BillingChange).order_by(BillingChange.created_at.desc()).limit(limit)
    if status is not None:
        query = query.where(BillingChange.status == status)
    return [{"change_id": row.id, "subscription_id": row.subscription_id,
             "action": row.action, "status": row.status,
             "stripe_subscription_id": row.stripe_subscription_id,
             "attempts": row.attempts, "next_attempt_at": row.next_attempt_at,
             "sent_at": row.sent_at, "error": row.last_error,
             "echo_event_id": row.echo_event_id, "actor": row.actor}
            for row in session.scalars(query)]
