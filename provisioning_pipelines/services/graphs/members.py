"""A graph's members: who has which role (``roles.py``) on a top-level graph and its subgraphs.

Members are managed on the top-level graph: a subgraph's members are its parent's, so a subgraph
id here is refused, naming the parent. Any member lists them; only an admin adds one (by the
email of a known user), changes a role or removes one, and only while the graph is active (a
suspended graph's roles are off until it is reactivated). A graph always keeps an admin: the
last one can be neither demoted nor removed, counted under the graph's row lock so that two
admins demoting each other at once cannot both succeed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import Conflict, InvalidRequest, NotFound
from provisioning_pipelines.services import audit, pages
from provisioning_pipelines.services.graphs import roles
from provisioning_pipelines.services.graphs.states import GRAPH
from provisioning_pipelines.storage.graph_ids import ANY_GRAPH_ID
from provisioning_pipelines.storage.models import Graph, GraphUser, User


class LastAdmin(Conflict):
    """The change would leave the graph without an admin."""

    code = "last_admin"


def _graph(session: Session, graph_id: str, user_id: str, *, lock: bool = False) -> Graph:
    """The top-level graph whose members these are; 404 for one the user does not see (or a
    deleted one: its members are gone with it), 422 for a subgraph."""
    graph = None
    if ANY_GRAPH_ID.fullmatch(graph_id):
        query = select(Graph).where(Graph.id == graph_id)
        graph = session.scalar(query.with_for_update() if lock else query)
    if (graph is None or graph.status in ("restoring", "deleting", "deleted")
            or not roles.sees(session, graph, user_id)):
        raise NotFound(f"no graph {graph_id[:70]!r}", field="graph_id")
    if graph.parent_graph_id is not None:
        raise InvalidRequest(
            f"graph_id: {graph_id!r} is a subgraph; its members are those of its parent: "
            f"/v1/graphs/{graph.parent_graph_id}/members", field="graph_id")
    return graph


def _view(row: GraphUser, email: str) -> dict[str, Any]:
    return {"user_id": row.user_id, "email": email, "role": row.role,
            "added_at": row.created_at.isoformat()}


def members_page(session: Session, graph_id: str, user_id: str, *,
                 after: pages.Key | None = None, limit: int = pages.DEFAULT_LIMIT
                 ) -> pages.Page[dict[str, Any]]:
    """One page of the graph's members, newest first; any member may list them."""
    graph = _graph(session, graph_id, user_id)
    query = (select(GraphUser, User.email).join(User, User.id == GraphUser.user_id)
             .where(GraphUser.graph_id == graph.id))
    if after is not None:
        at, last = after
        query = query.where((GraphUser.created_at < at)
                            | ((GraphUser.created_at == at) & (GraphUser.user_id < last)))
    rows = session.execute(query.order_by(GraphUser.created_at.desc(),
                                          GraphUser.user_id.desc()).limit(limit + 1)).all()
    found = pages.cut(rows, limit, lambda row: (row[0].created_at, row[0].user_id))
    return found.map(lambda row: _view(row[0], row[1]))


def _changeable(session: Session, graph_id: str, actor: str) -> Graph:
    graph = _graph(session, graph_id, actor, lock=True)
    roles.check_admin(session, graph, actor, what="change its members")
    GRAPH.check("change_members", graph.status, graph.id, field="graph_id")
    return graph


def _admins(session: Session, graph: Graph) -> int:
    return session.scalar(select(func.count()).select_from(GraphUser).where(
        GraphUser.graph_id == graph.id, GraphUser.role == roles.ADMIN)) or 0


def put_member(session: Session, graph_id: str, actor: str, *, email: str, role: str
               ) -> tuple[dict[str, Any], bool]:
    """Add the user of ``email`` with ``role``, or change their role: (the member, whether
    they are new). 404 naming the email when no user has it."""
    if role not in roles.ROLES:
        raise InvalidRequest(f"role: expected one of {', '.join(roles.ROLES)}", field="role")
    graph = _changeable(session, graph_id, actor)
    user = session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))
    if user is None:
        raise NotFound(f"email: no user with the email {email[:200]!r}", field="email")
    row = session.get(GraphUser, (graph.id, user.id))
    if row is None:
        row = GraphUser(graph_id=graph.id, user_id=user.id, role=role, enabled=True)
        session.add(row)
        session.flush()
        audit.record(session, actor=actor, action="graph.member_added", subject_type="graph",
                     subject_id=graph.id, details={"user_id": user.id, "role": role})
        return _view(row, user.email), True
    if row.role != role:
        if row.role == roles.ADMIN and _admins(session, graph) <= 1:
            raise LastAdmin(f"email: {user.email!r} is the last admin of {graph.id!r}; make "
                            "another member an admin first", field="email")
        audit.record(session, actor=actor, action="graph.member_role_changed",
                     subject_type="graph", subject_id=graph.id,
                     details={"user_id": user.id, "from": row.role, "to": role})
        row.role = role
    return _view(row, user.email), False


def remove_member(session: Session, graph_id: str, actor: str, user: str) -> None:
    """Remove a member (``user``: their id or email) from the graph and its subgraphs (a
    subgraph's own row, kept for its creator, would otherwise still let them in)."""
    graph = _changeable(session, graph_id, actor)
    found = session.scalar(select(User).where(
        (User.id == user) | (func.lower(User.email) == user.strip().lower())))
    row = session.get(GraphUser, (graph.id, found.id)) if found is not None else None
    if found is None or row is None:
        raise NotFound(f"user: {user[:200]!r} is not a member of {graph.id!r}", field="user")
    if row.role == roles.ADMIN and _admins(session, graph) <= 1:
        raise LastAdmin(f"user: {found.email!r} is the last admin of {graph.id!r}; make "
                        "another member an admin first", field="user")
    family = select(Graph.id).where((Graph.id == graph.id) | (Graph.parent_graph_id == graph.id))
    session.execute(delete(GraphUser).where(GraphUser.user_id == found.id,
                                            GraphUser.graph_id.in_(family))
                    .execution_options(synchronize_session=False))
    audit.record(session, actor=actor, action="graph.member_removed", subject_type="graph",
                 subject_id=graph.id, details={"user_id": found.id, "role": row.role})
