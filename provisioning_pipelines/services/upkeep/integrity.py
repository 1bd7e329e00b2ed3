"""Checks that what the rows say and what is on disk agree, for the operator's asset checks.

Each returns its findings (an empty list is healthy) rather than raising, so a check can show
every problem it found, not only the first. They read only: repairing is for a person (or the
housekeeping sweep, for files no row owns).

Only graphs that are there count: a ``deleted`` row is a tombstone (no file, no slot), a graph
being restored or deleted holds its slot but may or may not have its file yet, and only a live
one (``states.LIVE``) must have a file that opens.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import ProvisioningError
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.graphs.states import GRAPH, HOLDS_SLOT, LIVE
from provisioning_pipelines.services.upkeep import moves
from provisioning_pipelines.storage.graph_ids import GRAPH_ID
from provisioning_pipelines.storage.hosts.directory import HostDirectory
from provisioning_pipelines.storage.ladybug import expected_tables
from provisioning_pipelines.storage.models import Graph, GraphHost, GraphSchema


@dataclass(frozen=True)
class Finding:
    subject: str
    problem: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.problem}"


def graphs_hold_their_schema(session: Session, directory: HostDirectory, *,
                             limit: int = 200) -> tuple[int, list[Finding]]:
    """Ask each of the newest ``limit`` graphs' hosts for its tables and compare them with the
    stored DDL.

    Returns how many were checked and what was wrong (a host that does not answer is one
    finding per graph: it cannot be checked now).
    """
    rows = session.execute(
        select(Graph.id, Graph.host_id, GraphSchema.schema_json)
        .join(GraphSchema, GraphSchema.graph_id == Graph.id)
        .where(Graph.status.in_(LIVE))
        .order_by(Graph.created_at.desc()).limit(limit)).all()
    findings: list[Finding] = []
    for graph_id, host_id, schema_json in rows:
        statements = list((schema_json or {}).get("statements") or [])
        wanted = {(t.name.lower(), t.kind) for t in expected_tables(statements)}
        try:
            host = hosts.graph_host(session, directory, host_id)
            found = {(name.lower(), kind) for name, kind in host.tables(graph_id)}
        except Exception as exc:  # a file that is missing or will not open is the finding
            findings.append(Finding(graph_id, f"cannot open it on host {host_id}: {exc}"))
            continue
        if missing := sorted(name for name, _ in wanted - found):
            findings.append(Finding(graph_id, f"tables missing: {', '.join(missing)}"))
    return len(rows), findings


def hosts_within_capacity(session: Session) -> list[Finding]:
    """No host over capacity, and each host's slot count equal to its top-level graphs."""
    counted = dict(session.execute(
        select(Graph.host_id, func.count()).where(Graph.parent_graph_id.is_(None),
                                                  Graph.status.in_(HOLDS_SLOT))
        .group_by(Graph.host_id)).all())
    # A move or a replacement under way holds a slot on the host its graph goes to.
    for host_id, arriving in moves.arriving(session).items():
        counted[host_id] = counted.get(host_id, 0) + sum(1 for graph_id in arriving
                                                         if GRAPH_ID.fullmatch(graph_id))
    findings = []
    for host in session.scalars(select(GraphHost).order_by(GraphHost.id)):
        if host.slots_used > host.capacity:
            findings.append(Finding(host.id, f"{host.slots_used} slots used of "
                                             f"{host.capacity}"))
        graphs = counted.get(host.id, 0)
        if graphs != host.slots_used:
            findings.append(Finding(host.id, f"slots_used is {host.slots_used} but "
                                             f"{graphs} graphs live there"))
    return findings


def placed_by_host(session: Session) -> dict[str, dict[str, str]]:
    """Every graph that is not deleted, by host: ``{host id: {graph id: status}}``, with an
    entry for every registered host (an empty host too)."""
    placed: dict[str, dict[str, str]] = {host_id: {} for host_id in session.scalars(
        select(GraphHost.id).where(GraphHost.status != hosts.REPLACED))}
    for graph_id, host_id, status in session.execute(
            select(Graph.id, Graph.host_id, Graph.status)
            .where(Graph.status != GRAPH.target("finish_deletion"))):
        placed.setdefault(host_id, {})[graph_id] = status
    return placed


def files_match_rows(session: Session, directory: HostDirectory) -> list[Finding]:
    """On every host, every live graph placed there has its file, and every graph file it
    holds has the row of a graph that is not deleted placed on that host. A host that does not
    answer is a finding of its own (what it holds cannot be known now)."""
    findings = []
    arriving = moves.arriving(session)
    for host_id, placed in sorted(placed_by_host(session).items()):
        try:
            held = set(hosts.graph_host(session, directory, host_id).list().graphs)
        except ProvisioningError as exc:
            findings.append(Finding(host_id, f"cannot list its graphs: {exc.message}"))
            continue
        findings += [Finding(graph_id, f"no file on host {host_id}")
                     for graph_id, status in sorted(placed.items())
                     if status in LIVE and graph_id not in held]
        findings += [Finding(graph_id, f"a graph file on host {host_id} no row places there")
                     for graph_id in sorted(held - set(placed) - arriving.get(host_id, set()))]
    return findings
