"""Billing webhooks in Stripe's format: verify, record once, apply.

The signature is checked with the ``stripe`` package (HMAC-SHA256 over ``"{t}.{raw body}"``,
300 s tolerance), offline. The event id is inserted under a unique constraint in the same
transaction as the change it causes, so an event is applied exactly once: a redelivery (or ten
concurrent deliveries) fails the insert and changes nothing, and the endpoint answers 2xx only
after that transaction committed. Reordered events are normal input: every change is conditional
on the subscription's current status.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import InvalidRequest
from provisioning_pipelines.services import audit, billing
from provisioning_pipelines.storage.models import Subscription, WebhookEvent

TOLERANCE_SECONDS = 300
HANDLED = ("checkout.session.completed", "customer.subscription.deleted",
           "invoice.payment_failed")


class InvalidWebhook(InvalidRequest):
    """A delivery that is not a genuine, well-formed event (answered 400)."""

    status_code = 400
    code = "invalid_webhook"


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header for a payload (tests and ``webhook send``)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(payload: bytes, signature: str | None, secret: str) -> dict[str, Any]:
    """The event, if the signature is good and the body is an event; else ``InvalidWebhook``."""
    if not signature:
        raise InvalidWebhook("Stripe-Signature: header missing", field="Stripe-Signature")
    try:
        stripe.WebhookSignature.verify_header(payload.decode("utf-8"), signature, secret,
                                              TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError as exc:
        raise InvalidWebhook(f"Stripe-Signature: {exc.user_message or exc}",
                             field="Stripe-Signature") from None
    except UnicodeDecodeError:
        raise InvalidWebhook("body: not UTF-8", field="body") from None
    try:
        event = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise InvalidWebhook(f"body: not JSON ({exc.msg})", field="body") from None
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) \
            or not isinstance(event.get("type"), str) \
            or not isinstance((event.get("data") or {}).get("object"), dict):
        raise InvalidWebhook("body: expected an event with id, type and data.object",
                             field="body")
    return event


@dataclass(frozen=True)
class Applied:
    event_id: str
    event_type: str
    subscription_id: str | None = None
    paid: bool = False  # this event moved a subscription to provisioning
    ignored: str | None = None
    user_id: str | None = None  # the subscriber, when paid
    resource_type: str | None = None  # what to provision, when paid


def record_and_apply(session: Session, event: dict[str, Any]) -> Applied:
    """Insert the event (the unique id makes a duplicate fail here) and apply it."""
    created = event.get("created")
    session.add(WebhookEvent(
        id=event["id"], event_type=event["type"], payload=event,
        event_created_at=datetime.fromtimestamp(created, UTC)
        if isinstance(created, int | float) else None,
    ))
    session.flush()
    obj = event["data"]["object"]
    kind = event["type"]
    if kind not in HANDLED:
        return Applied(event["id"], kind, ignored="event type not handled")
    subscription = _subscription_of(session, obj)
    if subscription is None:
        return Applied(event["id"], kind, ignored="no subscription of ours")
    if kind == "checkout.session.completed":
        paid = obj.get("payment_status") == "paid" and billing.mark_paid(
            session, subscription.id, stripe_customer_id=_str(obj.get("customer")),
            stripe_subscription_id=_str(obj.get("subscription")))
        if not paid:
            return Applied(event["id"], kind, subscription.id)
        return Applied(event["id"], kind, subscription.id, paid=True,
                       user_id=subscription.user_id, resource_type=subscription.resource_type)
    if kind == "customer.subscription.deleted":
        billing.cancel(session, subscription.id)
        return Applied(event["id"], kind, subscription.id)
    audit.record(session, actor="billing", action="invoice.payment_failed",
                 subject_type="subscription", subject_id=subscription.id,
                 details={"event_id": event["id"], "invoice": _str(obj.get("id"))})
    return Applied(event["id"], kind, subscription.id)


def _subscription_of(session: Session, obj: dict[str, Any]) -> Subscription | None:
    metadata = obj.get("metadata") or {}
    ours = metadata.get("subscription_id") if isinstance(metadata, dict) else None
    if isinstance(ours, str):
        return session.get(Subscription, ours)
    stripe_ids = [_str(obj.get("subscription")), _str(obj.get("id"))]
    for stripe_id in filter(None, stripe_ids):
        found = session.scalar(select(Subscription).where(
            Subscription.stripe_subscription_id == stripe_id))
        if found is not None:
            return found
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def is_duplicate(session: Session, event_id: str) -> bool:
    return session.get(WebhookEvent, event_id) is not None
