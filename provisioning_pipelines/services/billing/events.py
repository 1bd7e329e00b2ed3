"""Billing events in Stripe's format, as a sender makes them: the event and its signature.

The one factory of a signed billing event, used by ``webhooks send``, ``make demo``, the tests and
the benchmarks, so that all of them speak the format the webhook reads
(``services/webhooks.py``). Standard library only: the CLI imports it without a database.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header for a payload: HMAC-SHA256 over ``"{t}.{payload}"``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def billing_event(subscription_id: str, kind: str = "checkout.session.completed", *,
                  event_id: str | None = None, created: int | None = None, paid: bool = True,
                  **fields: Any) -> dict[str, Any]:
    """An event about one of our subscriptions (named in its metadata); by default the paid
    checkout that provisions it. ``fields`` go into the event's object (``customer``,
    ``subscription``, ...)."""
    return {"id": event_id or f"evt_{subscription_id}_{uuid.uuid4().hex[:8]}", "type": kind,
            "created": int(time.time()) if created is None else created,
            "data": {"object": {"payment_status": "paid" if paid else "unpaid", **fields,
                                "metadata": {"subscription_id": subscription_id}}}}


def signed_delivery(event: dict[str, Any], secret: str, *, timestamp: int | None = None
                    ) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a delivery of ``event``, as a billing provider posts it."""
    payload = json.dumps(event).encode()
    return payload, {"Stripe-Signature": sign(payload, secret, timestamp),
                     "Content-Type": "application/json"}
