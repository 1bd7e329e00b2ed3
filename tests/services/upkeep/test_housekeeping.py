"""The sweep of what crashes leave on disk: old temp files and fork workspaces go, graph files
that no row owns are quarantined, and nothing young or owned is touched."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from provisioning_pipelines.flows import GRAPH_FLOW, SubscriptionConfig
from provisioning_pipelines.services.access import sessions
from provisioning_pipelines.services.access.accounts import Identity
from provisioning_pipelines.services.upkeep import housekeeping
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import BrowserSession
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import run_direct


def age(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def stale_file(path: Path, content: bytes = b"left behind") -> Path:
    path.write_bytes(content)
    return age(path, 3600)


def test_a_sweep_takes_only_what_is_stale_and_keeps_what_a_row_owns(
    database: Database, resources: dict[str, Any], graph_dir: Path,
) -> None:
    sub_id = paid_graph_subscription(database, new_customer(database))
    owned = Path(run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                            resources).result["database_path"])
    host = owned.parent
    old_temp = stale_file(host / f".{owned.name}.0123456789ab.tmp")
    young_temp = host / ".kg1111111111111111.lbug.abcdefabcdef.tmp"
    young_temp.write_bytes(b"being made right now")
    workspace = host / ".fork-kg1.lbug-x1"
    workspace.mkdir()
    age(workspace, 3600)
    orphan = stale_file(host / "kg2222222222222222.lbug")
    age(owned, 3600)

    with database.session() as session:
        report = housekeeping.sweep(session, graph_dir, min_age_seconds=600)

    assert not old_temp.exists()
    assert young_temp.exists() and owned.exists()
    assert not workspace.exists()
    assert not orphan.exists()
    assert [p.name.split(".lbug")[0] for p in (host / ".quarantine").iterdir()] == [
        "kg2222222222222222"]
    assert (report.temp_files_removed, report.fork_workspaces_removed,
            report.orphans_quarantined) == (1, 1, [str(orphan)])


def test_a_sweep_removes_expired_browser_sessions_and_keeps_live_ones(
    database: Database, graph_dir: Path,
) -> None:
    user = new_customer(database)
    identity = Identity(user_id=user.user_id, email="x@example.com")
    with database.session() as session:
        expired = sessions.sign_in(session, identity, "secret",
                                   now=time.time() - sessions.SESSION_SECONDS - 60)
        live = sessions.sign_in(session, identity, "secret")

    with database.session() as session:
        report = housekeeping.sweep(session, graph_dir, min_age_seconds=600)
    with database.session() as session:
        left = set(session.scalars(select(BrowserSession.id)))

    assert report.sessions_removed == 1
    assert left == {live.split(".")[0]} and expired.split(".")[0] not in left
