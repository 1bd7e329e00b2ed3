"""webhook events keep their raw body and status; subscriptions remember their operation

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("raw_body", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("status", sa.String(length=16), nullable=False,
                                      server_default="applied"))
        batch_op.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch_op.alter_column("payload", existing_type=sa.JSON(), nullable=True)
        batch_op.create_index(batch_op.f("ix_webhook_events_status"), ["status"], unique=False)
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("operation_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_column("operation_id")
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_events_status"))
        batch_op.alter_column("payload", existing_type=sa.JSON(), nullable=False)
        batch_op.drop_column("reason")
        batch_op.drop_column("status")
        batch_op.drop_column("raw_body")
