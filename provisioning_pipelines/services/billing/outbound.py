"""Sending the outbox to the billing system (Stripe, through the ``stripe`` package).

``deliver_due`` is the one worker loop, run by each API process (``direct/recovery.py``) and by
Dagster's billing sensor alike: it claims a due row, commits the claim, sends the change with
the row's idempotency key and records the outcome. A failure that may pass (the server down or
slow, a 5xx, rate limiting, a key that is wrong until an operator fixes it) is retried with
backoff, for as long as it takes; a refusal (the subscription unknown to billing, or ended
there) fails the row, keeps why, and is written to the audit log. Without ``STRIPE_API_KEY``
nothing is sent and the rows wait.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import stripe

from provisioning_pipelines.services import audit
from provisioning_pipelines.services.billing import outbox
from provisioning_pipelines.storage.db import Database

logger = logging.getLogger("provisioning_pipelines.billing")

#: Seconds one request to the billing system may take (connect and read).
REQUEST_TIMEOUT_SECONDS = 10.0


class Sender(Protocol):
    def send(self, stripe_subscription_id: str, params: dict[str, Any],
             idempotency_key: str) -> None: ...


class StripeSender:
    """Changes to a subscription through Stripe's API; the client's own retries are off, since
    the outbox retries with the same key."""

    def __init__(self, api_key: str, api_base: str,
                 timeout: float = REQUEST_TIMEOUT_SECONDS) -> None:
        self._client = stripe.StripeClient(
            api_key, base_addresses={"api": api_base}, max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=timeout))

    def send(self, stripe_subscription_id: str, params: dict[str, Any],
             idempotency_key: str) -> None:
        self._client.v1.subscriptions.update(stripe_subscription_id, params=params,
                                             options={"idempotency_key": idempotency_key})


@dataclass
class Delivered:
    """What one round did."""

    sent: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{len(self.sent)} sent, {len(self.retrying)} to retry, "
                f"{len(self.failed)} refused")


def refused(exc: stripe.StripeError) -> bool:
    """Whether billing refused the change for good (sending it again cannot help)."""
    if isinstance(exc, stripe.IdempotencyError):
        return True
    return isinstance(exc, stripe.InvalidRequestError) and exc.http_status not in (409, 429)


def deliver_due(database: Database, sender: Sender | None, *, now: datetime | None = None,
                limit: int = 100) -> Delivered:
    """Send up to ``limit`` due rows, one at a time; ``now`` decides what is due (tests)."""
    done = Delivered()
    if sender is None:
        return done
    for _ in range(limit):
        with database.session() as session:
            due = outbox.claim_next(session, now=now)
        if due is None:
            break
        try:
            sender.send(due.stripe_subscription_id, due.params, due.idempotency_key)
        except stripe.StripeError as exc:
            reason = f"{type(exc).__name__}: {exc.user_message or exc}"
            with database.session() as session:
                if refused(exc):
                    outbox.mark_failed(session, due.change_id, reason)
                    audit.record(session, actor="billing-outbox", action="billing.refused",
                                 subject_type="subscription", subject_id=due.subscription_id,
                                 details={"change_id": due.change_id, "action": due.action,
                                          "error": reason[:500]})
                    done.failed.append(due.change_id)
                    logger.error("billing refused %s of subscription %s (%s): %s",
                                 due.action, due.subscription_id, due.change_id, reason)
                    continue
                at = outbox.mark_retry(session, due, reason, now=now)
            done.retrying.append(due.change_id)
            logger.warning("billing %s of subscription %s (%s), attempt %d: %s; again at %s",
                           due.action, due.subscription_id, due.change_id, due.attempts + 1,
                           reason, f"{at:%H:%M:%S}")
            continue
        with database.session() as session:
            outbox.mark_sent(session, due.change_id, now=now)
        done.sent.append(due.change_id)
        logger.info("billing told: %s of subscription %s (%s)", due.action,
                    due.subscription_id, due.stripe_subscription_id)
    return done
