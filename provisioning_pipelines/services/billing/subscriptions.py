"""Subscriptions as billing sees them: created unpaid, paid, cancelled, invoiced, looked up.

The claim that provisions a paid subscription exactly once is in ``claims``; every other read or
write of a subscription row outside the claim is here, so entry points never touch the model.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Any

from sqlalchemy import Executable, Row, bindparam, select, update
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import InvalidRequest, NotFound
from provisioning_pipelines.services import audit, pages
from provisioning_pipelines.services.billing import outbox
from provisioning_pipelines.services.billing.event_order import (
    WATERMARK,
    EventKey,
    decided_now,
    watermark,
)
from provisioning_pipelines.services.billing.states import SUBSCRIPTION
from provisioning_pipelines.services.catalog import TIERS, repository_plan
from provisioning_pipelines.storage.db import execute_with_rows, takes_data_modifying_ctes
from provisioning_pipelines.storage.models import (
    BillingCustomer,
    Invoice,
    Subscription,
    new_id,
    utcnow,
)

RESOURCE_TYPES = ("graph", "repository")
STATUSES = SUBSCRIPTION.states
#: What a subscription id may look like where it comes from outside (a path, a command line).
SUBSCRIPTION_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def get_subscription(session: Session, subscription_id: str) -> Subscription:
    if not isinstance(subscription_id, str) or not SUBSCRIPTION_ID.fullmatch(subscription_id):
        raise NotFound(f"subscription_id: no subscription {str(subscription_id)[:70]!r}",
                       field="subscription_id")
    subscription = session.get(Subscription, subscription_id)
    if subscription is None:
        raise NotFound(
            f"subscription_id: no subscription {subscription_id!r}", field="subscription_id"
        )
    return subscription


def create_subscription(
    session: Session,
    *,
    user_id: str,
    org_id: str,
    resource_type: str,
    plan_name: str,
    request: dict[str, Any],
) -> Subscription:
    subscription = Subscription(
        id=new_id("sub"),
        user_id=user_id,
        org_id=org_id,
        resource_type=resource_type,
        plan_name=plan_name,
        status="pending_payment",
        request=request,
        attempts=0,
    )
    session.add(subscription)
    session.flush()
    return subscription


def mark_paid(
    session: Session,
    subscription_id: str,
    *,
    stripe_customer_id: str | None = None,
    stripe_subscription_id: str | None = None,
    operation_id: str | None = None,
    applied: EventKey | None = None,
) -> bool:
    """``pending_payment`` -> ``provisioning``; False (and no change) from any other status.

    ``operation_id`` is the operation that will report the provisioning, recorded in the same
    transaction, so whoever picks the work up (after a crash, say) continues it. ``applied`` is
    the billing event's key (``mark_applied``), written in the same statement as the payment,
    or alone when the subscription was not waiting for one.
    """
    now = utcnow()
    params = {"paid_id": subscription_id, "paid_when": now, "audit_at": now,
              "paid_customer": stripe_customer_id,
              "paid_stripe_subscription": stripe_subscription_id,
              "paid_operation": operation_id}
    if applied is not None:
        params.update({f"paid_{column}": value for column, value in watermark(applied).items()})
    together = takes_data_modifying_ctes(session)  # the audit entry in the same statement
    moved = session.execute(_paid_statement(applied is not None, together), params).first()
    if moved is not None:
        if not together:
            audit.record(session, actor="billing", action="subscription.paid",
                         subject_type="subscription", subject_id=subscription_id)
        return True
    if applied is not None:
        session.execute(update(Subscription).where(Subscription.id == subscription_id)
                        .values(**watermark(applied)))
    get_subscription(session, subscription_id)
    return False


@functools.cache
def _paid_statement(watermark: bool, audited: bool) -> Executable:
    """``mark_paid``'s statement, built once and then only bound: the UPDATE returning the
    subscription it moved and, when ``audited``, the audit entry for it as a CTE beside it."""
    table = Subscription.__table__
    values = {"status": SUBSCRIPTION.target("pay"), "paid_at": bindparam("paid_when"),
              "updated_at": bindparam("paid_when"),
              "stripe_customer_id": bindparam("paid_customer"),
              "stripe_subscription_id": bindparam("paid_stripe_subscription"),
              "operation_id": bindparam("paid_operation")}
    if watermark:
        values.update({column: bindparam(f"paid_{column}") for column in WATERMARK})
    moved = (update(table)
             .where(table.c.id == bindparam("paid_id"),
                    table.c.status == SUBSCRIPTION.source("pay"))
             .values(values).returning(table.c.id))
    if not audited:
        return moved
    paid = moved.cte("paid")
    entry = audit.for_each(paid, actor="billing", action="subscription.paid",
                           subject_type="subscription")
    return select(paid.c.id).add_cte(entry.cte("paid_audit"))


def subscription_for_event(session: Session, subscription_id: str, *,
                           rows: list[Any] | None = None) -> Subscription | None:
    """The subscription a billing event names, locked until the transaction ends, so the
    event is decided on a row no other event (or claim) changes meanwhile; ``rows`` (the
    event's own record) are inserted in the same round trip."""
    return execute_with_rows(session, _FOR_EVENT, {"event_subscription": subscription_id},
                             rows or []).scalar_one_or_none()


_FOR_EVENT = (select(Subscription).where(Subscription.id == bindparam("event_subscription"))
              .with_for_update().execution_options(populate_existing=True))


def cancel(session: Session, subscription_id: str, *, actor: str = "billing") -> bool:
    """The subscription ends now; its resource is then suspended (a lifecycle flow).

    A provisioning in flight loses its claim: its next fenced write fails, and what it made is
    suspended like any other cancelled subscription's resource. A user's cancellation (any
    ``actor`` but billing) is a decision as of now: a billing event sent before it is older,
    and the billing system is told of it through the outbox, in this transaction.
    """
    subscription = get_subscription(session, subscription_id)
    if subscription.status == "canceled":
        return False
    if actor != "billing":
        decided_now(subscription, "canceled", actor)
    subscription.status = "canceled"
    subscription.canceled_at = utcnow()
    subscription.claim_token = None
    subscription.lease_expires_at = None
    audit.record(session, actor=actor, action="subscription.canceled",
                 subject_type="subscription", subject_id=subscription_id)
    outbox.record(session, subscription, "cancel", actor=actor)
    return True


def schedule_cancellation(session: Session, subscription: Subscription,
                          at: datetime | None, key: EventKey) -> None:
    """Cancel at the period's end (``at``), or not any more (None), as the event ``key``
    (the newest update so far) says."""
    subscription.cancel_at = at
    subscription.schedule_event_at, _rank, subscription.schedule_event_id = key
    audit.record(session, actor="billing", action="subscription.cancel_scheduled"
                 if at else "subscription.cancel_unscheduled", subject_type="subscription",
                 subject_id=subscription.id, details={"at": at.isoformat() if at else None})


def reactivate(session: Session, subscription: Subscription, *, actor: str = "billing") -> None:
    """A cancelled subscription with a live resource is active again (a user's reactivation
    is a decision as of now, like a cancellation, and told to billing like one)."""
    if actor != "billing":
        decided_now(subscription, "reactivated", actor)
    subscription.status = "active"
    subscription.canceled_at = None
    audit.record(session, actor=actor, action="subscription.reactivated",
                 subject_type="subscription", subject_id=subscription.id)
    outbox.record(session, subscription, "reactivate", actor=actor)


def rebind(subscription: Subscription, *, stripe_customer_id: str | None,
           stripe_subscription_id: str | None) -> None:
    """A new payment for a cancelled subscription comes with a new subscription in the
    billing system: that is the one to tell of what is decided here from now on."""
    if stripe_subscription_id:
        subscription.stripe_subscription_id = stripe_subscription_id
    if stripe_customer_id:
        subscription.stripe_customer_id = stripe_customer_id


def repay(session: Session, subscription: Subscription, *,
          operation_id: str | None) -> None:
    """A cancelled subscription that never got its resource is paid again: provision it."""
    subscription.status = "provisioning"
    subscription.canceled_at = None
    subscription.queued_at = None
    subscription.attempts = 0
    subscription.retry_after = None
    subscription.last_error = None
    subscription.paid_at = utcnow()
    if operation_id is not None:
        subscription.operation_id = operation_id
    audit.record(session, actor="billing", action="subscription.paid",
                 subject_type="subscription", subject_id=subscription.id)


def price_cents(subscription: Subscription | Row[Any]) -> int:
    if subscription.resource_type == "graph":
        tier = TIERS.get(subscription.plan_name)
        return tier.price_cents if tier else 0
    return repository_plan(subscription.plan_name)[1].price_cents


#: Whether the subscription's customer is billed by invoice, as a column a statement over the
#: subscription can return.
INVOICE_BILLING = (select(BillingCustomer.__table__.c.invoice_billing)
                   .where(BillingCustomer.__table__.c.org_id == Subscription.__table__.c.org_id)
                   .correlate(Subscription.__table__).scalar_subquery().label("invoice_billing"))

# Built once and only bound: a ``lambda_stmt`` re-inspects its closure on every call, a third of
# what this one read costs in Python.
_OWNER = (select(Subscription.__table__.c.user_id)
          .where(Subscription.__table__.c.id == bindparam("subscription_id")))
_INVOICED_CUSTOMER = (select(BillingCustomer.__table__.c.id,
                             BillingCustomer.__table__.c.invoice_billing)
                      .where(BillingCustomer.__table__.c.org_id == bindparam("org_id")))


def raise_invoice(session: Session, subscription: Subscription | Row[Any]) -> Invoice | None:
    """Customers billed by invoice get one per activated subscription (never two)."""
    customer = session.execute(_INVOICED_CUSTOMER, {"org_id": subscription.org_id}).first()
    if customer is None or not customer.invoice_billing:
        return None
    existing = session.scalar(select(Invoice).where(Invoice.subscription_id == subscription.id))
    if existing is not None:
        return existing
    invoice = Invoice(
        id=new_id("inv"),
        org_id=subscription.org_id,
        customer_id=customer.id,
        subscription_id=subscription.id,
        amount_cents=price_cents(subscription),
        currency="usd",
        status="open",
    )
    session.add(invoice)
    audit.record(session, actor="billing", action="invoice.raised", subject_type="subscription",
                 subject_id=subscription.id, details={"invoice_id": invoice.id,
                                                      "amount_cents": invoice.amount_cents})
    return invoice


# --- reading subscriptions ----------------------------------------------------------------------


def reported_by(session: Session, operation_id: str, user_id: str) -> Subscription | None:
    """The user's subscription whose provisioning ``operation_id`` reports, if any."""
    return session.scalar(select(Subscription).where(
        Subscription.operation_id == operation_id, Subscription.user_id == user_id))


def summary(subscription: Subscription) -> dict[str, Any]:
    """A subscription as the API, the CLI and a launched run's result show it."""
    return {"subscription_id": subscription.id, "status": subscription.status,
            "resource_type": subscription.resource_type, "resource_id": subscription.resource_id,
            "plan_name": subscription.plan_name, "user_id": subscription.user_id,
            "attempts": subscription.attempts, "error": subscription.last_error}


def subscriptions_of(session: Session, user_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """The user's subscriptions, newest first, with the operation reporting each."""
    rows = session.scalars(select(Subscription).where(Subscription.user_id == user_id)
                           .order_by(Subscription.created_at.desc()).limit(limit))
    return [{**summary(row), "operation_id": row.operation_id,
             "created_at": row.created_at.isoformat()} for row in rows]


def subscriptions_page(session: Session, user_id: str, *, after: pages.Key | None = None,
                       limit: int = pages.DEFAULT_LIMIT) -> pages.Page[dict[str, Any]]:
    """One page of ``subscriptions_of`` (``GET /v1/subscriptions``)."""
    found = pages.keyset(session, select(Subscription).where(Subscription.user_id == user_id),
                         Subscription.created_at, Subscription.id, after=after, limit=limit)
    return found.map(_listed)


def _listed(row: Subscription) -> dict[str, Any]:
    return {**summary(row), "operation_id": row.operation_id,
            "created_at": row.created_at.isoformat()}


def subscription_of_user(session: Session, subscription_id: str, user_id: str) -> Subscription:
    """The user's own subscription; anyone else's answers exactly like one that does not exist."""
    if not SUBSCRIPTION_ID.fullmatch(subscription_id):
        raise NotFound(f"no subscription {subscription_id[:70]!r}", field="subscription_id")
    subscription = session.get(Subscription, subscription_id)
    if subscription is None or subscription.user_id != user_id:
        raise NotFound(f"no subscription {subscription_id!r}", field="subscription_id")
    return subscription


def owner_of(session: Session, subscription_id: str) -> str | None:
    """Who an operation about the subscription belongs to (asked before a direct run that
    opens its own operation)."""
    return session.execute(_OWNER, {"subscription_id": subscription_id}).scalar()


def settled_between(session: Session, since: datetime, until: datetime,
                    limit: int = 1000) -> list[dict[str, Any]]:
    """Subscriptions that became ``active`` or ``failed`` in the window, with the operation
    that reported them: a worker that died right after settling one never ended it."""
    rows = session.scalars(
        select(Subscription)
        .where(Subscription.status.in_(("active", "failed")),
               Subscription.operation_id.is_not(None),
               Subscription.updated_at >= since, Subscription.updated_at < until)
        .order_by(Subscription.updated_at).limit(limit))
    return [{**summary(row), "operation_id": row.operation_id, "settled_at": row.updated_at}
            for row in rows]


def list_subscriptions(session: Session, *, user_id: str | None = None,
                       status: str | None = None) -> list[Subscription]:
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status: unknown status {status!r}; choose one of "
                             f"{', '.join(STATUSES)}", field="status")
    query = select(Subscription).order_by(Subscription.created_at)
    if user_id is not None:
        query = query.where(Subscription.user_id == user_id)
    if status is not None:
        query = query.where(Subscription.status == status)
    return list(session.scalars(query))


def unprovisioned(session: Session, *, paid_before: datetime, limit: int = 100
                  ) -> list[Subscription]:
    """Paid subscriptions still without their resource (provisioning, queued for a slot, or
    failed) since before ``paid_before``: a customer who paid and has nothing."""
    return list(session.scalars(
        select(Subscription)
        .where(Subscription.status.in_(("provisioning", "queued", "failed")),
               Subscription.resource_id.is_(None), Subscription.paid_at < paid_before)
        .order_by(Subscription.paid_at).limit(limit)))
