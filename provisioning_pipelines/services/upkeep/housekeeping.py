"""Sweeping what crashes leave on disk (temp files, fork workspaces, graph files no row owns)
and what time leaves in the database (expired browser sessions).

A database file is made as a hidden temp file and published by a link, and a graph's row is
committed before its file is made, so after a crash the leftovers are easy to tell apart: a temp
file or a fork workspace older than ``min_age_seconds`` belongs to no live call, and a ``.lbug``
file that no graph row names is an orphan. Temp files and workspaces are removed; orphans are
moved to ``<host folder>/.quarantine/`` (with their sidecars), not deleted, so an operator can
look before they go. The age keeps a sweep from touching the work of a call still running.
An expired session's row is refused anyway; removing it only keeps the table small.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning_pipelines.services.access import sessions
from provisioning_pipelines.storage.ladybug import sidecars
from provisioning_pipelines.storage.models import Graph, GraphHost

logger = logging.getLogger("provisioning_pipelines.housekeeping")

QUARANTINE = ".quarantine"
_TEMP = re.compile(r"^\..+\.lbug\.[0-9a-f]{12}\.tmp$")
_FORK_WORKSPACE = re.compile(r"^\.fork-.+")


@dataclass
class SweepReport:
    temp_files_removed: int = 0
    fork_workspaces_removed: int = 0
    orphans_quarantined: list[str] = field(default_factory=list)
    sessions_removed: int = 0

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
    """Remove stale temp files and fork workspaces, quarantine graph files without a row,
    delete expired browser sessions."""
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
            if entry.is_file() and _TEMP.match(entry.name):
                _remove(entry)
                report.temp_files_removed += 1
            elif entry.is_dir() and _FORK_WORKSPACE.match(entry.name):
                shutil.rmtree(entry, ignore_errors=True)
                report.fork_workspaces_removed += 1
            elif (entry.is_file() and entry.suffix == ".lbug"
                  and os.path.realpath(entry) not in owned):
                _quarantine(entry)
                report.orphans_quarantined.append(str(entry))
    report.sessions_removed = sessions.remove_expired(session, now=now)
    if report.anything:
        logger.warning("housekeeping: removed %d temp files and %d fork workspaces, "
                       "quarantined %d graph files no row owns: %s",
                       report.temp_files_removed, report.fork_workspaces_removed,
                       len(report.orphans_quarantined), report.orphans_quarantined)
    if report.sessions_removed:
        logger.info("housekeeping: removed %d expired browser sessions", report.sessions_removed)
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
