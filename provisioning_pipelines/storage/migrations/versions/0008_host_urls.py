"""host urls: graph hosts as servers, with their address and what the probes found

Revision ID: 0008_host_urls
Revises: 0007_subgraph_status

A remote host has the address of its server (local hosts have none); its health is what the
control plane's probes last found (``healthy`` until probes go unanswered), when one was last
answered, and how many in a row were not. Existing hosts are local and healthy.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_host_urls"
down_revision = "0007_subgraph_status"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("graph_hosts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("url", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("health", sa.String(length=16), nullable=False,
                                      server_default="healthy"))
        batch_op.add_column(sa.Column("last_seen_at", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("failed_probes", sa.Integer(), nullable=False,
                                      server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("graph_hosts", schema=None) as batch_op:
        batch_op.drop_column("failed_probes")
        batch_op.drop_column("last_seen_at")
        batch_op.drop_column("health")
        batch_op.drop_column("url")
