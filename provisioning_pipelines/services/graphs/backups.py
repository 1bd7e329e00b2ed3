"""Backups of graphs: where they live, their manifests and rows, how long they are kept.

A backup lives at ``<BACKUP_DIR>/<graph id>/<backup id>.lbug`` beside a manifest
``<backup id>.json`` (graph, time, size, checksum, schema), so a backup folder copied elsewhere
still says what it holds. Daily and on-demand backups are kept for the tier's retention (7, 14 or
30 days); the final backup taken before a deletion for ``FINAL_BACKUP_RETENTION_DAYS``. Ids say
what a backup is for, so making one twice is one backup.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import Conflict, InvalidRequest, NotFound, PaymentRequired
from provisioning_pipelines.services import audit, pages
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.catalog import TIERS
from provisioning_pipelines.services.graphs import lifecycle, roles
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.services.graphs.lifecycle import GraphClaim
from provisioning_pipelines.services.graphs.states import GRAPH, LIVE
from provisioning_pipelines.storage.hosts.contract import GraphHost as GraphHostInterface
from provisioning_pipelines.storage.hosts.directory import HostDirectory
from provisioning_pipelines.storage.ladybug import ddl_fingerprint
from provisioning_pipelines.storage.ladybug.backups import BackupFile, checksum_of
from provisioning_pipelines.storage.models import (
    Graph,
    GraphBackup,
    GraphHost,
    GraphSchema,
    Subscription,
    utcnow,
)

KINDS = ("daily", "on_demand", "final")
RESTORING = graphs.RESTORING
#: What a backup id may look like (``bk_`` and what ``backup_id_for`` makes); others are not
#: looked up.
BACKUP_ID = re.compile(r"bk_[A-Za-z0-9_]{1,124}")


@dataclass(frozen=True)
class BackupPolicy:
    backup_dir: Path
    final_retention_days: int


def exists(session: Session, backup_id: str) -> bool:
    return session.get(GraphBackup, backup_id) is not None


def backup_id_for(kind: str, graph_id: str, *, day: datetime | None = None) -> str:
    if kind == "final":
        return f"bk_final_{graph_id}"
    if kind == "daily":
        return f"bk_daily_{graph_id}_{(day or utcnow()):%Y%m%d}"
    return f"bk_{uuid.uuid4().hex[:20]}"


def file_of(policy: BackupPolicy, graph_id: str, backup_id: str) -> Path:
    return policy.backup_dir / graph_id / f"{backup_id}.lbug"


def take(host: GraphHostInterface, policy: BackupPolicy, graph_id: str, backup_id: str, *,
         missing_ok: bool = False) -> BackupFile | None:
    """The host's consistent copy of the graph (checkpointed first; an existing one is
    returned). A local host writes it at ``file_of``; a host server keeps it on its own disk,
    and the path names where the manifest goes here. None when ``missing_ok`` and the host does
    not hold the graph (a deletion whose file went before its final backup was recorded)."""
    try:
        made = host.back_up(graph_id, backup_id)
    except NotFound:
        if missing_ok:
            return None
        raise
    return BackupFile(file_of(policy, graph_id, backup_id), made.size_bytes, made.sha256)


def record(session: Session, policy: BackupPolicy, graph: Graph, backup_id: str, kind: str,
           copy: BackupFile | None) -> GraphBackup:
    """The backup's row and manifest (once: a retry finds them, and needs no ``copy``)."""
    found = session.get(GraphBackup, backup_id)
    if found is not None:
        return found
    assert copy is not None, f"backup {backup_id}: no row and no copy"
    statements = _statements(session, graph.id)
    now = utcnow()
    days = policy.final_retention_days if kind == "final" else TIERS[
        graph.tier].backup_retention_days
    backup = GraphBackup(id=backup_id, graph_id=graph.id, kind=kind, path=str(copy.path),
                         size_bytes=copy.size_bytes, checksum=copy.checksum,
                         schema_fingerprint=ddl_fingerprint(statements), created_at=now,
                         expires_at=now + timedelta(days=days))
    session.add(backup)
    manifest = {"backup_id": backup_id, "graph_id": graph.id, "name": graph.name,
                "tier": graph.tier, "kind": kind, "created_at": now.isoformat(),
                "expires_at": backup.expires_at.isoformat() if backup.expires_at else None,
                "size_bytes": copy.size_bytes, "checksum_sha256": copy.checksum,
                "schema": {"fingerprint": backup.schema_fingerprint,
                           "statements": statements}}
    copy.path.parent.mkdir(parents=True, exist_ok=True)
    copy.path.with_suffix(".json").write_text(json.dumps(manifest, indent=2))
    audit.record(session, actor="backups", action="graph.backed_up", subject_type="graph",
                 subject_id=graph.id, details={"backup_id": backup_id, "kind": kind,
                                               "size_bytes": copy.size_bytes})
    session.flush()
    return backup


def describe(backup: GraphBackup) -> dict[str, Any]:
    return {"backup_id": backup.id, "kind": backup.kind,
            "created_at": backup.created_at.isoformat(), "size_bytes": backup.size_bytes,
            "checksum": backup.checksum,
            "expires_at": backup.expires_at.isoformat() if backup.expires_at else None}


def backups_of(session: Session, graph_id: str) -> list[GraphBackup]:
    return list(session.scalars(select(GraphBackup).where(GraphBackup.graph_id == graph_id)
                                .order_by(GraphBackup.created_at.desc(),
                                          GraphBackup.id.desc())))


def backups_page(session: Session, graph_id: str, *, after: pages.Key | None = None,
                 limit: int = pages.DEFAULT_LIMIT) -> pages.Page[GraphBackup]:
    """One page of the graph's backups, newest first (``GET .../backups``)."""
    return pages.keyset(session, select(GraphBackup).where(GraphBackup.graph_id == graph_id),
                        GraphBackup.created_at, GraphBackup.id, after=after, limit=limit)


def backup_of(session: Session, graph_id: str, backup_id: str) -> GraphBackup:
    backup = session.get(GraphBackup, backup_id) if BACKUP_ID.fullmatch(backup_id) else None
    if backup is None or backup.graph_id != graph_id:
        raise NotFound(f"backup_id: no backup {backup_id[:80]!r} of graph {graph_id!r}",
                       field="backup_id")
    return backup


def schema_of_backup(session: Session, backup: GraphBackup) -> list[str]:
    """The DDL a backup holds: from its graph's stored schema, else from its manifest."""
    statements = _statements(session, backup.graph_id)
    if statements:
        return statements
    manifest = Path(backup.path).with_suffix(".json")
    return list(json.loads(manifest.read_text())["schema"]["statements"])


def expired(session: Session, *, now: datetime, limit: int = 500) -> list[GraphBackup]:
    return list(session.scalars(select(GraphBackup).where(GraphBackup.expires_at <= now)
                                .order_by(GraphBackup.expires_at).limit(limit)))


def prune(session: Session, directory: HostDirectory, backup: GraphBackup) -> None:
    """A backup past its retention: its file (on the host that took it, the graph's host) and
    manifest first, then its row. A host that does not answer raises ``HostUnavailable`` and
    the backup is kept for the next round."""
    graph = session.get(Graph, backup.graph_id)
    if graph is not None:
        host = hosts.graph_host(session, directory, graph.host_id)
        host.delete_backup(backup.graph_id, backup.id)
    path = Path(backup.path)
    for leftover in (path, path.with_suffix(".json")):
        leftover.unlink(missing_ok=True)
    audit.record(session, actor="backups", action="graph.backup_pruned", subject_type="graph",
                 subject_id=backup.graph_id, details={"backup_id": backup.id})
    session.delete(backup)


def _statements(session: Session, graph_id: str) -> list[str]:
    schema = session.scalar(select(GraphSchema).where(GraphSchema.graph_id == graph_id))
    return list((schema.schema_json or {}).get("statements") or []) if schema else []


# --- restore -------------------------------------------------------------------------------------
#
# A backup is restored INTO a graph that a subscription pays for, replacing that graph's data and
# schema; it never makes a graph of its own. So every live graph stays one subscription's, a
# cancellation reaches everything it paid for, and restoring the same backup 25 times makes no
# graph at all. A deleted graph's backups (kept for the final retention) are restored into a live
# graph of a new, paid subscription (``into_graph_id``): restoring is never a way around paying.


@dataclass(frozen=True)
class RestorePlan:
    """A backup to restore and the paid graph it replaces, decided before anything is touched."""

    graph_id: str  # the graph whose data the backup replaces
    source_graph_id: str  # the graph the backup was taken of (the same, or a deleted one)
    backup_id: str
    backup_path: Path
    checksum: str
    user_id: str


def check_restorable_here(session: Session, plan: RestorePlan) -> None:
    """A restore copies the backup's file into the graph's place on this machine, so both
    graphs must live on local hosts; one on a host server is refused (409, nothing touched)
    until backups live in object storage, from where any host can fetch them."""
    for graph_id in {plan.source_graph_id, plan.graph_id}:
        graph = session.get(Graph, graph_id)
        host = session.get(GraphHost, graph.host_id) if graph is not None else None
        if host is not None and host.url is not None:
            raise Conflict(f"backup_id: graph {graph_id} lives on graph host server "
                           f"{host.id}; restoring a backup there is not supported yet (its "
                           "backups stay on that host)", field="backup_id")


def plan_restore(session: Session, *, user_id: str, graph_id: str, backup_id: str,
                 into_graph_id: str | None = None) -> RestorePlan:
    """The owner's backup of a graph (deleted or not), and the graph it is restored into: the
    same graph by default, or ``into_graph_id``; either must be the user's own, active and paid
    for by an active subscription (402 otherwise)."""
    source = _owned_top_level(session, graph_id, user_id, field="graph_id")
    backup = backup_of(session, graph_id, backup_id)
    target = source
    if into_graph_id is not None and into_graph_id != graph_id:
        target = _owned_top_level(session, into_graph_id, user_id, field="into_graph_id")
    field = "graph_id" if target is source else "into_graph_id"
    if target.status in ("deleting", "deleted"):
        raise PaymentRequired(
            f"{field}: graph {target.id!r} is {target.status}; restore its backup into a graph "
            "of a new, paid subscription: POST .../restore with {\"into_graph_id\": \"kg…\"}",
            field=field)
    check_paid_for(session, target, field=field)
    GRAPH.check("restore_into", target.status, target.id, field=field)
    if target.lifecycle_token and target.lifecycle_lease_expires_at and (
            target.lifecycle_lease_expires_at > utcnow()):
        raise lifecycle.graphs_busy(target.id)  # told now, not as a failed operation
    if target.graph_type != source.graph_type:
        raise InvalidRequest(f"{field}: graph {target.id!r} is a {target.graph_type} graph; the "
                             f"backup is of a {source.graph_type} graph", field=field)
    return RestorePlan(graph_id=target.id, source_graph_id=source.id, backup_id=backup.id,
                       backup_path=Path(backup.path), checksum=backup.checksum, user_id=user_id)


def _owned_top_level(session: Session, graph_id: str, user_id: str, *, field: str) -> Graph:
    """A top-level graph the user administers: 404 for one they do not see (``roles``), 403
    for one they are a writer or reader of."""
    graph = session.get(Graph, graph_id) if graphs.GRAPH_ID.fullmatch(graph_id) else None
    if graph is None or graph.parent_graph_id is not None or not roles.sees(
            session, graph, user_id):
        raise NotFound(f"{field}: no graph {graph_id[:70]!r}", field=field)
    roles.check_admin(session, graph, user_id, field=field, what="restore its backups",
                      tombstone=True)
    return graph


def check_paid_for(session: Session, graph: Graph, *, field: str = "graph_id") -> None:
    """Refuse (402) to put data into a graph no active subscription pays for."""
    subscription = (session.get(Subscription, graph.subscription_id)
                    if graph.subscription_id else None)
    if subscription is None or subscription.status != "active":
        state = (f"'s subscription is {subscription.status}" if subscription
                 else " is paid for by no subscription")
        raise PaymentRequired(f"{field}: graph {graph.id!r}{state}; a backup is restored only "
                              "into a graph an active subscription pays for", field=field)


def begin_restore(session: Session, plan: RestorePlan, graph: Graph,
                  operation_id: str | None) -> None:
    """Mark the graph as being restored (committed before its file is replaced), so a restore
    whose worker died is finished or undone by ``finish_interrupted_restores``."""
    graph.details = {**(graph.details or {}),
                     "restoring": {"backup_id": plan.backup_id, "checksum": plan.checksum,
                                   "source_graph_id": plan.source_graph_id,
                                   "user_id": plan.user_id, "operation_id": operation_id}}


def unmark_restore(session: Session, claim: GraphClaim) -> None:
    """Clear the mark of a restore that never replaced the file (while still holding it)."""
    graph = session.get(Graph, claim.graph_id)
    if graph is not None and graph.lifecycle_token == claim.token:
        graph.details = _without_mark(graph.details)


def _without_mark(details: dict[str, Any] | None) -> dict[str, Any]:
    return {key: value for key, value in (details or {}).items() if key != "restoring"}


def finish_restore(session: Session, plan: RestorePlan, graph: Graph) -> None:
    """With the backup's file in place: the backup's schema replaces the graph's, and the
    graph says where its data came from."""
    backup = session.get(GraphBackup, plan.backup_id)
    assert backup is not None
    statements = schema_of_backup(session, backup)
    schema = session.scalar(select(GraphSchema).where(GraphSchema.graph_id == backup.graph_id))
    schema_type = schema.schema_type if schema else "restored"
    for old in session.scalars(select(GraphSchema).where(GraphSchema.graph_id == graph.id)):
        session.delete(old)
    session.flush()
    graphs.store_schema(session, graph.id, statements, None, schema_type=schema_type)
    details = _without_mark(graph.details)
    details["restored_from"] = {"graph_id": plan.source_graph_id, "backup_id": plan.backup_id,
                                "at": utcnow().isoformat()}
    graph.details = details
    audit.record(session, actor=plan.user_id, action="graph.restored", subject_type="graph",
                 subject_id=graph.id, details={"source_graph_id": plan.source_graph_id,
                                               "backup_id": plan.backup_id})


def finish_interrupted_restores(session: Session, *, now: datetime,
                                limit: int = 100) -> list[str]:
    """Restores whose worker died after marking the graph: if the file is the backup's (its
    sha256 says so) the restore happened and its rows are finished; otherwise the graph was
    never touched and the mark goes. Either way the graph is released, one line each."""
    done = []
    marked = session.scalars(select(Graph).where(
        Graph.status.in_(LIVE), Graph.lifecycle_lease_expires_at < now)
        .limit(limit * 10))
    for graph in marked:
        mark = (graph.details or {}).get("restoring")
        if not mark or len(done) >= limit:
            continue
        path = Path(graph.database_path)
        swapped = path.is_file() and checksum_of(path) == mark["checksum"]
        plan = RestorePlan(graph_id=graph.id, source_graph_id=mark["source_graph_id"],
                           backup_id=mark["backup_id"], backup_path=path,
                           checksum=mark["checksum"], user_id=mark["user_id"])
        if swapped and session.get(GraphBackup, plan.backup_id) is not None:
            finish_restore(session, plan, graph)
            done.append(f"finished the interrupted restore of {plan.backup_id} into {graph.id}")
        else:
            graph.details = _without_mark(graph.details)
            done.append(f"undid the interrupted restore of {plan.backup_id} into {graph.id} "
                        "(its file was never replaced)")
        graph.lifecycle_token = None
        graph.lifecycle_lease_expires_at = None
    return done


def stale_restores(session: Session, *, now: datetime, limit: int = 100) -> list[str]:
    """Graphs an earlier version's restore was making (``restoring``, as a new graph) whose
    worker stopped renewing its claim: what they made is to be removed."""
    return list(session.scalars(select(Graph.id).where(
        Graph.status == RESTORING,
        (Graph.lifecycle_token.is_(None)) | (Graph.lifecycle_lease_expires_at < now))
        .limit(limit)))
