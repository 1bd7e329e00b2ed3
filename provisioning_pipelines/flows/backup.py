"""Backing up a graph, and restoring a backup as a new graph.

A backup runs under the graph's lifecycle claim (so it never overlaps the graph's deletion or
another backup of it): the copy of the checkpointed file, then its row and manifest. Its id says
what it is for (``bk_daily_<graph>_<day>`` for the schedule's), so the same backup made twice is
one backup.

A restore replaces the data of a graph a subscription pays for (the backed-up graph itself, or,
for a deleted graph's backups, a graph of a new subscription): it never makes a graph, so no
graph lives without a payment (``services/graphs/backups.py`` says why). The graph's host
fetches the backup from its backup store (any host, from a shared S3 store), checks its checksum
before anything is touched and makes the copy whole beside the graph's file before it replaces
it; a restore whose worker died, or whose host did not answer, is finished or undone by the
reaper by the file's checksum.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dagster import Config
from pydantic import Field

from provisioning_pipelines.errors import HostUnavailable, InvalidRequest
from provisioning_pipelines.flows.asset_keys import BACKUP_ASSET, GRAPH_ASSET
from provisioning_pipelines.flows.deletion import give_back, hold_graph
from provisioning_pipelines.flows.public import detail
from provisioning_pipelines.flows.steps import (
    GRAPH_TAG,
    USER_TAG,
    Flow,
    Outcome,
    StepContext,
    step,
)
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.graphs import backups, lifecycle, restores, views
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.services.graphs.lifecycle import GraphClaim
from provisioning_pipelines.services.graphs.restores import RestorePlan
from provisioning_pipelines.storage.db import Database


class BackupConfig(Config):
    """The graph to back up."""

    graph_id: str = Field(description="The top-level graph, kg….")
    kind: str = Field(default="on_demand", description="on_demand or daily (the schedule's).")
    backup_id: str | None = Field(default=None, description="Given by the API so it can be "
                                  "named before the run; made up when empty.")
    actor: str = Field(default="operator", description="Who asks, for the audit log.")


@dataclass(frozen=True)
class BackupWork:
    claim: GraphClaim
    path: Path
    host_id: str
    tier: str
    backup_id: str
    kind: str
    started_at: float
    copy: backups.TakenBackup | None = None


def _backup_id(config: BackupConfig) -> str:
    if config.backup_id:
        return config.backup_id
    return backups.backup_id_for(config.kind, config.graph_id)


#: How long a backup waits for another lifecycle operation of its graph (a backup before it,
#: a restore) to give the graph back before it fails as busy.
WAIT_FOR_GRAPH_SECONDS = 60.0
_BUSY_POLL_SECONDS = 0.05


@step(config=BackupConfig)
def claim_graph_for_backup(ctx: StepContext, config: BackupConfig) -> BackupWork:
    """Claim the graph (active or suspended) for the copy; a backup that exists is kept."""
    if config.kind not in ("on_demand", "daily"):
        raise InvalidRequest(f"kind: {config.kind[:40]!r} is not on_demand or daily",
                             field="kind")
    started_at = time.time()
    deadline = time.monotonic() + WAIT_FOR_GRAPH_SECONDS
    waited = False
    while True:
        try:
            with ctx.database.session() as session:
                claim = lifecycle.claim_graph(session, config.graph_id,
                                              statuses=lifecycle.LIVE,
                                              lease_seconds=ctx.policy.claim_lease_seconds)
                graph = graphs.top_level_graph(session, config.graph_id)
                path, host_id, tier = Path(graph.database_path), graph.host_id, graph.tier
            break
        except lifecycle.GraphBusy:
            # "Back up now" twice: the second waits for the first, as a customer expects,
            # rather than failing; a deletion that held it leaves the graph not live, which
            # the next try says.
            if time.monotonic() > deadline:
                raise
            if not waited:
                ctx.progress(f"Waiting for another operation on graph {config.graph_id} to "
                             "end", 5)
                waited = True
            time.sleep(_BUSY_POLL_SECONDS)
    ctx.progress(f"Backing up graph {config.graph_id}", 10)
    return BackupWork(claim, path, host_id, tier, _backup_id(config), config.kind, started_at)


backup_step = step(on_failure=give_back, around=hold_graph)


@backup_step
def copy_graph_database(ctx: StepContext, work: BackupWork) -> BackupWork:
    """Copy the checkpointed database file (nobody writes during the copy)."""
    assert ctx.backups is not None, "the backups resource is required"
    with ctx.database.session() as session:
        if backups.exists(session, work.backup_id):
            return work
        host = hosts.graph_host(session, ctx.hosts, work.host_id)
    copy = backups.take(host, ctx.backups, work.claim.graph_id, work.tier, work.backup_id,
                        work.kind)
    assert copy is not None
    ctx.progress(f"Copied {work.path.name} ({copy.size_bytes:,} bytes)", 70)
    return replace(work, copy=copy)


@backup_step
def record_backup(ctx: StepContext, work: BackupWork) -> Outcome:
    """Keep the backup's row and manifest, and give the graph back."""
    assert ctx.backups is not None, "the backups resource is required"
    with ctx.database.session() as session:
        graph = lifecycle.assert_graph_held(session, work.claim)
        backup = backups.record(session, ctx.backups, graph, work.backup_id, work.kind,
                                work.copy)
        lifecycle.release_graph(session, work.claim)
        view = backups.describe(backup)
        user_id = graph.owner_user_id
    ctx.progress(f"Backup {work.backup_id} kept until {view['expires_at'][:10]}", 100)
    return Outcome(asset_key=BACKUP_ASSET,
                   result={"graph_id": work.claim.graph_id, **view},
                   metadata={"graph_id": work.claim.graph_id, "backup_id": work.backup_id,
                             "kind": work.kind, "size_bytes": view["size_bytes"],
                             "checksum": view["checksum"], "user_id": user_id},
                   started_at=work.started_at)


def backup_tags(config: BackupConfig) -> dict[str, str]:
    return {GRAPH_TAG: config.graph_id}


def graph_owner(database: Database, config: Any) -> str | None:
    with database.session() as session:
        try:
            return graphs.top_level_graph(session, config.graph_id).owner_user_id
        except Exception:
            return None


def backup_result(database: Database, config: BackupConfig) -> dict[str, Any]:
    with database.session() as session:
        found = backups.backups_of(session, config.graph_id)
        wanted = [b for b in found if b.id == config.backup_id] if config.backup_id else found
        return {"graph_id": config.graph_id,
                **(backups.describe(wanted[0]) if wanted else {"backup_id": None})}


BACKUP_FLOW = Flow(
    name="backup", job_name="back_up_graph_job", operation_kind="graph_backup",
    description="Back up a graph: a consistent copy of its database file, with a manifest.",
    asset_key=BACKUP_ASSET, steps=(claim_graph_for_backup, copy_graph_database, record_backup),
    tags=backup_tags, owner=graph_owner, result=backup_result)


# --- restore -------------------------------------------------------------------------------------


class RestoreConfig(Config):
    """The backup to restore, and the paid graph whose data it replaces."""

    user_id: str = Field(description="The owner of the backed-up graph.")
    graph_id: str = Field(description="The graph the backup is of (it may be deleted).")
    backup_id: str = Field(description="bk_…")
    into_graph_id: str | None = Field(default=None, description="The graph to restore into "
                                      "(active, paid for); graph_id itself when empty.")

    @property
    def target(self) -> str:
        return self.into_graph_id or self.graph_id


@dataclass(frozen=True)
class RestoreWork:
    plan: RestorePlan
    claim: GraphClaim
    host_id: str
    started_at: float


def undo_restore(ctx: StepContext, work: Any, exc: BaseException) -> None:
    """A host that answered with an error (a damaged backup, a store that did not answer, no
    room) refused before touching the graph's file: the graph is as it was, its mark and claim
    are cleared. One that did not answer may have swapped the backup in: the mark stays, the
    claim lapses, and the reaper finishes or undoes the restore by the file's checksum."""
    if not isinstance(work, RestoreWork):
        return
    if isinstance(exc, HostUnavailable):
        ctx.log.error(f"restore into {work.plan.graph_id}: {detail(exc)}; whether its host "
                      "swapped the backup in is not known here: the reaper finishes or undoes "
                      "it by the file's checksum")
        return
    with ctx.database.session() as session:
        restores.unmark_restore(session, work.claim)
        lifecycle.release_graph(session, work.claim)
    ctx.log.error(f"restore into {work.plan.graph_id}: {detail(exc)}; the graph is unchanged")


restore_step = step(on_failure=undo_restore, around=hold_graph)


@step(config=RestoreConfig)
def plan_restore(ctx: StepContext, config: RestoreConfig) -> RestoreWork:
    """Check the backup (owner, where it is kept, that the graph's host can fetch it) and the
    graph it goes into (the user's, active, paid for) before anything is touched, then claim
    that graph."""
    started_at = time.time()
    with ctx.database.session() as session:
        plan = restores.plan_restore(session, user_id=config.user_id, graph_id=config.graph_id,
                                    backup_id=config.backup_id,
                                    into_graph_id=config.into_graph_id)
        restores.check_restorable_here(session, plan)
        claim = lifecycle.claim_graph(session, plan.graph_id, statuses=("active",),
                                      lease_seconds=ctx.policy.claim_lease_seconds)
        host_id = graphs.top_level_graph(session, plan.graph_id).host_id
    ctx.progress(f"Restoring {plan.backup_id} into graph {plan.graph_id}", 30)
    return RestoreWork(plan, claim, host_id, started_at)


@restore_step
def swap_in_backup(ctx: StepContext, work: RestoreWork) -> Outcome:
    """Still paid for? Mark the graph; its host fetches the backup from its store, checks the
    checksum before touching anything and swaps the copy in whole; then the backup's schema
    replaces the graph's and the claim is released."""
    assert ctx.backups is not None, "the backups resource is required"
    with ctx.database.session() as session:
        graph = lifecycle.assert_graph_held(session, work.claim)
        restores.check_paid_for(session, graph)
        restores.begin_restore(session, work.plan, graph, ctx.operation_id)
        host = hosts.graph_host(session, ctx.hosts, work.host_id)
    host.restore(work.plan.graph_id, work.plan.source_graph_id, work.plan.backup_id,
                 work.plan.checksum)
    ctx.progress(f"Swapped {work.plan.backup_id} into graph {work.plan.graph_id}", 80)
    with ctx.database.session() as session:
        graph = lifecycle.assert_graph_held(session, work.claim)
        restores.finish_restore(session, work.plan, graph, ctx.backups.backup_dir)
        lifecycle.release_graph(session, work.claim)
        view = views.describe(session, graph)
    ctx.progress(f"Graph {work.plan.graph_id} restored from {work.plan.backup_id}", 100)
    result = {**view, "restored_from": {"graph_id": work.plan.source_graph_id,
                                        "backup_id": work.plan.backup_id},
              "tables": [name for name, _ in host.tables(work.plan.graph_id)]}
    return Outcome(asset_key=GRAPH_ASSET, result=result,
                   metadata={"graph_id": work.plan.graph_id, "user_id": work.plan.user_id,
                             "lifecycle": "restored",
                             "source_graph_id": work.plan.source_graph_id,
                             "backup_id": work.plan.backup_id},
                   started_at=work.started_at)


def restore_tags(config: RestoreConfig) -> dict[str, str]:
    return {GRAPH_TAG: config.target, USER_TAG: config.user_id}


def restore_result(database: Database, config: RestoreConfig) -> dict[str, Any]:
    with database.session() as session:
        try:
            return views.describe(session, graphs.visible_graph(session, config.target,
                                                                 config.user_id))
        except Exception:
            return {"graph_id": config.target, "status": None}


RESTORE_FLOW = Flow(
    name="restore", job_name="restore_graph_job", operation_kind="graph_restore",
    description="Restore a backup into a graph a subscription pays for, replacing its data.",
    asset_key=GRAPH_ASSET, steps=(plan_restore, swap_in_backup),
    tags=restore_tags, owner=lambda database, config: config.user_id, result=restore_result)
