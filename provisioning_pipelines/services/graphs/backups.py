"""Backups of graphs: where they live, their manifests and rows, how long they are kept.

A backup is taken by the host that holds the graph and kept in that host's backup store, under
``<graph id>/<backup id>.lbug`` with its sha256 and a manifest beside it: the ``BACKUP_DIR``
folder on the embedded default (and on a host server's own disk when no store is set), or an S3
store (``BACKUP_STORE_URL``) that every host shares, so that any host can restore it. The row
says where (``path``: the folder's file, or ``s3://...``). The control plane also keeps a
manifest of its own at ``<BACKUP_DIR>/<graph id>/<backup id>.json`` (graph, time, size,
checksum, schema). Daily and on-demand backups are kept for the tier's retention (7, 14 or 30
days), the final backup taken before a deletion for ``FINAL_BACKUP_RETENTION_DAYS``; the store's
manifest carries the same expiry, so the store itself can be swept. Ids say what a backup is for,
so making one twice is one backup.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import (
    NotFound,
    ServiceUnavailable,
)
from provisioning_pipelines.services import audit, pages
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.catalog import TIERS
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.services.graphs.states import LIVE
from provisioning_pipelines.storage.backup_store import BackupStore
from provisioning_pipelines.storage.hosts.contract import GraphHost as GraphHostInterface
from provisioning_pipelines.storage.hosts.directory import HostDirectory
from provisioning_pipelines.storage.ladybug import ddl_fingerprint
from provisioning_pipelines.storage.models import (
    Graph,
    GraphBackup,
    GraphSchema,
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
    #: Where the control plane's hosts keep backups (the folder, or a shared S3 store).
    store: BackupStore | None = None


@dataclass(frozen=True)
class TakenBackup:
    """A backup the host kept: where, how big, its sha256, and until when."""

    location: str
    size_bytes: int
    checksum: str
    #: When the copy was begun (its data is of then), and when its retention ends.
    taken_at: datetime
    expires_at: datetime


def is_shared(location: str) -> bool:
    """Whether every host can fetch the backup (an S3 store), not only the one that took it."""
    return location.startswith("s3://")


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


def manifest_of(policy: BackupPolicy | Path, graph_id: str, backup_id: str) -> Path:
    """The control plane's manifest of a backup (wherever the backup itself is kept)."""
    folder = policy.backup_dir if isinstance(policy, BackupPolicy) else policy
    return folder / graph_id / f"{backup_id}.json"


def expires_at(policy: BackupPolicy, tier: str, kind: str, *,
               now: datetime | None = None) -> datetime:
    days = policy.final_retention_days if kind == "final" else TIERS[tier].backup_retention_days
    return (now or utcnow()) + timedelta(days=days)


def take(host: GraphHostInterface, policy: BackupPolicy, graph_id: str, tier: str,
         backup_id: str, kind: str, *, missing_ok: bool = False) -> TakenBackup | None:
    """The host's consistent copy of the graph (checkpointed first; an existing one is
    returned), kept in its backup store until the kind's retention ends. None when
    ``missing_ok`` and the host does not hold the graph (a deletion whose file went before its
    final backup was recorded)."""
    taken_at = utcnow()
    until = expires_at(policy, tier, kind, now=taken_at)
    try:
        made = host.back_up(graph_id, backup_id, expires_at=until)
    except NotFound:
        if missing_ok:
            return None
        raise
    location = made.location or str(file_of(policy, graph_id, backup_id))
    return TakenBackup(location, made.size_bytes, made.sha256, taken_at, until)


def record(session: Session, policy: BackupPolicy, graph: Graph, backup_id: str, kind: str,
           copy: TakenBackup | None) -> GraphBackup:
    """The backup's row and manifest (once: a retry finds them, and needs no ``copy``)."""
    found = session.get(GraphBackup, backup_id)
    if found is not None:
        return found
    assert copy is not None, f"backup {backup_id}: no row and no copy"
    statements = _statements(session, graph.id)
    now = copy.taken_at
    backup = GraphBackup(id=backup_id, graph_id=graph.id, kind=kind, path=copy.location,
                         size_bytes=copy.size_bytes, checksum=copy.checksum,
                         schema_fingerprint=ddl_fingerprint(statements), created_at=now,
                         expires_at=copy.expires_at)
    session.add(backup)
    manifest = {"backup_id": backup_id, "graph_id": graph.id, "name": graph.name,
                "tier": graph.tier, "kind": kind, "created_at": now.isoformat(),
                "expires_at": backup.expires_at.isoformat() if backup.expires_at else None,
                "size_bytes": copy.size_bytes, "checksum_sha256": copy.checksum,
                "schema": {"fingerprint": backup.schema_fingerprint,
                           "statements": statements}}
    kept_here = manifest_of(policy, graph.id, backup_id)
    kept_here.parent.mkdir(parents=True, exist_ok=True)
    kept_here.write_text(json.dumps(manifest, indent=2))
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


def schema_of_backup(session: Session, backup: GraphBackup, backup_dir: Path) -> list[str]:
    """The DDL a backup holds: from its graph's stored schema, else from its manifest."""
    statements = _statements(session, backup.graph_id)
    if statements:
        return statements
    manifest = Path(backup.path).with_suffix(".json")
    if is_shared(backup.path) or not manifest.is_file():
        manifest = manifest_of(backup_dir, backup.graph_id, backup.id)
    return list(json.loads(manifest.read_text())["schema"]["statements"])


def expired(session: Session, *, now: datetime, limit: int = 500) -> list[GraphBackup]:
    return list(session.scalars(select(GraphBackup).where(GraphBackup.expires_at <= now)
                                .order_by(GraphBackup.expires_at).limit(limit)))


def prune(session: Session, directory: HostDirectory, backup: GraphBackup,
          backup_dir: Path | None = None) -> None:
    """A backup past its retention: its object (in the store of the host that took it, the
    graph's host) and manifests first, then its row. A host that does not answer raises
    ``HostUnavailable`` and the backup is kept for the next round."""
    graph = session.get(Graph, backup.graph_id)
    if graph is not None:
        host = hosts.graph_host(session, directory, graph.host_id)
        host.delete_backup(backup.graph_id, backup.id)
    leftovers = [] if is_shared(backup.path) else [Path(backup.path),
                                                    Path(backup.path).with_suffix(".json")]
    if backup_dir is not None:
        leftovers.append(manifest_of(backup_dir, backup.graph_id, backup.id))
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)
    audit.record(session, actor="backups", action="graph.backup_pruned", subject_type="graph",
                 subject_id=backup.graph_id, details={"backup_id": backup.id})
    session.delete(backup)


@dataclass(frozen=True)
class BackupAge:
    """How old a live top-level graph's newest backup is (None: it has none)."""

    graph_id: str
    tier: str
    host_id: str
    age_seconds: float | None
    #: Older than its tier allows (a graph with no backup, once it is that old itself).
    stale: bool


def backup_ages(session: Session, *, now: datetime | None = None) -> list[BackupAge]:
    """Every live top-level graph with the age of its newest backup, stalest first."""
    now = now or utcnow()
    newest = (select(GraphBackup.graph_id, func.max(GraphBackup.created_at).label("at"))
              .group_by(GraphBackup.graph_id).subquery())
    rows = session.execute(
        select(Graph.id, Graph.tier, Graph.host_id, Graph.created_at, newest.c.at)
        .outerjoin(newest, newest.c.graph_id == Graph.id)
        .where(Graph.parent_graph_id.is_(None), Graph.status.in_(LIVE)))
    found = []
    for graph_id, tier, host_id, created_at, at in rows:
        allowed = timedelta(hours=TIERS[tier].backup_max_age_hours) if tier in TIERS else None
        age = (now - aware(at)).total_seconds() if at is not None else None
        since = age if age is not None else (now - aware(created_at)).total_seconds()
        stale = allowed is not None and since > allowed.total_seconds()
        found.append(BackupAge(graph_id, tier, host_id, age, stale))
    return sorted(found, key=lambda age: (age.age_seconds is not None,
                                          -(age.age_seconds or 0.0)))


def aware(moment: datetime) -> datetime:
    """SQLite gives back naive times (they were written in UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def sweep_store(store: BackupStore | None, *, now: datetime) -> list[str]:
    """Objects past the expiry their own manifest names, removed from the store (those whose
    rows went, or never came: a backup whose answer was lost). Only manifests older than the
    shortest retention are read. A store that does not answer is swept on a later round."""
    if store is None:
        return []
    shortest = timedelta(days=min(tier.backup_retention_days for tier in TIERS.values()))
    try:
        removed = store.sweep(now, shortest_retention=shortest)
    except ServiceUnavailable as exc:
        return [f"could not sweep the backup store: {exc.message}"]
    return [f"removed expired backup {key} from the backup store" for key in removed]


def _statements(session: Session, graph_id: str) -> list[str]:
    schema = session.scalar(select(GraphSchema).where(GraphSchema.graph_id == graph_id))
    return list((schema.schema_json or {}).get("statements") or []) if schema else []
