"""The claim that makes provisioning happen exactly once, and every query about who may claim.

Every trigger (webhook, sensor, UI launch, direct call) goes through ``claim``: one conditional
``UPDATE subscriptions ... WHERE <claimable>`` that exactly one caller wins, whatever the
database's isolation level. The winner gets a fresh ``claim_token``; every later write of that
attempt (the resource id, activation, giving up) is conditional on still holding that token, so
a worker whose lease lapsed cannot undo or overwrite the work of the worker that took over.

The predicates below (``free``, ``claimable``) are the one definition of "nobody holds it" and
"an attempt may start now"; what is due (``due.py``) is
built from them, so a sensor never launches a run the claim would refuse. See
``docs/decisions.md``.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import (
    ColumnElement,
    Row,
    String,
    Update,
    and_,
    bindparam,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import Conflict, PaymentRequired, ProvisioningError
from provisioning_pipelines.services import audit
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.services.billing.states import SUBSCRIPTION
from provisioning_pipelines.storage.db import execute_with_rows, is_postgresql
from provisioning_pipelines.storage.models import Subscription, UTCDateTime, utcnow


class ClaimHeld(Conflict):
    """Another worker is provisioning this subscription right now, or its backoff runs."""

    code = "claim_held"

    def __init__(self, message: str, *, field: str | None = None, backoff: bool = False) -> None:
        super().__init__(message, field=field)
        #: True while waiting out a failed attempt's backoff (not worth waiting for).
        self.backoff = backoff


class ClaimLost(Conflict):
    """This worker's lease lapsed and another worker took the subscription over."""

    code = "claim_lost"


class Queued(ClaimHeld):
    """The subscription waits for a free slot in its tier's queue."""

    code = "queued"

    def __init__(self, subscription_id: str, tier: str, position: int) -> None:
        super().__init__(f"subscription {subscription_id!r} waits for a free slot on tier "
                         f"{tier}: position {position} in its queue", field="subscription_id",
                         backoff=True)
        self.position = position


class RetryScheduled(ProvisioningError):
    """An attempt failed and another will follow: the work goes on, under the same operation.

    Not a failure of the operation: whoever makes the next attempt (any process: the direct
    path's resumer, a sensor's run) continues it and ends it, completed or failed.
    """

    status_code = 503
    code = "retry_scheduled"

    def __init__(self, subscription_id: str, *, attempt: int, max_attempts: int, reason: str,
                 reason_code: str, retry_in: float | None) -> None:
        when = f"retrying in {retry_in:.0f} s" if retry_in and retry_in >= 1 else "retrying shortly"
        super().__init__(f"attempt {attempt} of {max_attempts} failed: {reason}; {when}",
                         field="subscription_id")
        self.subscription_id = subscription_id
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.reason_code = reason_code
        self.retry_in = retry_in


@dataclass(frozen=True)
class Claim:
    """One attempt's hold on a subscription (``token`` is None when it was already active)."""

    subscription_id: str
    token: str | None
    attempt: int
    resource_type: str
    user_id: str
    org_id: str
    plan_name: str
    request: dict[str, Any] = field(default_factory=dict)
    resource_id: str | None = None

    @property
    def already_active(self) -> bool:
        return self.token is None


@dataclass(frozen=True)
class DueSubscription:
    """A subscription a run should be launched for, the attempt that run will be, and the
    operation it continues (if any)."""

    subscription_id: str
    user_id: str
    attempt: int
    resource_type: str
    operation_id: str | None


_TABLE = Subscription.__table__
#: A subscription's columns as a statement returns them (``request`` under its attribute's name).
_ROW = [column.label("request") if column.key == "metadata" else column for column in _TABLE.c]


def free(now: datetime | ColumnElement[Any]) -> ColumnElement[bool]:
    """Nobody holds the subscription: never claimed, given back, or its holder's lease lapsed."""
    return or_(Subscription.claim_token.is_(None), Subscription.lease_expires_at < now)


def claimable(now: datetime | ColumnElement[Any],
               max_attempts: int | ColumnElement[Any]) -> ColumnElement[bool]:
    """An attempt may start now: paid, free, past its backoff, with attempts left."""
    return and_(
        Subscription.status == "provisioning",
        free(now),
        or_(Subscription.retry_after.is_(None), Subscription.retry_after <= now),
        Subscription.attempts < max_attempts,
    )


@functools.cache
def _claim_statement(lazy_commit: bool) -> Update:
    """The claim, built once and then only bound: ``UPDATE ... WHERE <claimable> RETURNING``.

    ``lazy_commit`` (PostgreSQL): the claim's transaction commits without waiting for its WAL
    to reach the disk (``synchronous_commit`` off for this transaction only, set by the
    statement itself, so no round trip more). Safe because nothing outside the database
    follows the claim before the next write of the attempt commits, and that commit waits
    for the WAL up to itself, the claim's included: a crash of PostgreSQL in between loses
    the claim alone, the attempt's next write fails with the connection, and the subscription
    is claimable again as if never claimed (an attempt not counted). It saves the claim's own
    flush (~0.2-0.3 ms on the development machine's disk, per graph).
    """
    now = bindparam("now", type_=UTCDateTime)
    returning = [*_ROW]
    if lazy_commit:
        returning.append(func.set_config("synchronous_commit", "off", True).label("lazy"))
    return (update(_TABLE)
            .where(_TABLE.c.id == bindparam("subscription_id"),
                   claimable(now, bindparam("max_attempts")))
            .values(claim_token=bindparam("token"), claimed_at=now,
                    lease_expires_at=bindparam("lease", type_=UTCDateTime),
                    attempts=_TABLE.c.attempts + 1, updated_at=now,
                    operation_id=func.coalesce(bindparam("claim_operation_id", type_=String),
                                               _TABLE.c.operation_id))
            .returning(*returning))


def claim(
    session: Session,
    subscription_id: str,
    *,
    lease_seconds: float,
    max_attempts: int,
    now: datetime | None = None,
    operation_id: str | None = None,
) -> Claim:
    """Win the subscription for one attempt, or say why not.

    The winner's ``operation_id`` (if any) is recorded on the subscription, so a worker that
    picks the work up after a crash continues the same operation. Winning is one statement
    (``UPDATE ... RETURNING``); only a call that does not win reads the row to say why.
    """
    now = now or utcnow()
    token = uuid.uuid4().hex
    won = session.execute(_claim_statement(is_postgresql(session)), {
        "subscription_id": subscription_id, "now": now, "max_attempts": max_attempts,
        "token": token, "lease": now + timedelta(seconds=lease_seconds),
        "claim_operation_id": operation_id}).first()
    if won is not None:  # the usual case: one statement
        return _claim_of(won, token=token)
    subscription = billing.get_subscription(session, subscription_id)
    if subscription.status == "active":
        return _claim_of(subscription, token=None)
    if subscription.status == "pending_payment":
        raise PaymentRequired(
            f"subscription {subscription_id!r} is not paid yet (status pending_payment)",
            field="subscription_id",
        )
    if subscription.status == "queued":
        raise Queued(subscription_id, subscription.plan_name,
                     position_of(session, subscription) or 1)
    if subscription.status in ("failed", "canceled"):
        detail = f": {subscription.last_error}" if subscription.last_error else ""
        raise Conflict(
            f"subscription {subscription_id!r} is {subscription.status}{detail}",
            field="subscription_id",
        )
    return _explain_lost_claim(session, subscription, now=now, max_attempts=max_attempts)


def _explain_lost_claim(
    session: Session, subscription: Subscription, *, now: datetime, max_attempts: int
) -> Claim:
    if subscription.status == "active":
        return _claim_of(subscription, token=None)
    lease_live = subscription.claim_token is not None and (
        subscription.lease_expires_at is not None and subscription.lease_expires_at >= now
    )
    if lease_live:
        raise ClaimHeld(
            f"subscription {subscription.id!r} is being provisioned by another worker "
            f"(lease until {subscription.lease_expires_at:%Y-%m-%dT%H:%M:%SZ})",
            field="subscription_id",
        )
    if subscription.status == "provisioning" and subscription.attempts >= max_attempts:
        give_up(session, subscription.id, now=now, actor="provisioning",
                 reason=f"gave up after {subscription.attempts} attempts")
        raise Conflict(
            f"subscription {subscription.id!r} failed after {subscription.attempts} attempts",
            field="subscription_id",
        )
    if subscription.retry_after is not None and subscription.retry_after > now:
        raise ClaimHeld(
            f"subscription {subscription.id!r} waits before its next attempt "
            f"(retry after {subscription.retry_after:%Y-%m-%dT%H:%M:%SZ})",
            field="subscription_id", backoff=True,
        )
    raise ClaimHeld(f"subscription {subscription.id!r} could not be claimed (status "
                    f"{subscription.status})", field="subscription_id")


def give_up(session: Session, subscription_id: str, *, now: datetime, actor: str,
             reason: str) -> bool:
    """``provisioning`` -> ``failed`` once no attempt is left, unless someone holds it now."""
    subscription = session.get(Subscription, subscription_id)
    gave_up = session.execute(
        update(Subscription)
        .where(Subscription.id == subscription_id, Subscription.status == "provisioning",
               free(now))
        .values(status="failed", claim_token=None, lease_expires_at=None, updated_at=now,
                last_error=(subscription.last_error if subscription else None) or reason)
        .execution_options(synchronize_session=False)
    )
    if gave_up.rowcount != 1:
        return False
    audit.record(session, actor=actor, action="subscription.failed",
                 subject_type="subscription", subject_id=subscription_id,
                 details={"reason": reason})
    return True


def _claim_of(subscription: Subscription | Row[Any], *, token: str | None) -> Claim:
    return Claim(
        subscription_id=subscription.id,
        token=token,
        attempt=subscription.attempts,
        resource_type=subscription.resource_type,
        user_id=subscription.user_id,
        org_id=subscription.org_id,
        plan_name=subscription.plan_name,
        request=dict(subscription.request or {}),
        resource_id=subscription.resource_id,
    )


def assert_held(session: Session, claim: Claim) -> Subscription:
    """The subscription row, locked for this transaction where the database can, if still ours."""
    subscription = session.scalar(
        select(Subscription)
        .where(Subscription.id == claim.subscription_id, Subscription.claim_token == claim.token)
        .with_for_update()
    )
    if subscription is None:
        _lost(session, claim)
    return subscription


def write_held(session: Session, claim: Claim, *, also: tuple[ColumnElement[Any], ...] = (),
               rows: Sequence[Any] = (), **changes: Any) -> Row[Any]:
    """Write the subscription if still ours, in the fencing statement itself (``UPDATE ...
    WHERE claim_token = :token RETURNING``): the fence, the row lock and the write are one
    round trip. Returns the row as written, with ``also`` (labelled expressions over it, built
    once by the caller). ``rows`` are inserted in the same round trip (``execute_with_rows``)
    and go with the transaction when the claim turns out lost."""
    params = {**{f"new_{key}": value for key, value in changes.items()},
              "held_subscription_id": claim.subscription_id, "held_token": claim.token}
    result = execute_with_rows(session, _held_update(tuple(changes), also), params, rows)
    row = result.first() if result is not None else None
    if row is None:
        _lost(session, claim)
    return row


@functools.lru_cache(maxsize=32)
def _held_update(keys: tuple[str, ...], also: tuple[ColumnElement[Any], ...]) -> Update:
    return (update(_TABLE)
            .where(_TABLE.c.id == bindparam("held_subscription_id"),
                   _TABLE.c.claim_token == bindparam("held_token"))
            .values({key: bindparam(f"new_{key}", type_=_TABLE.c[key].type) for key in keys})
            .returning(*_ROW, *also))


def _lost(session: Session, claim: Claim) -> NoReturn:
    """Why a fenced write found the claim gone."""
    if session.scalar(select(Subscription.status).where(
            Subscription.id == claim.subscription_id)) == "canceled":
        raise ClaimLost(f"subscription {claim.subscription_id!r} was cancelled while it was "
                        "being provisioned; what was made is suspended",
                        field="subscription_id")
    raise ClaimLost(
        f"subscription {claim.subscription_id!r}: this attempt's claim lapsed and another "
        "worker took over",
        field="subscription_id",
    )


def record_resource(session: Session, claim: Claim, resource_id: str) -> None:
    """Commit the resource id the moment the resource exists, so a retry finds it."""
    write_held(session, claim, resource_id=resource_id)


def activate(session: Session, claim: Claim, resource_id: str) -> Row[Any]:
    """``provisioning`` -> ``active`` with the resource id, audited in the same round trip;
    raises an invoice where due."""
    now = utcnow()
    subscription = write_held(
        session, claim, also=(billing.INVOICE_BILLING,),
        rows=[audit.entry(actor="provisioning", action="subscription.activated",
                          subject_type="subscription", subject_id=claim.subscription_id,
                          details={"resource_type": claim.resource_type,
                                   "resource_id": resource_id, "attempt": claim.attempt})],
        status="active", resource_id=resource_id, claim_token=None, lease_expires_at=None,
        retry_after=None, last_error=None, activated_at=now, updated_at=now)
    if subscription.invoice_billing:
        billing.raise_invoice(session, subscription)
    return subscription


def release_after_failure(
    session: Session,
    claim: Claim,
    error: str,
    *,
    retryable: bool,
    max_attempts: int,
    backoff_seconds: float,
) -> str:
    """Keep the error, give the claim back; returns the status the subscription is left in.

    While attempts remain and the error can pass, the subscription stays ``provisioning`` and
    waits ``backoff_seconds * 2**(attempt-1)`` for the next trigger; otherwise it is ``failed``.
    """
    subscription = assert_held(session, claim)
    now = utcnow()
    final = not retryable or subscription.attempts >= max_attempts
    subscription.claim_token = None
    subscription.lease_expires_at = None
    subscription.last_error = error
    subscription.updated_at = now
    if final:
        subscription.status = "failed"
        subscription.retry_after = None
    else:
        delay = backoff_delay(subscription.attempts, backoff_seconds)
        subscription.retry_after = now + timedelta(seconds=delay)
    audit.record(session, actor="provisioning",
                 action="subscription.failed" if final else "subscription.attempt_failed",
                 subject_type="subscription", subject_id=subscription.id,
                 details={"attempt": subscription.attempts, "error": error})
    return subscription.status


def backoff_delay(attempt: int, backoff_seconds: float) -> float:
    """Seconds a subscription waits after its failed ``attempt`` before the next may start."""
    return backoff_seconds * 2 ** max(attempt - 1, 0)


def operation_of(session: Session, subscription_id: str) -> str | None:
    """The operation that reports a subscription's provisioning, whichever process works on it.

    Recorded when the payment is (the webhook opens it) or by the first claim that carries one;
    every later attempt continues it, so the customer watches one operation to its end.
    """
    return session.scalar(select(Subscription.operation_id)
                          .where(Subscription.id == subscription_id))


def reset_failed(session: Session, subscription_id: str, *, actor: str = "operator") -> bool:
    """Put a ``failed`` subscription back to ``provisioning`` with fresh attempts.

    Returns False (and changes nothing) when the subscription is not failed.
    """
    billing.get_subscription(session, subscription_id)
    moved = session.execute(
        update(Subscription)
        .where(Subscription.id == subscription_id,
               Subscription.status == SUBSCRIPTION.source("retry"))
        .values(status=SUBSCRIPTION.target("retry"), attempts=0, retry_after=None, claim_token=None,
                lease_expires_at=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount == 1:
        audit.record(session, actor=actor, action="subscription.retried",
                     subject_type="subscription", subject_id=subscription_id)
    return moved.rowcount == 1


# --- what the sensors ask -----------------------------------------------------------------------


def position_of(session: Session, subscription: Subscription) -> int | None:
    """1 for the next in line; None unless the subscription is queued."""
    if subscription.status != "queued" or subscription.queued_at is None:
        return None
    ahead = session.scalar(select(func.count()).select_from(Subscription).where(
        Subscription.status == "queued", Subscription.plan_name == subscription.plan_name,
        tuple_(Subscription.queued_at, Subscription.id)
        < tuple_(subscription.queued_at, subscription.id)))
    return int(ahead or 0) + 1
