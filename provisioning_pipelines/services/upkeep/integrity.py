"""Checks that what the rows say and what is on disk agree, for the operator's asset checks.

Each returns its findings (an empty list is healthy) rather than raising, so a check can show
every problem it found, not only the first. They read only: repairing is for a person (or the
housekeeping sweep, for files no row owns).

Only graphs that are there count: a ``deleted`` row is a tombstone (no file, no slot), a graph
being restored or deleted holds its slot but may or may not have its file yet, and only a live
one (``states.LIVE``) must have a file that opens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioning_pipelines.services.graphs.states import GRAPH, HOLDS_SLOT, LIVE
from provisioning_pipelines.services.upkeep.housekeeping import QUARANTINE, host_folders
from provisioning_pipelines.storage.ladybug import LadybugEngine, expected_tables
from provisioning_pipelines.storage.models import Graph, GraphHost, GraphSchema


@dataclass(frozen=True)
class Finding:
    subject: str
    problem: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.problem}"


def graphs_hold_their_schema(session: Session, engine: LadybugEngine, *,
                             limit: int = 200) -> tuple[int, list[Finding]]:
    """Open the newest ``limit`` graphs' files and compare their tables with the stored DDL.

    Returns how many were checked and what was wrong.
    """
    rows = session.execute(
        select(Graph.id, Graph.database_path, GraphSchema.schema_json)
        .join(GraphSchema, GraphSchema.graph_id == Graph.id)
        .where(Graph.status.in_(LIVE))
        .order_by(Graph.created_at.desc()).limit(limit)).all()
    findings: list[Finding] = []
    for graph_id, path, schema_json in rows:
        statements = list((schema_json or {}).get("statements") or [])
        wanted = {(t.name.lower(), t.kind) for t in expected_tables(statements)}
        try:
            found = {(t.name.lower(), t.kind) for t in engine.list_tables(Path(path))}
        except Exception as exc:  # a file that is missing or will not open is the finding
            findings.append(Finding(graph_id, f"cannot open {path}: {exc}"))
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


def files_match_rows(session: Session, graph_data_dir: Path) -> list[Finding]:
    """Every live graph has its file, and every graph file has the row of a graph that is not
    deleted."""
    rows = {os.path.realpath(path): (graph_id, status) for graph_id, path, status in
            session.execute(select(Graph.id, Graph.database_path, Graph.status)
                            .where(Graph.status != GRAPH.target("finish_deletion")))}
    on_disk = {os.path.realpath(entry) for root in host_folders(session, graph_data_dir)
               for entry in root.iterdir()
               if entry.is_file() and entry.suffix == ".lbug"
               and not entry.name.startswith(".") and QUARANTINE not in entry.parts}
    findings = [Finding(graph_id, f"no file at {path}")
                for path, (graph_id, status) in sorted(rows.items())
                if status in LIVE and path not in on_disk]
    findings += [Finding(Path(path).name, "a graph file no row owns")
                 for path in sorted(on_disk - set(rows))]
    return findings
