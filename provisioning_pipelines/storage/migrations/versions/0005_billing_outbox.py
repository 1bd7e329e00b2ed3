"""billing outbox: cancellations and reactivations decided here, to be sent to billing

Revision ID: 0005_billing_outbox
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_billing_outbox"
down_revision = "0004"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "billing_outbox",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("stripe_subscription_id", sa.String(length=128), nullable=True),
        sa.Column("idempotency_key", sa.String(length=128), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TZ, nullable=False),
        sa.Column("claimed_until", TZ, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("sent_at", TZ, nullable=True),
        sa.Column("echo_event_id", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"],
                                name=op.f("fk_billing_outbox_subscription_id_subscriptions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_outbox")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_billing_outbox_idempotency_key")),
    )
    with op.batch_alter_table("billing_outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_billing_outbox_subscription_id"),
                              ["subscription_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_billing_outbox_stripe_subscription_id"),
                              ["stripe_subscription_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_billing_outbox_status"), ["status"], unique=False)


def downgrade() -> None:
    op.drop_table("billing_outbox")
