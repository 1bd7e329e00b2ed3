"""Moving a graph (with its subgraphs) to another host of its tier, as one operation its owner
sees: ``graphs move``, ``hosts drain --move``, or the Dagster job.

Five steps (``services/upkeep/moves.py`` says why in this order): claim the graph and a slot on
the new host; make it there and copy it while it still takes writes; freeze it on the old host
and copy again only what changed (the write window); move the rows; remove the old copy. Every
step is repeatable, so a run cut short is run again (by an operator, or by the reaper) and
continues where it stopped, taking no second slot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from dagster import Config
from pydantic import Field

from provisioning_pipelines.errors import BackupDamaged, ProvisioningError
from provisioning_pipelines.flows.asset_keys import GRAPH_ASSET
from provisioning_pipelines.flows.deletion import give_back, hold_graph
from provisioning_pipelines.flows.steps import GRAPH_TAG, Flow, Outcome, StepContext, step
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.services.graphs import views
from provisioning_pipelines.services.graphs.lifecycle import GraphClaim
from provisioning_pipelines.services.upkeep import moves
from provisioning_pipelines.services.upkeep.moves import Move
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.hosts.contract import GraphHost


class MoveConfig(Config):
    """A top-level graph and the host it goes to."""

    graph_id: str = Field(description="kg… (a top-level graph: its subgraphs go with it)")
    to_host_id: str | None = Field(default=None, description="The host it goes to, of its "
                                   "tier; empty: the one a move cut short was going to.")


@dataclass(frozen=True)
class Moving:
    work: Move | None
    graph_id: str
    started_at: float
    #: When writes were refused (the freeze), and how long they were: the write window.
    frozen_at: float | None = None
    window_seconds: float | None = None

    @property
    def claim(self) -> GraphClaim | None:
        """The graph's lifecycle claim, kept alive and given back as every lifecycle step's."""
        return self.work.claim if self.work else None


def _hosts(ctx: StepContext, work: Move) -> tuple[GraphHost, GraphHost]:
    with ctx.database.session() as session:
        return (hosts.graph_host(session, ctx.hosts, work.source.host_id),
                hosts.graph_host(session, ctx.hosts, work.target.host_id))


@step(config=MoveConfig)
def claim_move(ctx: StepContext, config: MoveConfig) -> Moving:
    """Claim the graph and a slot on the new host (the one a cut-short run took, if any)."""
    started_at = time.time()
    with ctx.database.session() as session:
        work = moves.plan(session, config.graph_id, to_host_id=config.to_host_id,
                          lease_seconds=ctx.policy.claim_lease_seconds)
    if work is None:
        ctx.progress(f"Graph {config.graph_id} is on host {config.to_host_id} already", 100)
        return Moving(None, config.graph_id, started_at)
    ctx.progress(f"Moving graph {work.graph_id} from host {work.source.host_id} to host "
                 f"{work.target.host_id}" + (f" with {len(work.parts) - 1} subgraph(s)"
                                             if len(work.parts) > 1 else ""), 10)
    return Moving(work, config.graph_id, started_at)


move_step = step(on_failure=give_back, around=hold_graph)


@move_step
def copy_while_writable(ctx: StepContext, moving: Moving) -> Moving:
    """Make each part on the new host and copy it there while it still takes writes; a part
    written during its copy is copied again once frozen."""
    work = moving.work
    if work is None:
        return moving
    source, target = _hosts(ctx, work)
    copied: dict[str, str | None] = {}
    for part, ddl in work.parts:
        target.create(part, ddl)
        source.checkpoint(part)
        sha256 = source.checksum(part)
        try:
            target.copy_from(part, work.source, sha256)
        except BackupDamaged:  # written while it was copied: the frozen copy takes it
            copied[part] = None
            continue
        copied[part] = sha256
    ctx.progress(f"Copied to host {work.target.host_id}; reads and writes still go to host "
                 f"{work.source.host_id}", 50)
    return replace(moving, work=replace(work, copied=copied))


@move_step
def copy_frozen(ctx: StepContext, moving: Moving) -> Moving:
    """Refuse writes on the old host (reads go on), then copy again what changed since."""
    work = moving.work
    if work is None:
        return moving
    source, target = _hosts(ctx, work)
    with ctx.database.session() as session:
        moves.mark_frozen(session, work)
    frozen_at = time.time()
    ctx.progress(f"Writes to graph {work.graph_id} wait a few seconds while its last changes "
                 "are copied", 70)
    for part, _ in work.parts:
        final = source.freeze(part)
        if work.copied.get(part) != final:  # written since its copy: its last changes
            target.copy_from(part, work.source, final)
        else:  # the copy is the frozen bytes: only ask that the new host still holds it
            target.size(part)
    return replace(moving, frozen_at=frozen_at)


@move_step
def switch_host(ctx: StepContext, moving: Moving) -> Moving:
    """Move the rows: the graph answers, and takes writes, on its new host from now on."""
    work = moving.work
    if work is None:
        return moving
    with ctx.database.session() as session:
        moves.switch(session, work)
    window = time.time() - moving.frozen_at if moving.frozen_at else None
    ctx.progress(f"Graph {work.graph_id} answers on host {work.target.host_id}"
                 + (f"; writes waited {window:.1f} s" if window is not None else ""), 90)
    return replace(moving, window_seconds=window)


@step()
def remove_old_copy(ctx: StepContext, moving: Moving) -> Outcome:
    """Remove the old host's copy, last (a run again after the switch finds it by the row's
    ``moved_from``); one it cannot reach now is quarantined by housekeeping once it answers,
    as no row places it there."""
    work = moving.work
    with ctx.database.session() as session:
        graph = graphs.top_level_graph(session, moving.graph_id)
        view = views.describe(session, graph)
        old_host = work.source.host_id if work else \
            ((graph.details or {}).get("moved_from") or {}).get("host_id")
        parts = [part for part, _ in work.parts] if work else \
            moves.parts_of(session, graph.id)
    if old_host and old_host != view["host_id"]:
        try:
            with ctx.database.session() as session:
                source = hosts.graph_host(session, ctx.hosts, old_host)
            for part in reversed(parts):
                source.delete(part)
        except ProvisioningError as exc:
            ctx.log.warning(f"graph {moving.graph_id}: its old copy on host {old_host} stays "
                            f"for housekeeping: {exc.message}")
    if work is None:
        return Outcome(asset_key=GRAPH_ASSET, result={**view, "moved": False},
                       metadata={"graph_id": moving.graph_id}, started_at=moving.started_at,
                       materialize=False)
    ctx.progress(f"Graph {work.graph_id} moved to host {work.target.host_id}", 100)
    return Outcome(asset_key=GRAPH_ASSET,
                   result={**view, "moved": True, "from_host_id": work.source.host_id,
                           "write_window_seconds": moving.window_seconds},
                   metadata={"graph_id": work.graph_id, "user_id": work.owner_user_id,
                             "lifecycle": "moved", "from_host_id": work.source.host_id,
                             "host_id": work.target.host_id},
                   started_at=moving.started_at)


def _owner(database: Database, config: MoveConfig) -> str | None:
    with database.session() as session:
        return graphs.top_level_graph(session, config.graph_id).owner_user_id


def _result(database: Database, config: MoveConfig) -> dict[str, object]:
    with database.session() as session:
        return views.describe(session, graphs.top_level_graph(session, config.graph_id))


MOVE_FLOW = Flow(
    name="move", job_name="move_graph_job", operation_kind="graph_move",
    description="Move a graph, with its subgraphs, to another host of its tier.",
    asset_key=GRAPH_ASSET, steps=(claim_move, copy_while_writable, copy_frozen, switch_host,
                                  remove_old_copy),
    tags=lambda config: {GRAPH_TAG: config.graph_id}, owner=_owner, result=_result)
