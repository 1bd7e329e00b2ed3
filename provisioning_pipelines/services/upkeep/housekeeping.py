"""Sweeping what failures leave on disk (temp files, fork workspaces, unfinished checkpoints,
sidecars of nothing, and graph files no row owns), and what time leaves in the database
(billing events older than their retention, expired browser sessions).

A database file is made as a hidden temp file and published by a link, and a graph's row is
committed before its file is made, so after a crash the leftovers are easy to tell apart: a temp
file (a graph's, a template's or a backup's half-written copy) or a fork workspace (its parquet
files) older than ``min_age_seconds`` belongs to no live call, a sidecar whose database file is
gone belongs to nothing, and a ``.lbug`` file that no row of a graph that is not deleted names
is an orphan. Temp files and workspaces are removed; orphans and lone sidecars are moved to
``<host folder>/.quarantine/``, not deleted, so an operator can look before they go. The age
keeps a sweep from touching the work of a call still running.

What is live is never removed: a live graph's sidecars stay where they are, and one whose
checkpoint did not finish (a ``.shadow`` left by a full disk, which stops every read of it) is
*recovered* by the engine, which takes the file's write lock first, so a writer at work is
waited for, never disturbed.

A billing event's record exists to make a redelivery a no-op; past ``WEBHOOK_RETENTION_DAYS``
it is removed (``remove_old_webhook_events``). An expired session's row is refused anyway;
removing it only keeps the table small.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import EngineError, ProvisioningError
from provisioning_pipelines.services import idempotency
from provisioning_pipelines.services.access import sessions
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.graphs.states import GRAPH
from provisioning_pipelines.services.upkeep import moves
from provisioning_pipelines.storage.hosts.directory import HostAddress, HostDirectory
from provisioning_pipelines.storage.ladybug import LadybugEngine, sidecars
from provisioning_pipelines.storage.ladybug.files import SIDECAR_PREFIXES, recovery_pending
from provisioning_pipelines.storage.models import Graph, GraphHost, WebhookEvent

logger = logging.getLogger("provisioning_pipelines.housekeeping")

QUARANTINE = ".quarantine"
_TEMP = re.compile(r"\..+\.lbug\.[0-9a-f]{12}\.tmp")
_FORK_WORKSPACE = re.compile(r"\.fork-.+")
#: ``<database>.lbug.<sidecar>``: what LadybugDB keeps beside a file (``files.sidecars``).
_SIDECAR = re.compile(r"^(?P<database>[^.].*\.lbug)\.(?:" + "|".join(SIDECAR_PREFIXES)
                      + r")")
TEMPLATES = ".templates"
#: A deleted graph's row is a tombstone: it owns no file.
_GONE = GRAPH.target("finish_deletion")


@dataclass
class SweepReport:
    temp_files_removed: int = 0
    fork_workspaces_removed: int = 0
    orphans_quarantined: list[str] = field(default_factory=list)
    sidecars_quarantined: list[str] = field(default_factory=list)
    #: Graph files whose unfinished checkpoint was finished, and those it could not be.
    recovered: list[str] = field(default_factory=list)
    not_recovered: list[str] = field(default_factory=list)
    sessions_removed: int = 0

    @property
    def anything(self) -> bool:
        return bool(self.temp_files_removed or self.fork_workspaces_removed
                    or self.orphans_quarantined or self.sidecars_quarantined
                    or self.recovered or self.not_recovered)


def host_folders(session: Session, graph_data_dir: Path) -> list[Path]:
    """Every folder on this machine graph files may live in: each local host's, and the local
    default's (a host server sweeps its own disk; ``sweep_host_servers`` asks it)."""
    roots = {Path(root) for root in session.scalars(select(GraphHost.data_root)
                                                    .where(GraphHost.url.is_(None)))}
    if graph_data_dir.is_dir():
        roots |= {entry for entry in graph_data_dir.iterdir()
                  if entry.is_dir() and not entry.name.startswith(".")}
    return sorted(root for root in roots if root.is_dir())


def owned_files(session: Session) -> set[str]:
    """The real paths of the files of every graph that is not deleted, and of the copies a
    move or a replacement is making on another host now."""
    owned = {os.path.realpath(path) for path in session.scalars(
        select(Graph.database_path).where(Graph.status != _GONE))}
    for host_id, graph_ids in moves.arriving(session).items():
        root = session.scalar(select(GraphHost.data_root).where(GraphHost.id == host_id))
        if root is not None:
            owned.update(os.path.realpath(Path(root) / f"{graph_id}.lbug")
                         for graph_id in graph_ids)
    return owned


def sweep(session: Session, graph_data_dir: Path, *, min_age_seconds: float,
          now: float | None = None, engine: LadybugEngine | None = None,
          backup_dir: Path | None = None, directory: HostDirectory | None = None
          ) -> SweepReport:
    """Remove stale temp files and fork workspaces, quarantine graph files without a row and
    sidecars without a file, (given the ``engine``) finish live graphs' checkpoints, and delete
    expired browser sessions."""
    now = time.time() if now is None else now
    owned = owned_files(session)
    report = SweepReport()
    folders = host_folders(session, graph_data_dir)
    for root in folders:
        for entry in root.iterdir():
            if not _old(entry, now, min_age_seconds):
                continue
            name = entry.name
            if entry.is_file() and _TEMP.fullmatch(name):
                _remove(entry)
                report.temp_files_removed += 1
            elif entry.is_dir() and _FORK_WORKSPACE.fullmatch(name):
                shutil.rmtree(entry, ignore_errors=True)
                report.fork_workspaces_removed += 1
            elif entry.is_file() and entry.suffix == ".lbug" and not name.startswith(".") \
                    and os.path.realpath(entry) not in owned:
                _quarantine(entry)
                report.orphans_quarantined.append(str(entry))
            elif entry.is_file() and (lone := _SIDECAR.match(name)) \
                    and not (root / lone["database"]).exists():
                _quarantine(entry, with_sidecars=False)
                report.sidecars_quarantined.append(str(entry))
    for folder in _copy_folders(graph_data_dir, backup_dir):
        report.temp_files_removed += _remove_stale_temps(folder, now, min_age_seconds)
    if engine is not None:
        _recover(engine, (path for path in sorted(owned) if recovery_pending(Path(path))),
                 now, min_age_seconds, report)
    if directory is not None:
        sweep_host_servers(session, directory, report)
    report.sessions_removed = sessions.remove_expired(session, now=now)
    if report.anything:
        logger.warning("housekeeping: removed %d temp files and %d fork workspaces, "
                       "quarantined %d graph files no row owns (%s) and %d sidecars of no "
                       "file (%s); finished %d unfinished checkpoints (%s), %d could not be "
                       "(%s)", report.temp_files_removed, report.fork_workspaces_removed,
                       len(report.orphans_quarantined), report.orphans_quarantined,
                       len(report.sidecars_quarantined), report.sidecars_quarantined,
                       len(report.recovered), report.recovered, len(report.not_recovered),
                       report.not_recovered)
    if report.sessions_removed:
        logger.info("housekeeping: removed %d expired browser sessions", report.sessions_removed)
    return report


def sweep_host_servers(session: Session, directory: HostDirectory, report: SweepReport) -> None:
    """Quarantine, on each healthy host server, the graphs it holds that no row places there.
    No age is needed: a graph's row is committed before any host is asked to make its file,
    and a discarded graph's file goes before its row (or, when the undo of a failed attempt
    could not reach the host, is left for this sweep), so a file without a row there is never
    work anyone waits for. A host that does not answer is skipped until the next sweep."""
    placed: dict[str, set[str]] = {}
    for graph_id, host_id in session.execute(select(Graph.id, Graph.host_id)
                                             .where(Graph.status != _GONE)):
        placed.setdefault(host_id, set()).add(graph_id)
    for host_id, graph_ids in moves.arriving(session).items():  # copies being made there
        placed.setdefault(host_id, set()).update(graph_ids)
    remote = session.execute(select(GraphHost.id, GraphHost.url, GraphHost.data_root)
                             .where(GraphHost.url.is_not(None),
                                    GraphHost.health == "healthy",
                                    # a replaced host is left alone until it is cleared
                                    GraphHost.status != hosts.REPLACED)).all()
    for host_id, url, data_root in remote:
        host = directory.get(HostAddress(host_id, url, data_root))
        try:
            unplaced = set(host.list().graphs) - placed.get(host_id, set())
            # Asked again after the listing, as placements are: a move may have begun since.
            unplaced -= moves.arriving(session).get(host_id, set())
            for graph_id in unplaced - _placed_on(session, host_id, unplaced):
                if host.quarantine(graph_id):
                    report.orphans_quarantined.append(f"{host_id}:{graph_id}")
        except ProvisioningError as exc:
            logger.warning("housekeeping: host %s: %s", host_id, exc.message)


def _placed_on(session: Session, host_id: str, graph_ids: set[str]) -> set[str]:
    """Which of these graphs a row places on the host now: asked again after the listing, as a
    graph placed after the rows were first read may have been made on the host since."""
    if not graph_ids:
        return set()
    return set(session.scalars(select(Graph.id).where(
        Graph.id.in_(graph_ids), Graph.host_id == host_id, Graph.status != _GONE)))


def _old(entry: Path, now: float, min_age_seconds: float) -> bool:
    try:
        return now - entry.lstat().st_mtime >= min_age_seconds
    except FileNotFoundError:
        return False  # removed meanwhile by its owner


def _copy_folders(graph_data_dir: Path, backup_dir: Path | None) -> list[Path]:
    """Where other half-written copies are made: templates, and each graph's backups."""
    folders = [graph_data_dir / TEMPLATES]
    if backup_dir is not None and backup_dir.is_dir():
        folders += [entry for entry in backup_dir.iterdir() if entry.is_dir()]
    return [folder for folder in folders if folder.is_dir()]


def _remove_stale_temps(folder: Path, now: float, min_age_seconds: float) -> int:
    removed = 0
    for entry in folder.iterdir():
        if entry.is_file() and _TEMP.fullmatch(entry.name) and _old(entry, now, min_age_seconds):
            _remove(entry)
            removed += 1
    return removed


def _recover(engine: LadybugEngine, pending: Iterable[str], now: float,
             min_age_seconds: float, report: SweepReport) -> None:
    for path in pending:
        markers = [Path(f"{path}{suffix}") for suffix in (".shadow", ".wal.checkpoint")]
        if not any(_old(marker, now, min_age_seconds) for marker in markers):
            continue  # a checkpoint that may be running now
        try:
            if engine.recover(Path(path)):
                report.recovered.append(path)
        except EngineError as exc:
            report.not_recovered.append(path)
            logger.warning("housekeeping: %s", exc)


def _remove(path: Path) -> None:
    for extra in [path, *sidecars(path)]:
        with contextlib.suppress(FileNotFoundError):
            extra.unlink()


def _quarantine(path: Path, *, with_sidecars: bool = True) -> None:
    folder = path.parent / QUARANTINE
    folder.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for extra in [path, *(sidecars(path) if with_sidecars else [])]:
        with contextlib.suppress(FileNotFoundError):
            extra.rename(folder / f"{extra.name}.{stamp}")


def remove_old_webhook_events(session: Session, *, retention_days: float,
                              now: datetime | None = None) -> int:
    """Remove the records of billing events received more than ``retention_days`` ago; the
    number removed.

    A record is what makes a redelivery a duplicate, so removing it lets the same event id be
    applied again. Past the retention that does not happen by accident: Stripe retries a
    delivery for up to three days (the setting's floor) and lists only the last 30 days of
    events (the default here), so it sends nothing older; and a body replayed by anyone else
    carries its old signature, refused past the 300 s tolerance before the dedupe is asked.
    Even then, an event older than one already applied to its subscription changes nothing
    (``event_order``).
    A ``rejected`` event is kept until it is replayed: it is an operator's to look at.
    """
    now = now or datetime.now(UTC)
    removed = session.execute(delete(WebhookEvent).where(
        WebhookEvent.received_at < now - timedelta(days=retention_days),
        WebhookEvent.status != "rejected")).rowcount
    if removed:
        logger.info("housekeeping: removed %d billing event records older than %g days",
                    removed, retention_days)
    return int(removed or 0)


def remove_expired_idempotency_keys(session: Session, *, now: datetime | None = None) -> int:
    """Idempotency keys past ``IDEMPOTENCY_KEY_HOURS`` (their row says when): a retry after
    that is a new request."""
    removed = idempotency.remove_expired(session, now=now)
    if removed:
        logger.info("housekeeping: removed %d expired idempotency keys", removed)
    return removed
