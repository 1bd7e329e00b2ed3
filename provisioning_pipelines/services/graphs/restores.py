"""Restoring a backup: into a graph a subscription pays for, by that graph's host, checked
before anything is touched; a restore whose worker died is finished or undone by the reaper.

A backup is restored INTO a graph that a subscription pays for, replacing that graph's data and
schema; it never makes a graph of its own. So every live graph stays one subscription's, a
cancellation reaches everything it paid for, and restoring the same backup 25 times makes no
graph at all. A deleted graph's backups (kept for the final retention) are restored into a live
graph of a new, paid subscription (``into_graph_id``): restoring is never a way around paying.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PaymentRequired,
    ServiceUnavailable,
)
from provisioning_pipelines.services import audit
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.graphs import lifecycle, roles
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.services.graphs.backups import (
    RESTORING,
    backup_of,
    is_shared,
    schema_of_backup,
)
from provisioning_pipelines.services.graphs.lifecycle import GraphClaim
from provisioning_pipelines.services.graphs.states import GRAPH, LIVE
from provisioning_pipelines.storage.backup_store import BackupStore
from provisioning_pipelines.storage.hosts.contract import backup_key
from provisioning_pipelines.storage.hosts.directory import HostDirectory
from provisioning_pipelines.storage.models import (
    Graph,
    GraphBackup,
    GraphHost,
    GraphSchema,
    Subscription,
    utcnow,
)


@dataclass(frozen=True)
class RestorePlan:
    """A backup to restore and the paid graph it replaces, decided before anything is touched."""

    graph_id: str  # the graph whose data the backup replaces
    source_graph_id: str  # the graph the backup was taken of (the same, or a deleted one)
    backup_id: str
    #: Where the backup is kept (its row's ``path``: a folder's file or ``s3://...``).
    location: str
    checksum: str
    user_id: str


def check_restorable_here(session: Session, plan: RestorePlan) -> None:
    """The host of the graph restored into must be able to fetch the backup: any host from a
    shared (S3) store; from a folder, the host that took it, or any local host (they share
    ``BACKUP_DIR``). Anything else is refused (409, nothing touched)."""
    if is_shared(plan.location):
        return
    source, target = session.get(Graph, plan.source_graph_id), session.get(Graph, plan.graph_id)
    if source is None or target is None or source.host_id == target.host_id:
        return
    for graph in (source, target):
        host = session.get(GraphHost, graph.host_id)
        if host is not None and host.url is not None:
            raise Conflict(f"backup_id: backup {plan.backup_id} is kept on the disk of graph "
                           f"host {source.host_id}, and graph {target.id} lives on host "
                           f"{target.host_id}; with BACKUP_STORE_URL set, backups are kept "
                           "where every host can restore them", field="backup_id")


def check_kept(store: BackupStore | None, plan: RestorePlan) -> None:
    """A backup in a shared store is looked up before an operation is opened: a store that does
    not answer is a 503 now (``backup_store_unavailable``, with Retry-After), an object that is
    gone a 404, rather than an operation that fails later."""
    if store is None or not is_shared(plan.location):
        return
    if store.head(backup_key(plan.source_graph_id, plan.backup_id)) is None:
        raise NotFound(f"backup_id: backup {plan.backup_id} is not in the backup store",
                       field="backup_id")


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
        raise InvalidRequest(f"{field}: graph {target.id!r} is {_a(target.graph_type)} graph; "
                             f"the backup is of {_a(source.graph_type)} graph", field=field)
    return RestorePlan(graph_id=target.id, source_graph_id=source.id, backup_id=backup.id,
                       location=backup.path, checksum=backup.checksum, user_id=user_id)


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


def finish_restore(session: Session, plan: RestorePlan, graph: Graph, backup_dir: Path) -> None:
    """With the backup's file in place: the backup's schema replaces the graph's, and the
    graph says where its data came from."""
    backup = session.get(GraphBackup, plan.backup_id)
    assert backup is not None
    statements = schema_of_backup(session, backup, backup_dir)
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


def finish_interrupted_restores(session: Session, directory: HostDirectory, backup_dir: Path,
                                *, now: datetime, limit: int = 100) -> list[str]:
    """Restores whose worker died after marking the graph: if the graph's file is the backup's
    (its sha256, asked of its host, says so) the restore happened and its rows are finished;
    otherwise the graph was never touched and the mark goes. Either way the graph is released,
    one line each. A graph whose host does not answer is left for the next round."""
    done = []
    marked = session.scalars(select(Graph).where(
        Graph.status.in_(LIVE), Graph.lifecycle_lease_expires_at < now)
        .limit(limit * 10))
    for graph in marked:
        mark = (graph.details or {}).get("restoring")
        if not mark or len(done) >= limit:
            continue
        try:
            held = hosts.graph_host(session, directory, graph.host_id).checksum(graph.id)
        except NotFound:
            held = None
        except ServiceUnavailable as exc:
            done.append(f"left the interrupted restore into {graph.id} for later: {exc.message}")
            continue
        plan = RestorePlan(graph_id=graph.id, source_graph_id=mark["source_graph_id"],
                           backup_id=mark["backup_id"], location=graph.database_path,
                           checksum=mark["checksum"], user_id=mark["user_id"])
        if held == mark["checksum"] and session.get(GraphBackup, plan.backup_id) is not None:
            finish_restore(session, plan, graph, backup_dir)
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


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"
