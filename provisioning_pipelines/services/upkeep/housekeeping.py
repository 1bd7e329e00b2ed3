"""Sweeping what crashes leave on disk (temp files, fork workspaces, graph files no row owns),
and billing events older than their retention.

A database file is made as a hidden temp file and published by a link, and a graph's row is
committed before its file is made, so after a crash the leftovers are easy to tell apart: a temp
file or a fork workspace older than ``min_age_seconds`` belongs to no live call, and a ``.lbug``
file that no graph row names is an orphan. Temp files and workspaces are removed; orphans are
moved to ``<host folder>/.quarantine/`` (with their sidecars), not deleted, so an operator can
look before they go. The age keeps a sweep from touching the work of a call still running.

A billing event's record exists to make a redelivery a no-op; past ``WEBHOOK_RETENTION_DAYS``
it is removed (``remove_old_webhook_events``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from provisioning_pipelines.storage.ladybug import sidecars
from provisioning_pipelines.storage.models import Graph, GraphHost, WebhookEvent

logger = logging.getLogger("provisioning_pipelines.housekeeping")

QUARANTINE = ".quarantine"
_TEMP = re.compile(r"\..+\.lbug\.[0-9a-f]{12}\.tmp")
_FORK_WORKSPACE = re.compile(r"\.fork-.+")


@dataclass
class SweepReport:
    temp_files_removed: int = 0
    fork_workspaces_removed: int = 0
    orphans_quarantined: list[str] = field(default_factory=list)

    @property
    def anything(self) -> bool:
        return bool(self.temp_files_removed or self.fork_workspaces_removed
                    or self.orphans_quarantined)


def host_folders(session: Session, graph_data_dir: Path) -> list[Path]:
    """Every folder graph files may live in: each host's, and the local default's."""
    roots = {Path(root) for root in session.scalars(select(GraphHost.data_root))}
    if graph_data_dir.is_dir():
        roots |= {entry for entry in graph_data_dir.iterdir()
                  if entry.is_dir() and not entry.name.startswith(".")}
    return sorted(root for root in roots if root.is_dir())


def sweep(session: Session, graph_data_dir: Path, *, min_age_seconds: float,
          now: float | None = None) -> SweepReport:
    """Remove stale temp files and fork workspaces, quarantine graph files without a row."""
    now = time.time() if now is None else now
    owned = {os.path.realpath(path) for path in session.scalars(select(Graph.database_path))}
    report = SweepReport()
    for root in host_folders(session, graph_data_dir):
        for entry in root.iterdir():
            try:
                old = now - entry.lstat().st_mtime >= min_age_seconds
            except FileNotFoundError:
                continue  # removed meanwhile by its owner
            if not old:
                continue
            if entry.is_file() and _TEMP.fullmatch(entry.name):
                _remove(entry)
                report.temp_files_removed += 1
            elif entry.is_dir() and _FORK_WORKSPACE.fullmatch(entry.name):
                shutil.rmtree(entry, ignore_errors=True)
                report.fork_workspaces_removed += 1
            elif (entry.is_file() and entry.suffix == ".lbug"
                  and os.path.realpath(entry) not in owned):
                _quarantine(entry)
                report.orphans_quarantined.append(str(entry))
    if report.anything:
        logger.warning("housekeeping: removed %d temp files and %d fork workspaces, "
                       "quarantined %d graph files no row owns: %s",
                       report.temp_files_removed, report.fork_workspaces_removed,
                       len(report.orphans_quarantined), report.orphans_quarantined)
    return report


def _remove(path: Path) -> None:
    for extra in [path, *sidecars(path)]:
        with contextlib.suppress(FileNotFoundError):
            extra.unlink()


def _quarantine(path: Path) -> None:
    folder = path.parent / QUARANTINE
    folder.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for extra in [path, *sidecars(path)]:
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
