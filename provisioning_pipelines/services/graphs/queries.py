"""A customer's query on a graph or a subgraph: who may ask, whether it may write, where it
runs and within which limits.

The rules, in order: a graph nobody may see (unknown, anyone else's, being deleted or deleted,
still being restored) is a 404, exactly alike; a suspended graph, or a subgraph of a suspended
parent, is a 409 ``suspended`` (its data is kept, not served); a graph on a host that misses its
probes is a 503 with ``Retry-After``. A ``reader`` queries read-only, an ``admin`` or a
``writer`` may write (``roles.may_write``); whether a query writes is the engine's to say (the
host runs a reader's query on a read-only handle), never this module's. The SQL work is done
before the query runs, so no database session is held while the engine works.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import NotFound, Suspended
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.graphs import roles
from provisioning_pipelines.storage.graph_ids import ANY_GRAPH_ID
from provisioning_pipelines.storage.hosts.contract import GraphHost
from provisioning_pipelines.storage.hosts.directory import HostDirectory
from provisioning_pipelines.storage.ladybug.queries import QueryLimits, QueryResult
from provisioning_pipelines.storage.models import Graph
from provisioning_pipelines.storage.models import GraphHost as GraphHostRow

#: States in which a graph's data is not served to anyone: it is going, gone or not yet whole.
_HIDDEN = frozenset({"restoring", "deleting", "deleted"})
SUSPENDED = "suspended"


@dataclass(frozen=True)
class QueryTarget:
    """Where a user's query goes and what it may do there."""

    graph_id: str
    host_id: str
    tier: str
    role: str
    read_only: bool


def query_target(session: Session, graph_id: str, user_id: str) -> QueryTarget:
    """The graph ``user_id`` may query, or the error to answer (404, 409, 503)."""
    if not isinstance(graph_id, str) or not ANY_GRAPH_ID.fullmatch(graph_id):
        raise NotFound(f"graph_id: no graph {str(graph_id)[:70]!r}", field="graph_id")
    # The graph and its host's health in one statement: a query is on the customer's path.
    found = session.execute(select(Graph, GraphHostRow.health)
                            .outerjoin(GraphHostRow, GraphHostRow.id == Graph.host_id)
                            .where(Graph.id == graph_id)).first()
    graph, health = (found[0], found[1]) if found is not None else (None, None)
    parent = session.get(Graph, graph.parent_graph_id) \
        if graph is not None and graph.parent_graph_id else None
    family = [graph] if parent is None else [graph, parent]
    owner = graph is not None and any(member.owner_user_id == user_id for member in family)
    row = roles.role_row(session, graph, user_id) if graph is not None else None
    if graph is None or (row is None and not owner) or any(
            member.status in _HIDDEN for member in family):
        raise NotFound(f"graph_id: no graph {graph_id!r}", field="graph_id")
    if any(member.status == SUSPENDED for member in family):
        raise Suspended(f"graph_id: graph {graph_id} is suspended; reactivate it to query it",
                        field="graph_id")
    if row is not None and not row.enabled:
        raise NotFound(f"graph_id: no graph {graph_id!r}", field="graph_id")
    role = row.role if row is not None else roles.ADMIN  # the owner, with no row of their own
    if health == "unhealthy":
        hosts.check_serving(session, graph_id)  # raises, in the words every route uses
    return QueryTarget(graph_id=graph.id, host_id=graph.host_id, tier=graph.tier, role=role,
                       read_only=not roles.may_write(role))


def operator_target(session: Session, graph_id: str, *, write: bool) -> QueryTarget:
    """An operator's query (the CLI): any graph, with the same rules of state and host; it
    writes only when asked to."""
    graph = session.get(Graph, graph_id) if isinstance(graph_id, str) and \
        ANY_GRAPH_ID.fullmatch(graph_id) else None
    parent = session.get(Graph, graph.parent_graph_id) \
        if graph is not None and graph.parent_graph_id else None
    family = [graph] if parent is None else [graph, parent]
    if graph is None or any(member.status in _HIDDEN for member in family):
        raise NotFound(f"graph_id: no graph {str(graph_id)[:70]!r}", field="graph_id")
    if any(member.status == SUSPENDED for member in family):
        raise Suspended(f"graph_id: graph {graph_id} is suspended; reactivate it to query it",
                        field="graph_id")
    hosts.check_serving(session, graph_id)
    return QueryTarget(graph_id=graph.id, host_id=graph.host_id, tier=graph.tier,
                       role="operator", read_only=not write)


def host_of(session: Session, directory: HostDirectory, target: QueryTarget) -> GraphHost:
    return hosts.graph_host(session, directory, target.host_id)


def run(host: GraphHost, target: QueryTarget, query: str,
        parameters: Mapping[str, Any] | None, limits: QueryLimits) -> QueryResult:
    """Run the query on the graph's host (blocking: call it from the thread pool)."""
    return host.run_query(target.graph_id, query, parameters, read_only=target.read_only,
                          limits=limits)
