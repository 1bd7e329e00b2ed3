"""The queue of paid graph subscriptions waiting for a free slot: one per tier, first in, first
out.

A paid subscription whose tier has no free slot is not failed: its attempt gives the claim back
without using up an attempt, and it waits as ``queued`` (``queued_at`` is its place, kept if it
has to wait again). A new payment does not jump the queue: it waits too while anyone of its tier
is queued, or while the free slots are all promised to subscriptions released from the queue.
When slots appear (``hosts add``, a host back from draining, a graph deleted), ``release`` moves
as many subscriptions as there are free slots back to ``provisioning``, oldest first; from there
the claim makes each happen exactly once, as for any paid subscription.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    String,
    Update,
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from provisioning_pipelines.services import audit
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.services.billing.states import SUBSCRIPTION
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.provisioning.claims import (
    Claim,
    DueSubscription,
    assert_held,
    position_of,
)
from provisioning_pipelines.storage.db import execute_with_rows
from provisioning_pipelines.storage.models import Subscription, UTCDateTime, utcnow


def must_wait(session: Session, me: Subscription | Row[Any]) -> bool:
    """Whether someone of the same tier is ahead of this subscription for a slot."""
    return bool(session.scalar(select(_ahead(me.plan_name, me.queued_at))))


def take_slot_in_turn(session: Session, me: Subscription | Row[Any], *,
                      on_host: str | None = None, rows: Sequence[Any] = ()) -> Row[Any] | None:
    """A slot for ``me`` (``hosts.take_slot``'s row) unless someone of its tier is ahead of it:
    one statement. None also when no slot is free or a racing allocation won it.

    ``on_host``: on that host (picked earlier in the transaction), with ``rows`` inserted in the
    same statement, so the host's row is locked for that statement and the commit only. The rows
    go in whatever the answer: on None the caller rolls back.
    """
    params = {"slot_tier": me.plan_name, "my_queued_at": me.queued_at, "slot_host": on_host}
    result = execute_with_rows(
        session, _slot_in_turn(me.queued_at is not None, on_host is not None), params, rows)
    return result.first() if result is not None else None


@functools.cache
def _slot_in_turn(released: bool, on_chosen_host: bool) -> Update:
    queued_at = bindparam("my_queued_at", type_=UTCDateTime) if released else None
    return hosts.slot_statement(unless=_ahead(bindparam("slot_tier", type_=String), queued_at),
                                on_chosen_host=on_chosen_host)


def _ahead(tier: str | ColumnElement[str],
           queued_at: datetime | ColumnElement[datetime] | None) -> ColumnElement[bool]:
    """Someone of the tier is ahead for a slot, as one SQL condition: of one released from the
    queue at ``queued_at``, those queued before it; of anyone else, anyone queued, or released
    ones still to provision taking every free slot."""
    if queued_at is not None:
        return _queued(tier).where(Subscription.queued_at < queued_at).exists()
    return or_(_queued(tier).exists(),
               _released_query(tier).scalar_subquery()
               >= hosts.free_slots_query(tier).scalar_subquery())


def enqueue(session: Session, claim: Claim, *, now: datetime | None = None) -> int:
    """Give the claim back, attempt not used up, and wait in the tier's queue; returns the
    position (1 is next)."""
    subscription = assert_held(session, claim)
    subscription.status = SUBSCRIPTION.target("queue")
    subscription.queued_at = subscription.queued_at or now or utcnow()
    subscription.claim_token = None
    subscription.lease_expires_at = None
    subscription.retry_after = None
    subscription.attempts = max(subscription.attempts - 1, 0)
    session.flush()
    position = position_of(session, subscription) or 1
    audit.record(session, actor="provisioning", action="subscription.queued",
                 subject_type="subscription", subject_id=subscription.id,
                 details={"tier": subscription.plan_name, "position": position})
    return position


def release(session: Session, tier: str | None = None, *, now: datetime | None = None
            ) -> list[DueSubscription]:
    """Move as many queued subscriptions as there are free slots back to ``provisioning``,
    oldest first (of ``tier``, or of every tier); returns them in that order, due for an
    attempt that continues their operation."""
    now = now or utcnow()
    tiers = [tier] if tier else list(session.scalars(
        select(Subscription.plan_name).where(Subscription.status == "queued").distinct()))
    released: list[DueSubscription] = []
    for name in tiers:
        room = hosts.free_slots(session, name) - _released(session, name)
        if room <= 0:
            continue
        head = list(session.scalars(
            select(Subscription).where(Subscription.status == "queued",
                                       Subscription.plan_name == name)
            .order_by(Subscription.queued_at, Subscription.id).limit(room)
            .with_for_update(skip_locked=True)))
        for subscription in head:
            moved = session.execute(
                update(Subscription)
                .where(Subscription.id == subscription.id,
                       Subscription.status == SUBSCRIPTION.source("release"))
                .values(status=SUBSCRIPTION.target("release"), updated_at=now)
                .execution_options(synchronize_session=False))
            if moved.rowcount == 1:
                session.refresh(subscription)
                released.append(DueSubscription(
                    subscription.id, subscription.user_id, subscription.attempts + 1,
                    subscription.resource_type, subscription.operation_id))
                audit.record(session, actor="provisioning", action="subscription.released",
                             subject_type="subscription", subject_id=subscription.id,
                             details={"tier": name})
    return released


def _queued(tier: str | ColumnElement[str]) -> Select[tuple[str]]:
    return select(Subscription.id).where(Subscription.status == "queued",
                                         Subscription.plan_name == tier)


def _released_query(tier: str | ColumnElement[str]) -> Select[tuple[int]]:
    """Subscriptions of the tier released from the queue and not provisioned yet: the free
    slots are theirs first."""
    return select(func.count()).select_from(Subscription).where(and_(
        Subscription.status == "provisioning", Subscription.plan_name == tier,
        Subscription.queued_at.is_not(None), Subscription.resource_id.is_(None)))


def _released(session: Session, tier: str) -> int:
    return int(session.scalar(_released_query(tier)) or 0)


def summary(session: Session, subscription: Subscription) -> dict[str, Any]:
    """``billing.summary`` and, while it waits for a slot, its place in the queue."""
    return {**billing.summary(subscription),
            "queue_position": position_of(session, subscription)}
