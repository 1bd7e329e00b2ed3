"""A graph moved to another host of its tier (``graphs move``, ``hosts drain --move``), with its
subgraphs, under its lifecycle claim.

The order keeps one graph in one place and the write window short. A slot is taken on the new
host and written on the graph's row (``details.moving``) in one transaction, so a run cut short
and run again reuses it. The graph (and each subgraph) is made there and copied while it still
takes writes; then the old host freezes it (``GraphHost.freeze``: writes refused, a 503 with
``Retry-After``, reads served), and only what changed since is copied again, host to host, and
checked by its sha256. The rows then move in one transaction, the slot leaves the old host with
them; the old copy is removed last. Killed before the switch, the graph is whole where its rows
say, and a run again continues (the reaper launches it: ``interrupted``); killed after, the old
copy is what housekeeping quarantines, as nothing places it there. ``cancel`` gives a move up
before its switch: the old copy takes writes again, the new one and its slot go.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import (
    CapacityExhausted,
    Conflict,
    NotFound,
    ServiceUnavailable,
)
from provisioning_pipelines.services import audit
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.graphs import lifecycle
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.services.graphs.lifecycle import GraphClaim
from provisioning_pipelines.services.graphs.states import LIVE
from provisioning_pipelines.storage.hosts.contract import SUFFIX, HostAddress
from provisioning_pipelines.storage.hosts.directory import HostDirectory
from provisioning_pipelines.storage.models import Graph, GraphHost, utcnow

#: The row's mark while a move runs; ``replacing`` is a replacement's (``replacement.py``).
MARK = lifecycle.MOVING_MARK


@dataclass(frozen=True)
class Move:
    """One graph's way to its new host, decided before anything is made."""

    graph_id: str
    owner_user_id: str
    source: HostAddress
    target: HostAddress
    #: The graph and each live subgraph, with its schema: every file that moves.
    parts: list[tuple[str, list[str]]]
    claim: GraphClaim
    #: The sha256 each part was copied with while it took writes (None: copy it again).
    copied: dict[str, str | None] = field(default_factory=dict)


def plan(session: Session, graph_id: str, *, to_host_id: str | None,
         lease_seconds: float) -> Move | None:
    """Claim the graph and a slot on the new host (the one a cut-short run took, if any).
    None when the graph is on ``to_host_id`` already (moved)."""
    graph = graphs.top_level_graph(session, graph_id)
    mark = dict((graph.details or {}).get(MARK) or {})
    if not mark and to_host_id is not None and graph.host_id == to_host_id:
        return None
    if mark and to_host_id is not None and mark["to"] != to_host_id:
        raise Conflict(f"graph_id: graph {graph_id} is moving to host {mark['to']}; run the "
                       "move again with that host, or give it up (graphs move --cancel)",
                       field="graph_id")
    if not mark and to_host_id is None:
        raise NotFound(f"to_host_id: graph {graph_id} is not moving; name the host it goes "
                       "to (--to)", field="to_host_id")
    claim = lifecycle.claim_graph(session, graph_id, statuses=LIVE, lease_seconds=lease_seconds)
    graph = lifecycle.assert_graph_held(session, claim)
    source = session.get(GraphHost, graph.host_id)
    assert source is not None
    if not mark:
        target = _target(session, graph, to_host_id or "")
        mark = {"to": target.id, "root": target.data_root, "from": graph.host_id,
                "at": utcnow().isoformat()}
        graph.details = {**(graph.details or {}), MARK: mark}
        audit.record(session, actor="operator", action="graph.move_started",
                     subject_type="graph", subject_id=graph_id, details=mark)
    target_row = session.get(GraphHost, mark["to"])
    if target_row is None:
        raise NotFound(f"to_host_id: no host {mark['to']!r}", field="to_host_id")
    parts = [(part, graphs.schema_statements(session, part))
             for part in parts_of(session, graph_id)]
    return Move(graph_id=graph_id, owner_user_id=graph.owner_user_id,
                source=hosts.address_of(source), target=hosts.address_of(target_row),
                parts=parts, claim=claim)


def parts_of(session: Session, graph_id: str) -> list[str]:
    """The graph and its live subgraphs: every file that moves with it."""
    return [graph_id, *session.scalars(select(Graph.id).where(
        Graph.parent_graph_id == graph_id, Graph.status.in_(LIVE)).order_by(Graph.id))]


def _target(session: Session, graph: Graph, to_host_id: str) -> Any:
    """Take a slot on the named host of the graph's tier, or say why not."""
    found = session.get(GraphHost, to_host_id) if hosts.HOST_ID.fullmatch(to_host_id) else None
    if found is None or found.tier != graph.tier:
        raise NotFound(f"to_host_id: no host {to_host_id[:70]!r} of tier {graph.tier}",
                       field="to_host_id")
    if found.status != "available" or found.health != "healthy":
        raise Conflict(f"to_host_id: host {to_host_id} is {found.status} and "
                       f"{found.health}; a graph moves only to an available, healthy host",
                       field="to_host_id")
    slot = session.execute(hosts.slot_statement(on_chosen_host=True),
                           {"slot_tier": graph.tier, "slot_host": to_host_id}).first()
    if slot is None:
        raise CapacityExhausted(f"to_host_id: host {to_host_id} has no free slot")
    return slot


def mark_frozen(session: Session, move: Move) -> None:
    """Say on the row that writes are refused now (a cancel thaws the old copy)."""
    graph = lifecycle.assert_graph_held(session, move.claim)
    mark = dict((graph.details or {}).get(MARK) or {})
    graph.details = {**(graph.details or {}), MARK: {**mark, "frozen": True}}


def switch(session: Session, move: Move, *, now: datetime | None = None) -> Graph:
    """The rows (the graph's and its subgraphs') move to the new host in one transaction; the
    old host's slot goes with them; the claim is given back."""
    now = now or utcnow()
    graph = lifecycle.assert_graph_held(session, move.claim)
    for part, _ in move.parts:
        session.execute(update(Graph).where(Graph.id == part).values(
            host_id=move.target.host_id,
            database_path=str(Path(move.target.data_root) / f"{part}{SUFFIX}"))
            .execution_options(synchronize_session=False))
    hosts.release_slot(session, move.source.host_id)
    details = {key: value for key, value in (graph.details or {}).items() if key != MARK}
    details["moved_from"] = {"host_id": move.source.host_id, "at": now.isoformat()}
    graph.details = details
    lifecycle.release_graph(session, move.claim)
    audit.record(session, actor="operator", action="graph.moved", subject_type="graph",
                 subject_id=move.graph_id, details={"from": move.source.host_id,
                                                    "to": move.target.host_id,
                                                    "subgraphs": len(move.parts) - 1})
    session.flush()
    session.refresh(graph)
    return graph


def cancel(session: Session, directory: HostDirectory, graph_id: str, *,
           lease_seconds: float) -> Move:
    """Give up a move that has not switched: the old copy takes writes again, the new copy
    and its slot on the new host go, the mark goes; the graph stays where it was."""
    graph = graphs.top_level_graph(session, graph_id)
    if not is_moving(graph):
        raise Conflict(f"graph_id: graph {graph_id} is not moving", field="graph_id")
    move = plan(session, graph_id, to_host_id=None, lease_seconds=lease_seconds)
    assert move is not None
    source = hosts.graph_host(session, directory, move.source.host_id)
    for part, _ in move.parts:
        source.thaw(part)
    try:
        target = hosts.graph_host(session, directory, move.target.host_id)
        for part, _ in reversed(move.parts):
            target.delete(part)
    except ServiceUnavailable:
        pass  # the new host's copy, placed nowhere, is housekeeping's once it answers
    graph = lifecycle.assert_graph_held(session, move.claim)
    hosts.release_slot(session, move.target.host_id)
    graph.details = {key: value for key, value in (graph.details or {}).items() if key != MARK}
    lifecycle.release_graph(session, move.claim)
    audit.record(session, actor="operator", action="graph.move_given_up", subject_type="graph",
                 subject_id=move.graph_id, details={"from": move.source.host_id,
                                                    "to": move.target.host_id})
    return move


def _marked(key: str) -> ColumnElement[bool]:
    """Whether the row's details hold ``key`` (asked of the database: few rows have one)."""
    return Graph.details[key].as_string().is_not(None)


def is_moving(graph: Graph) -> bool:
    return bool((graph.details or {}).get(MARK))


def interrupted(session: Session, *, now: datetime | None = None) -> list[tuple[str, str]]:
    """Moves whose worker is gone (the mark is there, nobody holds the claim): ``(graph id,
    host it goes to)``, for the reaper to run again."""
    now = now or utcnow()
    found = session.scalars(select(Graph).where(
        Graph.parent_graph_id.is_(None), Graph.status.in_(LIVE), _marked(MARK),
        or_(Graph.lifecycle_token.is_(None), Graph.lifecycle_lease_expires_at < now)))
    return [(graph.id, graph.details[MARK]["to"]) for graph in found if is_moving(graph)]


def arriving(session: Session) -> dict[str, set[str]]:
    """By host: the graphs (and subgraphs) a move or a replacement is making there now, which
    no row places there yet and housekeeping must leave alone."""
    found: dict[str, set[str]] = {}
    marked = session.scalars(select(Graph).where(Graph.parent_graph_id.is_(None),
                                                 Graph.status.in_(LIVE),
                                                 or_(_marked(MARK), _marked("replacing"))))
    for graph in marked:
        for key in (MARK, "replacing"):
            mark = (graph.details or {}).get(key)
            if mark:
                found.setdefault(mark["to"], set()).update(parts_of(session, graph.id))
    return found


def graphs_of(session: Session, host_id: str) -> list[str]:
    """The live top-level graphs a host holds, oldest first (``hosts drain --move``)."""
    return list(session.scalars(select(Graph.id).where(
        Graph.host_id == host_id, Graph.parent_graph_id.is_(None), Graph.status.in_(LIVE))
        .order_by(Graph.created_at, Graph.id)))


def least_used_other(session: Session, tier: str, avoid: str) -> str:
    """The host of the tier with the most free slots other than ``avoid``: where a drained
    host's graph goes."""
    host_id = session.scalar(hosts.least_used(GraphHost.id, tier).where(GraphHost.id != avoid))
    if host_id is None:
        raise CapacityExhausted(f"tier {tier!r}: no other available, healthy host has a free "
                                f"slot for a graph of host {avoid}")
    return str(host_id)
