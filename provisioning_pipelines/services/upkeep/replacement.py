"""A lost graph host replaced: each of its graphs rebuilt on a healthy host of its tier from its
newest backup, the rows switched there, the dead host's row kept and marked ``replaced``.

The order keeps one graph in one place. The host is marked first, so nothing is placed on it or
sent to it any more (``hosts.graph_host`` refuses it, housekeeping and the checks leave it
alone): a host that comes back after being replaced serves nothing until an operator clears it
(``clear``), which moves aside (quarantines) what it still holds that is placed elsewhere. Then,
graph by graph, under the graph's lifecycle claim: a slot is taken on the new host and written
on the graph's row (``details.replacing``) in one transaction, so a run cut short and run again
reuses it instead of taking a second; the graph is made there with its schema and its newest
backup swapped in; the rows then move in one transaction, the slot leaves the dead host with
them. A backup that was kept only on the lost host's own disk is lost with it: the graph comes
back with its schema and no data, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import CapacityExhausted, Conflict, NotFound
from provisioning_pipelines.services import audit
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.graphs import backups, lifecycle
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.services.graphs.lifecycle import GraphClaim
from provisioning_pipelines.services.graphs.states import LIVE
from provisioning_pipelines.storage.hosts.contract import SUFFIX
from provisioning_pipelines.storage.hosts.directory import HostDirectory
from provisioning_pipelines.storage.models import Graph, GraphBackup, GraphHost, utcnow

REPLACED = hosts.REPLACED


@dataclass(frozen=True)
class Kept:
    """The backup a replacement restores: the newest one the new host can fetch."""

    backup_id: str
    checksum: str
    taken_at: datetime


@dataclass(frozen=True)
class Replacement:
    """One graph's way from the lost host to its new one, decided before anything is made."""

    graph_id: str
    owner_user_id: str
    lost_host_id: str
    host_id: str
    data_root: str
    ddl: list[str]
    #: The graph's live subgraphs, each with its own schema (they come back empty).
    subgraphs: list[tuple[str, list[str]]]
    backup: Kept | None
    claim: GraphClaim
    #: Whether a backup existed but only on the lost host's disk.
    backup_lost: bool = False


def mark_replaced(session: Session, host_id: str, *, force: bool = False) -> GraphHost:
    """Mark the host replaced (once: a second call finds it so). A host that answers its
    probes is refused unless ``force``: drain it and move its graphs instead."""
    host = session.get(GraphHost, host_id) if hosts.HOST_ID.fullmatch(host_id) else None
    if host is None:
        raise NotFound(f"host_id: no host {host_id[:70]!r}", field="host_id")
    if host.status == REPLACED:
        return host
    if host.health == "healthy" and not force:
        raise Conflict(f"host_id: host {host_id} answers its probes; a host that is not lost "
                       "is drained (hosts drain), not replaced (--force to replace it anyway)",
                       field="host_id")
    host.status = REPLACED
    audit.record(session, actor="operator", action="host.replaced", subject_type="host",
                 subject_id=host_id, details={"graphs": len(graphs_on(session, host_id))})
    return host


def graphs_on(session: Session, host_id: str) -> list[str]:
    """The live top-level graphs whose rows place them on the host, oldest first."""
    return list(session.scalars(select(Graph.id).where(
        Graph.host_id == host_id, Graph.parent_graph_id.is_(None), Graph.status.in_(LIVE))
        .order_by(Graph.created_at, Graph.id)))


def plan(session: Session, graph_id: str, lost_host_id: str, *, to_host_id: str | None,
         lease_seconds: float) -> Replacement | None:
    """Claim the graph and the slot it goes to (the one an earlier run took, if any); None if
    the graph is not on the lost host any more (replaced already)."""
    graph = graphs.top_level_graph(session, graph_id)
    if graph.host_id != lost_host_id:
        return None
    lost = session.get(GraphHost, lost_host_id)
    if lost is None or lost.status != REPLACED:
        raise Conflict(f"host_id: host {lost_host_id} is not marked replaced", field="host_id")
    claim = lifecycle.claim_graph(session, graph_id, statuses=LIVE, lease_seconds=lease_seconds)
    graph = lifecycle.assert_graph_held(session, claim)
    mark = dict((graph.details or {}).get("replacing") or {})
    if not mark:
        slot = _slot(session, graph.tier, lost_host_id, to_host_id)
        mark = {"to": slot.id, "root": slot.data_root, "from": lost_host_id}
        graph.details = {**(graph.details or {}), "replacing": mark}
    newest = session.scalars(select(GraphBackup).where(GraphBackup.graph_id == graph_id)
                             .order_by(GraphBackup.created_at.desc())).first()
    reachable = newest is not None and (backups.is_shared(newest.path)
                                        or lost.url is None)  # local hosts share BACKUP_DIR
    children = session.scalars(select(Graph).where(Graph.parent_graph_id == graph_id,
                                                   Graph.status.in_(LIVE)).order_by(Graph.id))
    kept = (Kept(newest.id, newest.checksum, backups.aware(newest.created_at))
            if newest is not None and reachable else None)
    return Replacement(
        graph_id=graph_id, owner_user_id=graph.owner_user_id, lost_host_id=lost_host_id,
        host_id=mark["to"], data_root=mark["root"], ddl=graphs.schema_statements(session, graph_id),
        subgraphs=[(child.id, graphs.schema_statements(session, child.id)) for child in children],
        backup=kept, claim=claim, backup_lost=newest is not None and not reachable)


def _slot(session: Session, tier: str, lost_host_id: str, to_host_id: str | None) -> Any:
    if to_host_id is not None:
        target = session.get(GraphHost, to_host_id) if hosts.HOST_ID.fullmatch(to_host_id) \
            else None
        if target is None or target.tier != tier or target.id == lost_host_id:
            raise NotFound(f"to_host_id: no other host {to_host_id[:70]!r} of tier {tier}",
                           field="to_host_id")
        slot = session.execute(hosts.slot_statement(on_chosen_host=True),
                               {"slot_tier": tier, "slot_host": to_host_id}).first()
    else:
        slot = hosts.slot_elsewhere(session, tier, {lost_host_id})
    if slot is None:
        raise CapacityExhausted(f"tier {tier!r}: no healthy host with a free slot for the "
                                f"graphs of host {lost_host_id}"
                                + (f" on {to_host_id}" if to_host_id else ""))
    return slot


def switch(session: Session, work: Replacement, *, now: datetime | None = None) -> Graph:
    """The graph's rows (and its subgraphs') move to the new host in one transaction; the slot
    leaves the lost host with them; the graph says where it came from and how old its data is."""
    now = now or utcnow()
    graph = lifecycle.assert_graph_held(session, work.claim)
    for graph_id in (work.graph_id, *(child for child, _ in work.subgraphs)):
        session.execute(update(Graph).where(Graph.id == graph_id).values(
            host_id=work.host_id,
            database_path=str(Path(work.data_root) / f"{graph_id}{SUFFIX}"))
            .execution_options(synchronize_session=False))
    session.execute(update(GraphHost).where(GraphHost.id == work.lost_host_id,
                                            GraphHost.slots_used > 0)
                    .values(slots_used=GraphHost.slots_used - 1))
    details = {key: value for key, value in (graph.details or {}).items()
               if key != "replacing"}
    details["replaced_from"] = {
        "host_id": work.lost_host_id, "at": now.isoformat(),
        "backup_id": work.backup.backup_id if work.backup else None,
        "data_as_of": work.backup.taken_at.isoformat() if work.backup else None}
    graph.details = details
    lifecycle.release_graph(session, work.claim)
    audit.record(session, actor="operator", action="graph.replaced", subject_type="graph",
                 subject_id=work.graph_id, details={"from": work.lost_host_id,
                                                    "to": work.host_id,
                                                    **details["replaced_from"]})
    session.flush()
    session.refresh(graph)
    return graph


def clear(session: Session, directory: HostDirectory, host_id: str) -> list[str]:
    """Take a replaced host back, empty: what it still holds that no row places there (its
    graphs live elsewhere now) is quarantined on it, for an operator to look at; its slots are
    counted again from the rows. The graphs moved aside, by id."""
    host = session.get(GraphHost, host_id) if hosts.HOST_ID.fullmatch(host_id) else None
    if host is None:
        raise NotFound(f"host_id: no host {host_id[:70]!r}", field="host_id")
    if host.status != REPLACED:
        raise Conflict(f"host_id: host {host_id} is {host.status}, not replaced",
                       field="host_id")
    reached = directory.get(hosts.address_of(host))
    placed = set(session.scalars(select(Graph.id).where(Graph.host_id == host_id,
                                                        Graph.status != "deleted")))
    moved = [graph_id for graph_id in reached.list().graphs if graph_id not in placed]
    for graph_id in moved:
        reached.quarantine(graph_id)
    host.slots_used = len(graphs_on(session, host_id))
    host.status = "available"
    audit.record(session, actor="operator", action="host.cleared", subject_type="host",
                 subject_id=host_id, details={"quarantined": moved})
    return moved
