"""Graphs as their members see them: the views ``GET /v1/graphs`` and the flows' results give.

A view is read, never written: a graph with its subgraphs, each with its size (asked of its host
server, one short try, when it is not a local host) and ``available`` false while its host does
not answer its probes; for a viewer, their role on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import ProvisioningError
from provisioning_pipelines.services import pages
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.graphs import roles
from provisioning_pipelines.services.graphs.records import RESTORING
from provisioning_pipelines.storage.hosts.directory import HostDirectory
from provisioning_pipelines.storage.models import Graph


def describe(session: Session, graph: Graph, directory: HostDirectory | None = None, *,
             viewer: str | None = None) -> dict[str, Any]:
    """A graph as its owner sees it (``GET /v1/graphs``): with its subgraphs and their sizes,
    and ``available`` false while its host does not answer its probes. For a ``viewer``, also
    ``my_role``, their role on it (None: a deleted graph's owner), so a page offers only what
    they may do."""
    children = session.scalars(select(Graph).where(Graph.parent_graph_id == graph.id)
                               .order_by(Graph.subgraph_index)).all()
    down = hosts.unhealthy_among(session, {graph.host_id, *(c.host_id for c in children)})
    sizes = _sizes(session, directory, [graph, *children], down)
    view = {**_view(graph, down, sizes),
            "subgraphs": [_view(child, down, sizes) for child in children]}
    if viewer is not None:
        view["my_role"] = roles.role_on(session, graph, viewer)
    return view


#: Seconds a host server is given to say a graph's size, once, for a page that shows it.
SIZE_WAIT = 1.0


def _sizes(session: Session, directory: HostDirectory | None, family: Sequence[Graph],
           down: set[str]) -> dict[str, int | None]:
    """Bytes each graph takes: its file's, read here for a local host; asked of its host
    server (given the ``directory``; one short try, so a page never waits out a hung host)
    while that host answers its probes; else unknown (None)."""
    servers = hosts.servers_among(session, {graph.host_id for graph in family})
    sizes: dict[str, int | None] = {}
    for graph in family:
        sizes[graph.id] = None
        try:
            if graph.host_id not in servers:
                sizes[graph.id] = Path(graph.database_path).stat().st_size
            elif directory is not None and graph.host_id not in down:
                host = hosts.graph_host(session, directory, graph.host_id)
                sizes[graph.id] = host.size(graph.id, wait=SIZE_WAIT)
        except (OSError, ProvisioningError):
            pass
    return sizes


def _view(graph: Graph, unhealthy_hosts: set[str], sizes: Mapping[str, int | None]
          ) -> dict[str, Any]:
    size = sizes.get(graph.id)
    return {"graph_id": graph.id, "name": graph.name, "status": graph.status,
            "tier": graph.tier,
            "size_bytes": size, "host_id": graph.host_id,
            "available": graph.host_id not in unhealthy_hosts,
            "parent_graph_id": graph.parent_graph_id,
            "created_at": graph.created_at.isoformat(),
            "delete_after": graph.delete_after.isoformat() if graph.delete_after else None,
            "deleted_at": graph.deleted_at.isoformat() if graph.deleted_at else None}


def graphs_of(session: Session, user_id: str, directory: HostDirectory | None = None
              ) -> list[dict[str, Any]]:
    """The top-level graphs the user is a member of (``roles.seen_by``), newest first, with
    subgraphs."""
    found = session.scalars(_graphs_seen_by(user_id)
                            .order_by(Graph.created_at.desc(), Graph.id.desc())).all()
    return [describe(session, graph, directory, viewer=user_id) for graph in found]


def graphs_page(session: Session, user_id: str, directory: HostDirectory | None = None, *,
                after: pages.Key | None = None, limit: int = pages.DEFAULT_LIMIT
                ) -> pages.Page[dict[str, Any]]:
    """One page of ``graphs_of`` (``GET /v1/graphs``)."""
    found = pages.keyset(session, _graphs_seen_by(user_id), Graph.created_at, Graph.id,
                         after=after, limit=limit)
    return found.map(lambda graph: describe(session, graph, directory, viewer=user_id))


def _graphs_seen_by(user_id: str) -> Select[tuple[Graph]]:
    return select(Graph).where(Graph.parent_graph_id.is_(None), Graph.status != RESTORING,
                               roles.seen_by(user_id))


def all_graphs(session: Session, *, limit: int = 1000) -> list[dict[str, Any]]:
    """Every top-level graph, newest first (the operator's list)."""
    found = session.scalars(select(Graph).where(Graph.parent_graph_id.is_(None))
                            .order_by(Graph.created_at.desc()).limit(limit)).all()
    return [describe(session, graph) for graph in found]
