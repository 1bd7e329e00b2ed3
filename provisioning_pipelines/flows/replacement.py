"""Rebuilding a graph of a lost host on a healthy one (``hosts replace``), as one operation its
owner sees: which backup came back and how old its data is.

Three steps under the graph's lifecycle claim (``services/upkeep/replacement.py`` says why in
this order): the slot on the new host is taken and written on the graph's row; the graph is made
there with its schema and its newest backup swapped in (its subgraphs with their schemas,
empty); then its rows move. A failure gives the claim back and keeps the slot on the row, so the
same command run again continues where it stopped and takes no second slot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from dagster import Config
from pydantic import Field

from provisioning_pipelines.flows.asset_keys import GRAPH_ASSET
from provisioning_pipelines.flows.deletion import give_back, hold_graph
from provisioning_pipelines.flows.steps import GRAPH_TAG, Flow, Outcome, StepContext, step
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.services.graphs import views
from provisioning_pipelines.services.graphs.lifecycle import GraphClaim
from provisioning_pipelines.services.upkeep import replacement
from provisioning_pipelines.services.upkeep.replacement import Replacement
from provisioning_pipelines.storage.db import Database


class ReplacementConfig(Config):
    """A graph of a host marked replaced, and where it goes."""

    graph_id: str = Field(description="kg… (a top-level graph on the lost host)")
    lost_host_id: str = Field(description="The host marked replaced (hosts replace).")
    to_host_id: str | None = Field(default=None, description="The host it goes to; empty: "
                                   "the healthy host of its tier with the most free slots.")


@dataclass(frozen=True)
class Rebuild:
    work: Replacement | None
    graph_id: str
    started_at: float

    @property
    def claim(self) -> GraphClaim | None:
        """The graph's lifecycle claim, kept alive and given back as every lifecycle step's."""
        return self.work.claim if self.work else None


def _age(work: Replacement) -> str:
    if work.backup is None:
        return ("no backup of it could be reached (it was kept only on the lost host's disk)"
                if work.backup_lost else "it had no backup yet") + \
            ": it comes back with its schema and no data"
    hours = (datetime.now(UTC) - work.backup.taken_at).total_seconds() / 3600
    return (f"from backup {work.backup.backup_id}, taken {work.backup.taken_at:%Y-%m-%d %H:%M}"
            f" UTC ({hours:.1f} h ago): what was written after that is lost")


@step(config=ReplacementConfig)
def claim_new_place(ctx: StepContext, config: ReplacementConfig) -> Rebuild:
    """Claim the graph and a slot on a healthy host of its tier (the one a cut-short run took,
    if there is one)."""
    started_at = time.time()
    with ctx.database.session() as session:
        work = replacement.plan(session, config.graph_id, config.lost_host_id,
                                to_host_id=config.to_host_id,
                                lease_seconds=ctx.policy.claim_lease_seconds)
    if work is None:
        ctx.progress(f"Graph {config.graph_id} is not on host {config.lost_host_id} any more",
                     100)
        return Rebuild(None, config.graph_id, started_at)
    ctx.progress(f"Graph {work.graph_id} was on host {work.lost_host_id}, which is lost; "
                 f"rebuilding it on host {work.host_id} {_age(work)}", 10)
    return Rebuild(work, config.graph_id, started_at)


rebuild_step = step(on_failure=give_back, around=hold_graph)


@rebuild_step
def rebuild_on_new_host(ctx: StepContext, rebuild: Rebuild) -> Rebuild:
    """Make the graph on the new host with its schema, swap its newest backup in, and make its
    subgraphs there with theirs (each call is repeatable)."""
    work = rebuild.work
    if work is None:
        return rebuild
    with ctx.database.session() as session:
        host = hosts.graph_host(session, ctx.hosts, work.host_id)
    host.create(work.graph_id, work.ddl)
    if work.backup is not None:
        host.restore(work.graph_id, work.graph_id, work.backup.backup_id, work.backup.checksum)
        ctx.progress(f"Backup {work.backup.backup_id} swapped in on host {work.host_id}", 60)
    for child_id, ddl in work.subgraphs:
        host.create(child_id, ddl)
    return rebuild


@rebuild_step
def switch_to_new_host(ctx: StepContext, rebuild: Rebuild) -> Outcome:
    """Move the rows: the graph answers on its new host from now on."""
    work = rebuild.work
    if work is None:
        with ctx.database.session() as session:
            view = views.describe(session, graphs.top_level_graph(session, rebuild.graph_id))
        return Outcome(asset_key=GRAPH_ASSET, result={**view, "replaced": False},
                       metadata={"graph_id": rebuild.graph_id}, started_at=rebuild.started_at,
                       materialize=False)
    with ctx.database.session() as session:
        graph = replacement.switch(session, work)
        view = views.describe(session, graph)
        moved = graph.details["replaced_from"]
    ctx.progress(f"Graph {work.graph_id} answers on host {work.host_id}; its data "
                 + (f"is as of {moved['data_as_of'][:16]} UTC" if moved["data_as_of"]
                    else "was lost with host " + work.lost_host_id), 100)
    age = (datetime.now(UTC) - work.backup.taken_at).total_seconds() if work.backup else None
    return Outcome(asset_key=GRAPH_ASSET,
                   result={**view, "replaced": True, "replaced_from": moved,
                           "data_age_seconds": age},
                   metadata={"graph_id": work.graph_id, "user_id": work.owner_user_id,
                             "lifecycle": "replaced", "from_host_id": work.lost_host_id,
                             "host_id": work.host_id,
                             "backup_id": moved["backup_id"] or ""},
                   started_at=rebuild.started_at)


def _owner(database: Database, config: ReplacementConfig) -> str | None:
    with database.session() as session:
        return graphs.top_level_graph(session, config.graph_id).owner_user_id


def _result(database: Database, config: ReplacementConfig) -> dict[str, object]:
    with database.session() as session:
        return views.describe(session, graphs.top_level_graph(session, config.graph_id))


REPLACEMENT_FLOW = Flow(
    name="replacement", job_name="replace_graph_host_job", operation_kind="graph_replacement",
    description="Rebuild a graph of a lost host on a healthy one from its newest backup.",
    asset_key=GRAPH_ASSET, steps=(claim_new_place, rebuild_on_new_host, switch_to_new_host),
    tags=lambda config: {GRAPH_TAG: config.graph_id}, owner=_owner, result=_result)
