"""Billing webhooks in Stripe's format: verify, record once, apply, or reject and keep.

The signature is checked with the ``stripe`` package (HMAC-SHA256 over ``"{t}.{raw body}"``,
300 s tolerance), offline, and refused when dated more than the tolerance ahead (the package
bounds only the past). A delivery that is not genuine, or not JSON at all, is refused (400)
and nothing is kept. A genuine one is always recorded, under a unique event id in the same
transaction as the change it causes, so an event is applied exactly once: a redelivery (or ten
concurrent deliveries) fails the insert and changes nothing, and the endpoint answers 2xx only
after that transaction committed.

A genuine event whose content we cannot apply (wrong shapes, out-of-range values, over-long or
NUL-bearing fields that we read, JSON nested too deeply to read) is recorded as ``rejected`` with
its reason and answered 200: the sender must not retry what will never apply, and nothing is
lost, since ``webhooks list --rejected`` shows it and ``webhooks replay`` applies it after a fix.
The raw body is what we keep (text, exactly as signed), so any content can be stored.

Reordered events are normal input: every change is conditional on the subscription's current
status.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

import stripe
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import Conflict, InvalidRequest, NotFound
from provisioning_pipelines.services import audit
from provisioning_pipelines.services.billing import event_order, outbox
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.services.billing.event_order import event_key
from provisioning_pipelines.services.graphs import lifecycle
from provisioning_pipelines.services.validation import text_problem, type_name
from provisioning_pipelines.storage.db import insert_all
from provisioning_pipelines.storage.models import Subscription, WebhookEvent

TOLERANCE_SECONDS = 300
#: The largest body the endpoint reads; Stripe's events are a few KiB.
MAX_BODY_BYTES = 1024 * 1024
HANDLED = ("checkout.session.completed", "customer.subscription.updated",
           "customer.subscription.deleted", "invoice.payment_failed")
#: The events with which billing reports back a change we sent it (``services/billing/outbox``).
OUR_ECHOES = ("customer.subscription.updated", "customer.subscription.deleted")
# Seconds since the epoch that a datetime can hold (year 1 ... 9999 would overflow below 0).
_LATEST_TIMESTAMP = 253402300799
# The fields of data.object each handled event reads, and their column lengths.
_READ_FIELDS = {"customer": 128, "subscription": 128, "id": 128, "payment_status": 64}


class InvalidWebhook(InvalidRequest):
    """A delivery that is not a genuine event (answered 400, nothing kept)."""

    status_code = 400
    code = "invalid_webhook"


@dataclass(frozen=True)
class Delivery:
    """A genuine delivery: its raw text, and the event or why it cannot be applied."""

    event_id: str
    raw: str
    event: dict[str, Any] | None
    rejected: str | None = None

    @property
    def event_type(self) -> str:
        kind = self.event.get("type") if self.event else None
        return kind if isinstance(kind, str) and not self.rejected else "unreadable"

    @property
    def created_at(self) -> datetime | None:
        created = self.event.get("created") if self.event and not self.rejected else None
        return datetime.fromtimestamp(created, UTC) if created is not None else None


def verify(payload: bytes, signature: str | None, secret: str) -> Delivery:
    """The delivery, if the signature is good and the body is JSON; else ``InvalidWebhook``."""
    if not signature:
        raise InvalidWebhook("Stripe-Signature: header missing", field="Stripe-Signature")
    try:
        raw = payload.decode("utf-8")
        stripe.WebhookSignature.verify_header(raw, signature, secret, TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError as exc:
        raise InvalidWebhook(f"Stripe-Signature: {exc.user_message or exc}",
                             field="Stripe-Signature") from None
    except UnicodeDecodeError:
        raise InvalidWebhook("body: not UTF-8", field="body") from None
    ahead = _signed_at(signature) - time.time()
    if ahead > TOLERANCE_SECONDS:
        raise InvalidWebhook(f"Stripe-Signature: signed {ahead:.0f} s in the future; more than "
                             f"the {TOLERANCE_SECONDS} s tolerance", field="Stripe-Signature")
    return read(raw)


def _signed_at(signature: str) -> float:
    """The header's ``t=``, which the ``stripe`` package bounds in the past only: a signature
    dated ahead would otherwise stay replayable until that date plus the tolerance."""
    for item in signature.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit():
            return int(value)
    raise InvalidWebhook("Stripe-Signature: no timestamp", field="Stripe-Signature")


def read(raw: str) -> Delivery:
    """Parse a genuine delivery's body into the event, or the reason it cannot be applied."""
    try:
        event = json.loads(raw)
    except RecursionError:
        return Delivery(_fallback_id(raw), raw, None, "body: nested too deeply to read")
    except json.JSONDecodeError as exc:
        raise InvalidWebhook(f"body: not JSON ({exc.msg})", field="body") from None
    problem = _problem(event)
    event_id = event.get("id") if isinstance(event, dict) else None
    if not isinstance(event_id, str) or text_problem(event_id, max_length=128):
        event_id = _fallback_id(raw)
    return Delivery(event_id, raw, event if isinstance(event, dict) else None, problem)


def _fallback_id(raw: str) -> str:
    """A stable id for an event whose own id is unusable, so its redeliveries are duplicates."""
    return "unreadable_" + hashlib.sha256(raw.encode()).hexdigest()[:32]


def _problem(event: Any) -> str | None:
    """Why this event cannot be applied, naming the field, or None."""
    if not isinstance(event, dict):
        return f"body: expected an event object, got {type_name(event)}"
    for field, limit in (("id", 128), ("type", 64)):
        value = event.get(field)
        if not isinstance(value, str) or not value:
            return f"{field}: expected a non-empty string, got {type_name(value)}"
        problem = text_problem(value, max_length=limit)
        if problem:
            return f"{field}: {problem}"
    created = event.get("created")
    if created is not None and (
            isinstance(created, bool) or not isinstance(created, int | float)
            or not math.isfinite(created) or not 0 <= created <= _LATEST_TIMESTAMP):
        return f"created: expected seconds since 1970, got {created!r:.40}"
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        return f"data.object: expected an object, got {type_name(obj)}"
    if event["type"] not in HANDLED:
        return None
    for field, limit in _READ_FIELDS.items():
        value = obj.get(field)
        if isinstance(value, str) and (problem := text_problem(value, max_length=limit)):
            return f"data.object.{field}: {problem}"
    flag = obj.get("cancel_at_period_end")
    if flag is not None and not isinstance(flag, bool):  # read as "no cancellation" otherwise
        return f"data.object.cancel_at_period_end: expected true or false, got {flag!r:.40}"
    for field in ("cancel_at", "current_period_end"):
        when = obj.get(field)
        if when is not None and (isinstance(when, bool) or not isinstance(when, int | float)
                                 or not math.isfinite(when)
                                 or not 0 <= when <= _LATEST_TIMESTAMP):
            return f"data.object.{field}: expected seconds since 1970, got {when!r:.40}"
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return f"data.object.metadata: expected an object, got {type_name(metadata)}"
    ours = (metadata or {}).get("subscription_id")
    if isinstance(ours, str) and (problem := text_problem(ours, max_length=64)):
        return f"data.object.metadata.subscription_id: {problem}"
    request = event.get("request")
    key = request.get("idempotency_key") if isinstance(request, dict) else None
    if isinstance(key, str) and (problem := text_problem(key, max_length=255)):
        return f"request.idempotency_key: {problem}"
    return None


@dataclass(frozen=True)
class Applied:
    event_id: str
    event_type: str
    subscription_id: str | None = None
    paid: bool = False  # this event moved a subscription to provisioning
    ignored: str | None = None
    user_id: str | None = None  # the subscriber, when paid
    resource_type: str | None = None  # what to provision, when paid
    status: str = "applied"  # as recorded: applied, ignored or rejected
    canceled: bool = False  # this event cancelled the subscription: its resource is suspended
    reactivated: bool = False  # a new payment for a cancelled one: its resource comes back

    @property
    def change(self) -> Literal["paid", "canceled", "reactivated"] | None:
        """What this event did to its subscription (``paid``, ``canceled``, ``reactivated``)."""
        return ("paid" if self.paid else "canceled" if self.canceled
                else "reactivated" if self.reactivated else None)


def record_and_apply(session: Session, delivery: Delivery, *,
                     operation_id: str | None = None) -> Applied:
    """Record the event, then apply or reject it, in one transaction. Its insert shares a round
    trip with reading (and locking) its subscription, and a duplicate's fails there: a
    redelivery changes nothing.

    ``operation_id`` is recorded on a subscription this event pays for (``Applied.paid``): the
    operation the caller then opens and provisions under.
    """
    new = WebhookEvent(id=delivery.event_id, event_type=delivery.event_type[:64],
                       raw_body=delivery.raw, event_created_at=delivery.created_at)
    applied = _apply(session, delivery, operation_id, new)
    if (new.status or "applied", new.reason) != (applied.status, applied.ignored):
        # recorded before the outcome was known (as applied, the common case)
        session.execute(update(WebhookEvent).where(WebhookEvent.id == delivery.event_id)
                        .values(status=applied.status, reason=applied.ignored))
    return applied


def record_rejected(session: Session, delivery: Delivery, reason: str) -> Applied:
    """Keep a delivery that could not be applied (the database refused its content)."""
    session.add(WebhookEvent(id=delivery.event_id, event_type="unreadable",
                             raw_body=delivery.raw, status="rejected", reason=reason))
    return Applied(delivery.event_id, "unreadable", ignored=reason, status="rejected")


def _apply(session: Session, delivery: Delivery, operation_id: str | None = None,
           new: WebhookEvent | None = None) -> Applied:
    """The event's outcome; ``new``, the event's record, is inserted on the way (with its
    outcome, when that is known before anything is read)."""
    if delivery.rejected or delivery.event is None:
        if new is not None:
            new.status, new.reason = "rejected", delivery.rejected
            insert_all(session, [new])
        return Applied(delivery.event_id, delivery.event_type, ignored=delivery.rejected,
                       status="rejected")
    applied = _act(session, delivery.event, operation_id, new)
    return replace(applied, status="ignored" if applied.ignored else "applied")


def _act(session: Session, event: dict[str, Any], operation_id: str | None,
         new: WebhookEvent | None) -> Applied:
    obj = event["data"]["object"]
    kind = event["type"]
    if kind not in HANDLED:
        ignored = Applied(event["id"], kind, ignored="event type not handled")
        if new is not None:
            new.status, new.reason = "ignored", ignored.ignored
            insert_all(session, [new])
        return ignored
    subscription = _subscription_of(session, obj, new)
    if subscription is None:
        return Applied(event["id"], kind, ignored="no subscription of ours")
    applied = Applied(event["id"], kind, subscription.id, user_id=subscription.user_id,
                      resource_type=subscription.resource_type)
    if kind in OUR_ECHOES and (ours := outbox.echo_of(session, subscription.id, event)):
        return replace(applied, ignored=f"our own change ({ours.action}, billing change "
                       f"{ours.id}), applied already")
    if kind == "invoice.payment_failed":
        audit.record(session, actor="billing", action="invoice.payment_failed",
                     subject_type="subscription", subject_id=subscription.id,
                     details={"event_id": event["id"], "invoice": _str(obj.get("id"))})
        return applied
    key = event_key(_created(event), kind, event["id"])
    if kind == "customer.subscription.updated":
        # Only the newest update decides when the subscription ends; it never touches the
        # status, so the two converge each on its own newest event.
        if not event_order.newer_schedule(subscription, key):
            return replace(applied, ignored="older than an update already applied")
        cancel_at = obj.get("cancel_at") or obj.get("current_period_end")
        billing.schedule_cancellation(
            session, subscription, _timestamp(cancel_at)
            if obj.get("cancel_at_period_end") is True else None, key)
        return applied
    if kind == "checkout.session.completed" and obj.get("payment_status") != "paid":
        return applied
    if not event_order.newer_than_applied(subscription, key):
        # An older or repeated event never undoes or extends what a newer one decided.
        return replace(applied, ignored="older than an event already applied")
    if kind == "customer.subscription.deleted":
        event_order.mark_applied(subscription, key)
        return replace(applied, canceled=billing.cancel(session, subscription.id))
    if subscription.status == "canceled":
        event_order.mark_applied(subscription, key)
        return _paid_again(session, subscription, obj, applied, operation_id)
    paid = billing.mark_paid(  # the event's key in the same statement as the payment
        session, subscription.id, stripe_customer_id=_str(obj.get("customer")),
        stripe_subscription_id=_str(obj.get("subscription")), operation_id=operation_id,
        applied=key)
    return replace(applied, paid=paid)


def _paid_again(session: Session, subscription: Subscription, obj: dict[str, Any],
                applied: Applied, operation_id: str | None) -> Applied:
    """A new payment for a cancelled subscription: its resource comes back within the grace,
    or is provisioned if it never was; one deleted already stays deleted. Either way the
    payment's subscription in billing is the one told of later changes."""
    state = lifecycle.resource_state(session, subscription)
    if state == "gone":
        return replace(applied, ignored="the subscription ended and its resource was deleted")
    billing.rebind(subscription, stripe_customer_id=_str(obj.get("customer")),
                   stripe_subscription_id=_str(obj.get("subscription")))
    if state == "live":
        billing.reactivate(session, subscription)
        return replace(applied, reactivated=True)
    billing.repay(session, subscription, operation_id=operation_id)
    return replace(applied, paid=True)


def _created(event: dict[str, Any]) -> datetime:
    """The event's own time (a missing one sorts before any other)."""
    created = event.get("created")
    return _timestamp(created) or datetime.min.replace(tzinfo=UTC)


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not 0 <= value <= _LATEST_TIMESTAMP:
        return None
    return datetime.fromtimestamp(value, UTC)


def _subscription_of(session: Session, obj: dict[str, Any], new: WebhookEvent | None
                     ) -> Subscription | None:
    """The subscription the event is about, locked; ``new`` is inserted on the way."""
    metadata = obj.get("metadata") or {}
    ours = metadata.get("subscription_id")
    if isinstance(ours, str):
        return billing.subscription_for_event(session, ours, rows=[new] if new else None)
    if new is not None:
        insert_all(session, [new])
    stripe_ids = [_str(obj.get("subscription")), _str(obj.get("id"))]
    for stripe_id in filter(None, stripe_ids):
        found = session.scalar(select(Subscription).where(
            Subscription.stripe_subscription_id == stripe_id).with_for_update()
            .execution_options(populate_existing=True))
        if found is not None:
            return found
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def is_duplicate(session: Session, event_id: str) -> bool:
    return session.get(WebhookEvent, event_id) is not None


# --- what an operator does with recorded events ------------------------------------------------


def list_events(session: Session, *, rejected_only: bool = False,
                limit: int = 100) -> list[dict[str, Any]]:
    query = select(WebhookEvent).order_by(WebhookEvent.received_at.desc()).limit(limit)
    if rejected_only:
        query = query.where(WebhookEvent.status == "rejected")
    return [{"event_id": row.id, "type": row.event_type, "status": row.status,
             "reason": row.reason, "received_at": row.received_at}
            for row in session.scalars(query)]


def replay(session: Session, event_id: str) -> Applied:
    """Apply a rejected event again, as today's code reads it (after a fix, say)."""
    row = session.get(WebhookEvent, event_id)
    if row is None:
        raise NotFound(f"event_id: no webhook event {event_id!r}", field="event_id")
    if row.status != "rejected":
        raise Conflict(f"event {event_id!r} was {row.status} already; only a rejected event "
                       "is replayed", field="event_id")
    if row.raw_body is None:
        raise Conflict(f"event {event_id!r} has no stored body to replay", field="event_id")
    try:
        delivery = read(row.raw_body)
    except InvalidWebhook as exc:
        row.reason = exc.message
        return Applied(event_id, row.event_type, ignored=exc.message)
    if not delivery.rejected and delivery.event is not None:
        row.event_type = delivery.event_type
        row.event_created_at = delivery.created_at
    applied = _apply(session, delivery)
    row.status, row.reason = applied.status, applied.ignored
    return applied
