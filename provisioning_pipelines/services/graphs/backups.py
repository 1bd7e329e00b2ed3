"""Backups of graphs: where they live, their manifests and rows, how long they are kept.

A backup lives at ``<BACKUP_DIR>/<graph id>/<backup id>.lbug`` beside a manifest
``<backup id>.json`` (graph, time, size, checksum, schema), so a backup folder copied elsewhere
still says what it holds. Daily and on-demand backups are kept for the tier's retention (7, 14 or
30 days); the final backup taken before a deletion for ``FINAL_BACKUP_RETENTION_DAYS``. Ids say
what a backup is for, so making one twice is one backup.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import NotFound
from provisioning_pipelines.services import audit
from provisioning_pipelines.services.billing import credits
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.catalog import TIERS
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.storage.ladybug import ddl_fingerprint
from provisioning_pipelines.storage.ladybug.backups import BackupFile
from provisioning_pipelines.storage.models import Graph, GraphBackup, GraphSchema, utcnow

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
                                .order_by(GraphBackup.created_at.desc())))


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


def prune(session: Session, backup: GraphBackup) -> None:
    """A backup past its retention: its file and manifest first, then its row."""
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


@dataclass(frozen=True)
class RestorePlan:
    """A new graph to make from a backup, decided before anything is made."""

    graph_id: str
    source_graph_id: str
    backup_id: str
    backup_path: Path
    checksum: str
    user_id: str


def restored_graph_id(restore_id: str) -> str:
    """The new graph's id, derived from the restore's id: a retried restore makes one graph."""
    return "kg" + hashlib.sha256(f"restore:{restore_id}".encode()).hexdigest()[:16]


def plan_restore(session: Session, *, user_id: str, graph_id: str, backup_id: str,
                 restore_id: str) -> RestorePlan:
    """The owner's backup of a graph (deleted or not)."""
    graph = session.get(Graph, graph_id) if graphs.GRAPH_ID.fullmatch(graph_id) else None
    if graph is None or graph.owner_user_id != user_id or graph.parent_graph_id is not None:
        raise NotFound(f"graph_id: no graph {graph_id[:70]!r}", field="graph_id")
    backup = backup_of(session, graph_id, backup_id)
    return RestorePlan(graph_id=restored_graph_id(restore_id), source_graph_id=graph_id,
                       backup_id=backup.id, backup_path=Path(backup.path),
                       checksum=backup.checksum, user_id=user_id)


def reserve_restored_graph(session: Session, plan: RestorePlan, *, graph_data_dir: Path,
                           operation_id: str | None) -> Graph:
    """The new graph's row (``restoring``, seen by nobody yet) and its host slot; a retry
    finds the row it made."""
    found = session.get(Graph, plan.graph_id)
    if found is not None:
        return found
    source = session.get(Graph, plan.source_graph_id)
    assert source is not None
    hosts.ensure_local_hosts(session, graph_data_dir)
    host = hosts.allocate_slot(session, source.tier)
    graph = Graph(
        id=plan.graph_id, org_id=source.org_id, owner_user_id=plan.user_id,
        subscription_id=None, name=source.name, description=source.description,
        graph_type=source.graph_type, tier=source.tier, host_id=host.id,
        database_path=str(graphs.database_path(host.data_root, plan.graph_id)),
        schema_extensions=list(source.schema_extensions or []), tags=list(source.tags or []),
        details={"restored_from": {"graph_id": source.id, "backup_id": plan.backup_id,
                                   "operation_id": operation_id}},
        status=RESTORING)
    session.add(graph)
    session.flush()
    return graph


def finish_restore(session: Session, plan: RestorePlan, graph: Graph) -> None:
    """With the file in place: its schema rows, the owner's admin role, a credit pool, and
    ``active``."""
    backup = session.get(GraphBackup, plan.backup_id)
    assert backup is not None
    statements = schema_of_backup(session, backup)
    schema = session.scalar(select(GraphSchema).where(GraphSchema.graph_id == backup.graph_id))
    graphs.store_schema(session, graph.id, statements, None,
                        schema_type=schema.schema_type if schema else "restored")
    graphs.grant_role(session, graph.id, plan.user_id, "admin")
    credits.create_graph_pool(session, graph_id=graph.id, tier=TIERS[graph.tier],
                              subscription_id=None)
    graph.status = "active"
    audit.record(session, actor=plan.user_id, action="graph.restored", subject_type="graph",
                 subject_id=graph.id, details={"source_graph_id": plan.source_graph_id,
                                               "backup_id": plan.backup_id})


def stale_restores(session: Session, *, now: datetime, limit: int = 100) -> list[str]:
    """Restores whose worker stopped renewing its claim: what they made is to be removed."""
    return list(session.scalars(select(Graph.id).where(
        Graph.status == RESTORING,
        (Graph.lifecycle_token.is_(None)) | (Graph.lifecycle_lease_expires_at < now))
        .limit(limit)))
