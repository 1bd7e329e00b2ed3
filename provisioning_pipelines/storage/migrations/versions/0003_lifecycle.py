"""lifecycle: graph status and lifecycle claims, disabled roles, frozen pools, event
watermarks and scheduled cancellations, backups

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("graphs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=16), nullable=False,
                                      server_default="active"))
        batch_op.add_column(sa.Column("suspended_at", TZ, nullable=True))
        batch_op.add_column(sa.Column("delete_after", TZ, nullable=True))
        batch_op.add_column(sa.Column("deleted_at", TZ, nullable=True))
        batch_op.add_column(sa.Column("lifecycle_token", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("lifecycle_lease_expires_at", TZ, nullable=True))
        batch_op.create_index(batch_op.f("ix_graphs_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_graphs_delete_after"), ["delete_after"],
                              unique=False)
    with op.batch_alter_table("graph_users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("enabled", sa.Boolean(), nullable=False,
                                      server_default=sa.true()))
    with op.batch_alter_table("credit_pools", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=16), nullable=False,
                                      server_default="active"))
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cancel_at", TZ, nullable=True))
        batch_op.add_column(sa.Column("last_event_at", TZ, nullable=True))
        batch_op.add_column(sa.Column("last_event_rank", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("last_event_id", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("schedule_event_at", TZ, nullable=True))
        batch_op.add_column(sa.Column("schedule_event_id", sa.String(length=128),
                                      nullable=True))
        batch_op.create_index(batch_op.f("ix_subscriptions_cancel_at"), ["cancel_at"],
                              unique=False)
    op.create_table(
        "graph_backups",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("graph_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("schema_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("expires_at", TZ, nullable=True),
        sa.ForeignKeyConstraint(["graph_id"], ["graphs.id"],
                                name=op.f("fk_graph_backups_graph_id_graphs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_graph_backups")),
    )
    with op.batch_alter_table("graph_backups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_graph_backups_graph_id"), ["graph_id"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_graph_backups_expires_at"), ["expires_at"],
                              unique=False)


def downgrade() -> None:
    op.drop_table("graph_backups")
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subscriptions_cancel_at"))
        for column in ("schedule_event_id", "schedule_event_at", "last_event_id",
                       "last_event_rank", "last_event_at", "cancel_at"):
            batch_op.drop_column(column)
    with op.batch_alter_table("credit_pools", schema=None) as batch_op:
        batch_op.drop_column("status")
    with op.batch_alter_table("graph_users", schema=None) as batch_op:
        batch_op.drop_column("enabled")
    with op.batch_alter_table("graphs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_graphs_delete_after"))
        batch_op.drop_index(batch_op.f("ix_graphs_status"))
        for column in ("lifecycle_lease_expires_at", "lifecycle_token", "deleted_at",
                       "delete_after", "suspended_at", "status"):
            batch_op.drop_column(column)
