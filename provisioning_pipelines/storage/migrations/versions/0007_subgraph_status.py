"""subgraph status: subgraphs of parents suspended before their status followed the parent's

Revision ID: 0007_subgraph_status
Revises: 0006_sessions

A subgraph's row now changes with its parent's in the same transaction; rows written before
kept ``active`` under a suspended (or deleting) parent. They are brought in line once, here.
"""

from __future__ import annotations

from alembic import op

revision = "0007_subgraph_status"
down_revision = "0006_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for parent_status in ("suspended", "deleting"):
        op.execute(
            "UPDATE graphs SET status = '" + parent_status + "' "
            "WHERE status = 'active' AND parent_graph_id IN "
            "(SELECT id FROM graphs WHERE status = '" + parent_status + "')")


def downgrade() -> None:
    """Nothing to undo: the rows say what is true."""
