"""Subgraphs: child databases of a graph, on its host, with its schema and within its limit.

A subgraph has no subscription of its own (the parent's tier pays for it). Its id is
``{parent}_{name}``, unique; the tier's limit is counted under the parent's row lock. Its status
is its parent's, written to its own row whenever the parent's changes (``lifecycle.py`` says
why), so a suspended parent's subgraphs are shown and refused as suspended; only its own
deletion moves it alone, to ``deleting`` before its host is asked (``mark_deleting``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import (
    Conflict,
    InvalidRequest,
    LimitReached,
    NotFound,
)
from provisioning_pipelines.services import audit
from provisioning_pipelines.services.catalog import TIERS
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.services.graphs import roles
from provisioning_pipelines.services.graphs.states import GRAPH
from provisioning_pipelines.storage.models import Graph, GraphHost, User

SUBGRAPH_NAME = re.compile(r"[a-zA-Z0-9]{1,20}")


def validate_subgraph_name(name: Any) -> str:
    if not isinstance(name, str) or not SUBGRAPH_NAME.fullmatch(name):
        raise InvalidRequest(
            f"name: {name!r:.70} is not a valid subgraph name; use 1 to 20 letters or digits",
            field="name",
        )
    return name


def check_parent_active(parent: Graph) -> None:
    """Only an active graph gets new subgraphs (a suspended one's roles are off)."""
    if not GRAPH.allows("add_subgraph", parent.status):
        raise Conflict(f"parent_graph_id: graph {parent.id!r} is {parent.status}; no new "
                       "subgraph can be made from it", field="parent_graph_id")


def check_can_add_subgraph(session: Session, parent: Graph, user_id: str) -> None:
    """Everything a new subgraph needs of its parent that can be told before anything is made
    (so the API refuses at once instead of starting an operation that fails): top-level,
    active, the caller an admin, a tier that allows subgraphs and one left under its limit (the
    limit is counted again, under the parent's lock, when the rows are written)."""
    check_parent_active(parent)
    if parent.parent_graph_id is not None:
        raise InvalidRequest(
            f"parent_graph_id: {parent.id!r} is itself a subgraph; subgraphs can only "
            "be made from a top-level graph",
            field="parent_graph_id",
        )
    roles.check_admin(session, parent, user_id, field="parent_graph_id",
                      what="add a subgraph")
    tier = TIERS[parent.tier]
    if tier.name == "ladybug-shared":
        raise InvalidRequest("parent_graph_id: shared repositories have no subgraphs",
                             field="parent_graph_id")
    if tier.max_subgraphs == 0:
        raise LimitReached(f"tier {tier.name} allows no subgraphs; upgrade to ladybug-large",
                           field="parent_graph_id")
    if parent.subgraph_count >= tier.max_subgraphs:
        raise LimitReached(f"graph {parent.id!r} already has {tier.max_subgraphs} subgraphs, "
                           f"the most tier {tier.name} allows", field="parent_graph_id")


@dataclass(frozen=True)
class ReservedSubgraph:
    """A subgraph whose rows exist, and what making its file needs."""

    subgraph_id: str
    #: The parent's host: a subgraph lives beside its parent (a fork is a copy on one host).
    host_id: str
    path: Path
    parent_path: Path
    tier: str
    statements: tuple[str, ...]


def reserve_subgraph(
    session: Session, *, user_id: str, parent_graph_id: str, name: str,
    description: str | None,
) -> ReservedSubgraph:
    """Check the parent, the name and the tier's limit, and insert the subgraph's rows.

    The limit is counted by a conditional UPDATE of the parent's ``subgraph_count``: the
    parent's row lock (or SQLite's write lock) makes two concurrent creates take turns, and the
    second sees the first's count.
    """
    validate_subgraph_name(name)
    if session.get(User, user_id) is None:
        raise NotFound(f"user_id: no user {user_id[:70]!r}", field="user_id")
    if not graphs.ANY_GRAPH_ID.fullmatch(parent_graph_id):
        raise NotFound(f"parent_graph_id: no graph {parent_graph_id[:70]!r}",
                       field="parent_graph_id")
    parent = session.get(Graph, parent_graph_id)
    if parent is None or roles.role_row(session, parent, user_id) is None:
        raise NotFound(f"parent_graph_id: no graph {parent_graph_id!r}",
                       field="parent_graph_id")
    check_can_add_subgraph(session, parent, user_id)
    tier = TIERS[parent.tier]
    taken = session.execute(
        update(Graph)
        .where(Graph.id == parent_graph_id, Graph.subgraph_count < tier.max_subgraphs)
        .values(subgraph_count=Graph.subgraph_count + 1)
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:
        raise LimitReached(
            f"graph {parent_graph_id!r} already has {tier.max_subgraphs} subgraphs, the most "
            f"tier {tier.name} allows",
            field="parent_graph_id",
        )
    subgraph_id = f"{parent_graph_id}_{name}"
    # Case-blind, as names of a custom schema are: two subgraphs a letter's case apart would be
    # two files whose names differ only by case (one file on a case-blind disk).
    same = session.scalar(select(Graph.name).where(Graph.parent_graph_id == parent_graph_id,
                                                   func.lower(Graph.name) == name.lower()))
    if same is not None:
        raise Conflict(f"name: graph {parent_graph_id!r} already has a subgraph {same!r}"
                       + ("" if same == name else " (names are compared case-blind)"),
                       field="name")
    index = (session.scalar(select(func.max(Graph.subgraph_index))
                            .where(Graph.parent_graph_id == parent_graph_id)) or 0) + 1
    host = session.get(GraphHost, parent.host_id)
    assert host is not None
    subgraph = Graph(
        id=subgraph_id, org_id=parent.org_id, owner_user_id=user_id, name=name,
        description=description, graph_type=parent.graph_type, tier=parent.tier,
        parent_graph_id=parent_graph_id, subgraph_index=index, host_id=host.id,
        database_path=str(graphs.database_path(host.data_root, subgraph_id)),
        schema_extensions=list(parent.schema_extensions or []), tags=[], details={},
    )
    session.add(subgraph)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"name: subgraph {name!r} of {parent_graph_id!r} already exists",
                       field="name") from exc
    statements = graphs.schema_statements(session, parent_graph_id)
    graphs.store_schema(session, subgraph_id, statements, None, schema_type="inherited")
    graphs.grant_role(session, subgraph_id, user_id, "admin")
    audit.record(session, actor=user_id, action="subgraph.created", subject_type="graph",
                 subject_id=subgraph_id, details={"parent_graph_id": parent_graph_id})
    return ReservedSubgraph(subgraph_id=subgraph_id, host_id=host.id,
                            path=Path(subgraph.database_path),
                            parent_path=Path(parent.database_path), tier=subgraph.tier,
                            statements=tuple(statements))


def record_fork(session: Session, subgraph_id: str, fork: dict[str, Any]) -> None:
    """Keep how the fork went (``fork_status`` and its rows or error) on the subgraph."""
    subgraph = session.get(Graph, subgraph_id)
    if subgraph is not None:
        subgraph.details = {**(subgraph.details or {}), **fork}


def subgraph_summary(session: Session, subgraph_id: str) -> dict[str, Any] | None:
    """What a finished creation left behind (a launched run's result); None if nothing."""
    graph = session.get(Graph, subgraph_id)
    if graph is None:
        return None
    return {"graph_id": graph.id, "parent_graph_id": graph.parent_graph_id,
            "status": graph.status, "database_path": graph.database_path,
            "fork_status": (graph.details or {}).get("fork_status", "not_requested")}


def deletable_subgraph(session: Session, *, user_id: str, parent_graph_id: str,
                       name: str) -> str:
    """The subgraph ``name`` of a parent the user is an admin of, with the parent's row locked
    (a deletion of the parent waits, or is waited for)."""
    validate_subgraph_name(name)
    if not graphs.GRAPH_ID.fullmatch(parent_graph_id):
        raise NotFound(f"parent_graph_id: no graph {parent_graph_id[:70]!r}",
                       field="parent_graph_id")
    parent = session.scalar(select(Graph).where(Graph.id == parent_graph_id).with_for_update())
    if parent is None or not roles.sees(session, parent, user_id):
        raise NotFound(f"parent_graph_id: no graph {parent_graph_id!r}",
                       field="parent_graph_id")
    if parent.status != "active":
        raise Conflict(f"parent_graph_id: graph {parent_graph_id!r} is {parent.status}; its "
                       "subgraphs go with it", field="parent_graph_id")
    roles.check_admin(session, parent, user_id, field="parent_graph_id",
                      what="delete its subgraphs")
    subgraph_id = f"{parent_graph_id}_{name}"
    subgraph = session.get(Graph, subgraph_id)
    if subgraph is None or subgraph.parent_graph_id != parent_graph_id:
        raise NotFound(f"name: graph {parent_graph_id!r} has no subgraph {name!r}",
                       field="name")
    return subgraph_id


def mark_deleting(session: Session, subgraph_id: str) -> None:
    """``deleting``, committed before the subgraph's host is asked to delete its file: a host
    that took the request in and did not answer (hung; it may delete the file yet) leaves a
    subgraph shown as being deleted, never one shown active without its file. The deletion run
    again finishes it."""
    session.execute(update(Graph).where(Graph.id == subgraph_id,
                                        Graph.status.in_(GRAPH.sources("begin_deletion")))
                    .values(status=GRAPH.target("begin_deletion")))


def record_deletion(session: Session, subgraph_id: str, *, actor: str) -> None:
    audit.record(session, actor=actor, action="subgraph.deleted", subject_type="graph",
                 subject_id=subgraph_id)
