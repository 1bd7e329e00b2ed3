"""The SQL model (SQLAlchemy 2 typed ORM), shared by SQLite and PostgreSQL.

Ids are strings chosen by the application: resource ids are derived from the subscription that
asked for them, so that a retry finds what an earlier attempt made instead of making a second one.
The schema itself is owned by the Alembic migrations in ``storage/migrations``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes on both backends (SQLite forgets the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime stored; use timezone-aware UTC datetimes")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON}


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    api_key_hash: Mapped[str | None] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BrowserSession(Base):
    """One sign-in of a browser: its cookie's token names this row, so deleting the row (sign-out,
    or housekeeping once it expired) ends the session on every API worker."""

    __tablename__ = "browser_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(32), default="owner")


class BillingCustomer(Base):
    __tablename__ = "billing_customers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), unique=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(128))
    invoice_billing: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Subscription(Base):
    """What a customer pays for, and the state of provisioning it.

    ``claim_token`` and ``lease_expires_at`` are the claim: one worker at a time may provision a
    subscription, and a crashed worker's claim lapses when its lease expires.
    """

    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    resource_type: Mapped[str] = mapped_column(String(32))
    plan_name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), default="pending_payment")
    request: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    resource_id: Mapped[str | None] = mapped_column(String(128))
    stripe_customer_id: Mapped[str | None] = mapped_column(String(128))
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(128))
    claim_token: Mapped[str | None] = mapped_column(String(64))
    #: The operation that reports this subscription's provisioning; whoever picks the work up
    #: (a retry, another worker after a crash) continues it, so its stream reaches an end.
    operation_id: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[datetime | None]
    lease_expires_at: Mapped[datetime | None]
    retry_after: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    paid_at: Mapped[datetime | None]
    activated_at: Mapped[datetime | None]
    canceled_at: Mapped[datetime | None]
    #: When the subscription first waited for a free slot: its place in its tier's queue
    #: (first in, first out), kept if it has to wait again.
    queued_at: Mapped[datetime | None] = mapped_column(index=True)
    #: When a cancellation takes effect (end of the period); None when none is scheduled.
    cancel_at: Mapped[datetime | None] = mapped_column(index=True)
    #: The newest event (by created, rank, id) that decided the status (paid or ended), or a
    #: user's decision: an older or repeated one is never applied after it.
    last_event_at: Mapped[datetime | None]
    last_event_rank: Mapped[int | None] = mapped_column(Integer)
    last_event_id: Mapped[str | None] = mapped_column(String(128))
    #: The newest ``customer.subscription.updated`` applied (it decides ``cancel_at`` only).
    schedule_event_at: Mapped[datetime | None]
    schedule_event_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (Index("ix_subscriptions_status_type", "status", "resource_type"),)


class GraphHost(Base):
    """A machine (or folder) that holds graph database files; ``slots_used`` never passes
    ``capacity`` because slots are taken by a conditional UPDATE."""

    __tablename__ = "graph_hosts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tier: Mapped[str] = mapped_column(String(32), index=True)
    capacity: Mapped[int] = mapped_column(Integer)
    slots_used: Mapped[int] = mapped_column(Integer, default=0)
    data_root: Mapped[str] = mapped_column(String(1024))
    #: ``available``, or ``draining``: its graphs stay, no new one is placed on it.
    status: Mapped[str] = mapped_column(String(32), default="available")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: The host server's address (``http://10.0.0.5:8100``); None for a local host (a folder
    #: this process opens itself), which is never probed.
    url: Mapped[str | None] = mapped_column(String(512))
    #: ``healthy``, or ``unhealthy`` after ``GRAPH_HOST_PROBE_MISSES`` probes in a row went
    #: unanswered: no new graph is placed on it, its graphs show ``available: false``; the row
    #: stays (its graphs are still its).
    health: Mapped[str] = mapped_column(String(16), default="healthy", server_default="healthy")
    #: When a probe was last answered.
    last_seen_at: Mapped[datetime | None]
    #: Probes in a row that went unanswered (0 after an answer).
    failed_probes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Graph(Base):
    __tablename__ = "graphs"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    owner_user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    subscription_id: Mapped[str | None] = mapped_column(ForeignKey("subscriptions.id"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    graph_type: Mapped[str] = mapped_column(String(32), default="generic")
    tier: Mapped[str] = mapped_column(String(32))
    parent_graph_id: Mapped[str | None] = mapped_column(ForeignKey("graphs.id"), index=True)
    subgraph_index: Mapped[int | None] = mapped_column(Integer)
    subgraph_count: Mapped[int] = mapped_column(Integer, default=0)
    host_id: Mapped[str] = mapped_column(ForeignKey("graph_hosts.id"))
    database_path: Mapped[str] = mapped_column(String(1024))
    schema_extensions: Mapped[list[str]] = mapped_column(JSON, default=list)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    details: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: active -> suspended (cancelled; roles off) -> deleting -> deleted (the row stays as a
    #: tombstone: who, when, why); suspended -> active again within the grace.
    status: Mapped[str] = mapped_column(String(16), default="active", index=True)
    suspended_at: Mapped[datetime | None]
    delete_after: Mapped[datetime | None] = mapped_column(index=True)
    deleted_at: Mapped[datetime | None]
    #: The claim of a lifecycle operation (backup, deletion, restore), fenced like a
    #: subscription's: a worker whose lease lapsed cannot write over the one that took over.
    lifecycle_token: Mapped[str | None] = mapped_column(String(64))
    lifecycle_lease_expires_at: Mapped[datetime | None]

    __table_args__ = (UniqueConstraint("parent_graph_id", "subgraph_index"),)


class GraphUser(Base):
    __tablename__ = "graph_users"

    graph_id: Mapped[str] = mapped_column(ForeignKey("graphs.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: False while the graph is suspended: the role is kept, not usable.
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class GraphSchema(Base):
    __tablename__ = "graph_schemas"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    graph_id: Mapped[str] = mapped_column(ForeignKey("graphs.id"), unique=True)
    schema_type: Mapped[str] = mapped_column(String(32))
    ddl: Mapped[str] = mapped_column(Text)
    schema_json: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RepositoryAccess(Base):
    __tablename__ = "repository_access"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    repository: Mapped[str] = mapped_column(String(64))
    access_level: Mapped[str] = mapped_column(String(32))
    plan_name: Mapped[str] = mapped_column(String(64))
    subscription_id: Mapped[str | None] = mapped_column(ForeignKey("subscriptions.id"))
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("user_id", "repository"),)


class CreditPool(Base):
    """Credits of one graph (per tier) or of one user's repository access (per plan)."""

    __tablename__ = "credit_pools"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_type: Mapped[str] = mapped_column(String(32))
    graph_id: Mapped[str | None] = mapped_column(ForeignKey("graphs.id"), unique=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    repository: Mapped[str | None] = mapped_column(String(64))
    plan_name: Mapped[str] = mapped_column(String(64))
    monthly_allocation: Mapped[int] = mapped_column(Integer)
    balance: Mapped[int] = mapped_column(Integer, default=0)
    #: active, or frozen while what it pays for is cancelled (no credit is added or spent).
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (UniqueConstraint("user_id", "repository"),)


class CreditTransaction(Base):
    """A change of a pool's balance; ``reference`` is unique so an allocation happens once."""

    __tablename__ = "credit_transactions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pool_id: Mapped[str] = mapped_column(ForeignKey("credit_pools.id"), index=True)
    amount: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str] = mapped_column(String(200), unique=True)
    subscription_id: Mapped[str | None] = mapped_column(ForeignKey("subscriptions.id"))
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditLogEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(128), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class WebhookEvent(Base):
    """A billing event, recorded (unique id) before it is acted on: redelivery is a no-op.

    ``raw_body`` is the delivery exactly as signed (any content can be kept as text);
    ``status`` is ``applied``, ``ignored`` (nothing of ours to do) or ``rejected`` (``reason``
    says why it could not be applied; ``webhooks replay`` tries again). ``payload`` is the parsed
    event of rows recorded before raw bodies were kept.
    """

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64))
    event_created_at: Mapped[datetime | None]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    raw_body: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="applied", index=True)
    reason: Mapped[str | None] = mapped_column(Text)


class Invoice(Base):
    __tablename__ = "invoices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    customer_id: Mapped[str] = mapped_column(ForeignKey("billing_customers.id"))
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"), unique=True)
    amount_cents: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3), default="usd")
    status: Mapped[str] = mapped_column(String(32), default="open")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class GraphBackup(Base):
    """A consistent copy of a graph's database file under ``BACKUP_DIR``, with a manifest.

    Ids say what a backup is for, so making one twice is one backup: ``bk_final_<graph>``,
    ``bk_daily_<graph>_<YYYYMMDD>``, ``bk_<uuid>`` on demand.
    """

    __tablename__ = "graph_backups"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    graph_id: Mapped[str] = mapped_column(ForeignKey("graphs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(1024))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    checksum: Mapped[str] = mapped_column(String(64))
    schema_fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(index=True)


class IdempotencyKey(Base):
    """A user's ``Idempotency-Key`` on a POST that creates something: the request it came with
    (a fingerprint) and, once answered, the answer, replayed to a retry of the same request."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    #: ``running`` until answered (``token`` names the request holding it), then ``done``.
    status: Mapped[str] = mapped_column(String(16), default="running")
    token: Mapped[str | None] = mapped_column(String(64))
    locked_until: Mapped[datetime | None]
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class BillingChange(Base):
    """A change decided here (a cancellation or a reactivation) that the billing system must
    be told of: written in the transaction of the change itself, sent afterwards.

    ``idempotency_key`` goes with every attempt, so the billing system applies the change once
    however often it is sent; ``status`` is ``pending`` (to send; retried with backoff until
    ``next_attempt_at``), ``sent``, ``skipped`` (nothing to tell: the subscription has no id in
    the billing system) or ``failed`` (the billing system refused it; ``last_error`` says why).
    ``echo_event_id`` is the billing event that reported the change back (applied already).
    """

    __tablename__ = "billing_outbox"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    action: Mapped[str] = mapped_column(String(16))
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(128), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    actor: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    echo_event_id: Mapped[str | None] = mapped_column(String(128))
