"""Who may do what on a graph: the roles and the one place a user's role is looked up.

``admin`` may do everything (lifecycle, members, queries that write); ``writer`` may run
queries that write but not change the graph's life; ``reader`` runs read-only queries. A
subgraph's members are its parent's: the family is shared as one, so a role on a top-level graph
reaches its subgraphs (a subgraph's own row, kept for its creator, counts where the parent has
none).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from provisioning_pipelines.storage.models import Graph, GraphUser

ADMIN, WRITER, READER = "admin", "writer", "reader"
#: Every role, strongest first.
ROLES = (ADMIN, WRITER, READER)
#: Roles whose queries may write.
WRITES = frozenset({ADMIN, WRITER})


def role_row(session: Session, graph: Graph, user_id: str) -> GraphUser | None:
    """The user's role on the graph (its family's), enabled or not; None for a stranger."""
    if graph.parent_graph_id is not None:
        inherited = session.get(GraphUser, (graph.parent_graph_id, user_id))
        if inherited is not None:
            return inherited
    return session.get(GraphUser, (graph.id, user_id))


def role_on(session: Session, graph: Graph, user_id: str) -> str | None:
    """The name of the user's role on the graph, or None."""
    row = role_row(session, graph, user_id)
    return None if row is None else row.role


def may_write(role: str | None) -> bool:
    return role in WRITES
