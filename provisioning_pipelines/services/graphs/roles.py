"""Who may do what on a graph: the roles and the one place a user's role is looked up.

``admin`` may do everything (lifecycle, members, queries that write); ``writer`` may run
queries that write but not change the graph's life; ``reader`` runs read-only queries. A
subgraph's members are its parent's: the family is shared as one, so a role on a top-level graph
reaches its subgraphs (a subgraph's own row, kept for its creator, counts where the parent has
none).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import Forbidden
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


def is_admin(session: Session, graph: Graph, user_id: str) -> bool:
    return role_on(session, graph, user_id) == ADMIN


def sees(session: Session, graph: Graph, user_id: str) -> bool:
    """Whether the user sees the graph: a member of its family (enabled or not: a suspended
    graph's members still see it), or its owner once it is deleted (its roles are gone; its
    tombstone stays theirs)."""
    if role_row(session, graph, user_id) is not None:
        return True
    return graph.owner_user_id == user_id and graph.status == "deleted"


def seen_by(user_id: str) -> ColumnElement[bool]:
    """``sees`` as a condition on top-level ``Graph`` rows, for lists."""
    member_of = select(GraphUser.graph_id).where(GraphUser.user_id == user_id)
    return or_(Graph.id.in_(member_of),
               and_(Graph.owner_user_id == user_id, Graph.status == "deleted"))


def check_admin(session: Session, graph: Graph, user_id: str, *, field: str = "graph_id",
                what: str = "change it", tombstone: bool = False) -> None:
    """403 unless the user is an admin of the graph's family (a member who is not may see the
    graph, so the refusal says why rather than pretending it is not there). With
    ``tombstone``, a deleted graph's owner counts as its admin: its roles went with it, and
    its backups are still theirs to restore elsewhere."""
    if tombstone and graph.status == "deleted" and graph.owner_user_id == user_id:
        return
    if not is_admin(session, graph, user_id):
        family = graph.parent_graph_id or graph.id
        raise Forbidden(f"{field}: only an admin of {family!r} may {what}", field=field)
