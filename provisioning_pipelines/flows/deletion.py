"""Deleting a graph after its grace (or at once, by an operator), and deleting a subgraph.

A graph's deletion runs under a lifecycle claim on its row, fenced like a subscription's claim
and kept alive by the process's heartbeat: the final backup first (kept
``FINAL_BACKUP_RETENTION_DAYS``), then its subgraphs, its file and sidecars, and last the slot,
roles and credit pool, with the row left as a tombstone (``deleted``). Every step can run again:
a teardown killed half-way stays ``deleting`` and the reaper (or anyone) runs it again, which
finishes it. The slot is given back only once the file is gone.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dagster import Config
from pydantic import Field

from provisioning_pipelines.flows.asset_keys import GRAPH_ASSET, SUBGRAPH_ASSET
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
from provisioning_pipelines.services.graphs import backups, lifecycle, subgraphs
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.services.graphs.lifecycle import GraphClaim
from provisioning_pipelines.services.provisioning import leases
from provisioning_pipelines.storage.db import Database


class DeletionConfig(Config):
    """The graph to delete."""

    graph_id: str = Field(description="The top-level graph, kg….")
    at_once: bool = Field(default=False, description="Delete now, without waiting out the "
                          "grace (an operator's decision); a live graph is deleted too.")
    actor: str = Field(default="operator", description="Who asks, for the audit log.")
    reason: str = Field(default="", description="Why, for the audit log.")


@dataclass(frozen=True)
class Teardown:
    claim: GraphClaim
    path: Path
    host_id: str
    user_id: str
    started_at: float
    details: dict[str, Any]


def hold_graph(ctx: StepContext, work: Any) -> AbstractContextManager[Any]:
    """While a step works under a graph's lifecycle claim, the heartbeat keeps it alive."""
    claim = getattr(work, "claim", None)
    if isinstance(claim, GraphClaim):
        keeper = leases.keeper(ctx.database, ctx.policy.claim_lease_seconds)
        return keeper.holding(claim.token, "graph")
    return nullcontext()


def give_back(ctx: StepContext, work: Any, exc: BaseException) -> None:
    """A failed step leaves the graph as it is (``deleting`` stays due) and frees the claim."""
    claim = getattr(work, "claim", None)
    if isinstance(claim, GraphClaim):
        with ctx.database.session() as session:
            lifecycle.release_graph(session, claim)
        ctx.log.warning(f"graph {claim.graph_id}: {detail(exc)}; its claim is given back")


teardown_step = step(on_failure=give_back, around=hold_graph)


@step(config=DeletionConfig)
def claim_graph_deletion(ctx: StepContext, config: DeletionConfig) -> Teardown:
    """Claim the graph and mark it ``deleting`` (suspended past its grace, or at once)."""
    started_at = time.time()
    statuses = ("suspended", "deleting", "active") if config.at_once else ("suspended",
                                                                          "deleting")
    with ctx.database.session() as session:
        claim = lifecycle.claim_graph(session, config.graph_id, statuses=statuses,
                                      lease_seconds=ctx.policy.claim_lease_seconds)
    try:
        with ctx.database.session() as session:
            graph = lifecycle.begin_deletion(session, claim, now_too=config.at_once,
                                             actor=config.actor, reason=config.reason)
            work = Teardown(claim, Path(graph.database_path), graph.host_id,
                            graph.owner_user_id, started_at,
                            {"reason": config.reason, "actor": config.actor})
    except Exception:
        with ctx.database.session() as session:
            lifecycle.release_graph(session, claim)
        raise
    ctx.progress(f"Deleting graph {config.graph_id}", 10)
    return work


@teardown_step
def back_up_before_deletion(ctx: StepContext, work: Teardown) -> Teardown:
    """Keep a final backup of the graph (once; a retry finds it)."""
    assert ctx.backups is not None, "the backups resource is required"
    backup_id = backups.backup_id_for("final", work.claim.graph_id)
    with ctx.database.session() as session:
        kept = backups.exists(session, backup_id)
    with ctx.database.session() as session:
        host = hosts.graph_host(session, ctx.hosts, work.host_id)
        tier = graphs.top_level_graph(session, work.claim.graph_id).tier
    copy = None if kept else backups.take(host, ctx.backups, work.claim.graph_id, tier,
                                          backup_id, "final", missing_ok=True)
    if copy is not None:
        with ctx.database.session() as session:
            graph = lifecycle.assert_graph_held(session, work.claim)
            backups.record(session, ctx.backups, graph, backup_id, "final", copy)
    ctx.progress(f"Final backup {backup_id} kept", 40)
    return replace(work, details={**work.details, "final_backup_id": backup_id})


@teardown_step
def remove_subgraphs(ctx: StepContext, work: Teardown) -> Teardown:
    """Delete the graph's subgraphs: their files and rows."""
    with ctx.database.session() as session:
        removed = lifecycle.remove_subgraphs(session, ctx.hosts, work.claim)
    ctx.progress(f"Removed {len(removed)} subgraph(s)", 60)
    return replace(work, details={**work.details, "subgraphs": removed})


@teardown_step
def remove_graph_file(ctx: StepContext, work: Teardown) -> Teardown:
    """Delete the database file and its sidecars."""
    with ctx.database.session() as session:
        lifecycle.remove_database_file(session, ctx.hosts, work.claim)
    ctx.progress(f"Removed {work.path.name}", 80)
    return work


@teardown_step
def release_graph_resources(ctx: StepContext, work: Teardown) -> Outcome:
    """Give back the host slot, roles and credit pool; the row stays as a tombstone."""
    with ctx.database.session() as session:
        done = lifecycle.finish_deletion(session, work.claim, actor=work.details["actor"],
                                         reason=work.details["reason"])
    ctx.progress(f"Graph {work.claim.graph_id} deleted", 100)
    result = {**done, "final_backup_id": work.details.get("final_backup_id"),
              "subgraphs_removed": work.details.get("subgraphs", [])}
    metadata = {"lifecycle": "deleted", "graph_id": work.claim.graph_id,
                "user_id": work.user_id, "reason": work.details["reason"],
                "final_backup_id": work.details.get("final_backup_id") or ""}
    return Outcome(asset_key=GRAPH_ASSET, result=result, metadata=metadata,
                   started_at=work.started_at)


# --- a subgraph ----------------------------------------------------------------------------------


class SubgraphDeletionConfig(Config):
    """The subgraph to delete."""

    user_id: str = Field(description="A user with the admin role on the parent.")
    parent_graph_id: str = Field(description="The parent graph, kg….")
    name: str = Field(description="The subgraph's name.")


@step(config=SubgraphDeletionConfig)
def remove_subgraph(ctx: StepContext, config: SubgraphDeletionConfig) -> Outcome:
    """Delete the subgraph's file and rows, and give its place under the parent back. It is
    ``deleting`` before its host is asked: a host that does not answer leaves it so (the file
    there or not), and the deletion run again finishes it."""
    started_at = time.time()
    with ctx.database.session() as session:
        subgraph_id = subgraphs.deletable_subgraph(session, user_id=config.user_id,
                                                   parent_graph_id=config.parent_graph_id,
                                                   name=config.name)
        subgraphs.mark_deleting(session, subgraph_id)
    with ctx.database.session() as session:  # the parent's row locked again, for the removal
        subgraph_id = subgraphs.deletable_subgraph(session, user_id=config.user_id,
                                                   parent_graph_id=config.parent_graph_id,
                                                   name=config.name)
        graphs.discard_graph(session, ctx.hosts, subgraph_id)
        subgraphs.record_deletion(session, subgraph_id, actor=config.user_id)
    ctx.progress(f"Subgraph {subgraph_id} deleted", 100)
    return Outcome(asset_key=SUBGRAPH_ASSET,
                   result={"graph_id": subgraph_id, "parent_graph_id": config.parent_graph_id,
                           "status": "deleted"},
                   metadata={"lifecycle": "deleted", "graph_id": subgraph_id,
                             "parent_graph_id": config.parent_graph_id,
                             "user_id": config.user_id},
                   started_at=started_at)


def deletion_tags(config: DeletionConfig) -> dict[str, str]:
    return {GRAPH_TAG: config.graph_id}


def deletion_owner(database: Database, config: DeletionConfig) -> str | None:
    with database.session() as session:
        try:
            return graphs.top_level_graph(session, config.graph_id).owner_user_id
        except Exception:
            return None


def deletion_result(database: Database, config: DeletionConfig) -> dict[str, Any]:
    with database.session() as session:
        graph = graphs.top_level_graph(session, config.graph_id)
        return {"graph_id": graph.id, "status": graph.status}


def subgraph_deletion_tags(config: SubgraphDeletionConfig) -> dict[str, str]:
    return {GRAPH_TAG: config.parent_graph_id, USER_TAG: config.user_id}


def subgraph_deletion_result(database: Database, config: SubgraphDeletionConfig
                             ) -> dict[str, Any]:
    subgraph_id = f"{config.parent_graph_id}_{config.name}"
    with database.session() as session:
        found = subgraphs.subgraph_summary(session, subgraph_id)
    return {"graph_id": subgraph_id, "status": "deleted" if found is None else found["status"]}


DELETION_FLOW = Flow(
    name="deletion", job_name="delete_graph_job", operation_kind="graph_deletion",
    description="Delete a suspended graph after its grace: final backup, subgraphs, file, "
    "slot, roles and credits.",
    asset_key=GRAPH_ASSET,
    steps=(claim_graph_deletion, back_up_before_deletion, remove_subgraphs, remove_graph_file,
           release_graph_resources),
    tags=deletion_tags, owner=deletion_owner, result=deletion_result)

SUBGRAPH_DELETION_FLOW = Flow(
    name="subgraph_deletion", job_name="delete_subgraph_job",
    operation_kind="subgraph_deletion", description="Delete a subgraph of a graph.",
    asset_key=SUBGRAPH_ASSET, steps=(remove_subgraph,), tags=subgraph_deletion_tags,
    owner=lambda database, config: config.user_id, result=subgraph_deletion_result)
