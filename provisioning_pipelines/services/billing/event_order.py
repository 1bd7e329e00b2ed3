"""The order of billing events: which of two decisions about a subscription is the newer.

Stripe delivers events late, twice and out of order, so each subscription keeps the key of the
last status decision applied to it (its watermark: ``last_event_at``, ``last_event_rank``,
``last_event_id``) and of the last schedule update; an event older than the watermark changes
nothing. A customer's or an operator's own decision is as of now, and outranks billing events of
the same second.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from provisioning_pipelines.storage.models import Subscription, utcnow

#: An event's place in time: its own ``created``, its kind's rank within a second, its id.
EventKey = tuple[datetime, int, str]


#: Events of one second are ordered by what must come after what: paying, then changing the
#: subscription, then ending it. With the event id, the order of any two events is total.
RANK = {"checkout.session.completed": 0, "customer.subscription.updated": 1,
        "invoice.payment_failed": 1, "customer.subscription.deleted": 2}
#: A decision made here (a user's cancellation, say) comes after billing events of its second.
USER_DECISION_RANK = 3


def event_key(created: datetime, kind: str, event_id: str) -> EventKey:
    """An event's place in time; ``kind`` must be one of ``RANK``."""
    return created, RANK[kind], event_id


def newer_than_applied(subscription: Subscription, key: EventKey) -> bool:
    """Whether an event comes after every status decision applied to the subscription."""
    if subscription.last_event_at is None:
        return True
    applied = (subscription.last_event_at, subscription.last_event_rank or 0,
               subscription.last_event_id or "")
    return key > applied


def newer_schedule(subscription: Subscription, key: EventKey) -> bool:
    """Whether an update comes after every update applied to the subscription."""
    if subscription.schedule_event_at is None:
        return True
    return (key[0], key[2]) > (subscription.schedule_event_at,
                               subscription.schedule_event_id or "")


def decided_now(subscription: Subscription, what: str, actor: str) -> None:
    mark_applied(subscription, (utcnow(), USER_DECISION_RANK, f"{what}_by:{actor}"[:128]))


def mark_applied(subscription: Subscription, key: EventKey) -> None:
    subscription.last_event_at, subscription.last_event_rank, subscription.last_event_id = key


WATERMARK = ("last_event_at", "last_event_rank", "last_event_id")


def watermark(key: EventKey) -> dict[str, Any]:
    """``mark_applied``'s columns, for a statement that writes them."""
    return dict(zip(WATERMARK, key, strict=True))
