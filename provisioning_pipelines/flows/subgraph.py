"""Create a subgraph: a child database of a graph, on the parent's host, with its schema.

A subgraph has no subscription of its own (the parent's tier pays for it), so there is no claim:
the subgraph's id (``{parent}_{name}``) is unique, and the tier's limit is taken under the
parent's row lock. A failure before the fork removes the subgraph again; a failed fork does not:
the subgraph stays and reports ``fork_status: failed``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dagster import Config
from pydantic import Field

from provisioning_pipelines.errors import HostUnavailable, StorageFull
from provisioning_pipelines.flows.asset_keys import SUBGRAPH_ASSET
from provisioning_pipelines.flows.public import describe, detail
from provisioning_pipelines.flows.steps import (
    GRAPH_TAG,
    USER_TAG,
    Flow,
    Outcome,
    StepContext,
    step,
)
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.services.graphs import subgraphs
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.ladybug import expected_tables
from provisioning_pipelines.storage.ladybug.fork import ParentUnreadable


class SubgraphConfig(Config):
    """The subgraph to create under an existing graph."""

    user_id: str = Field(description="The user asking; needs the admin role on the parent.")
    parent_graph_id: str = Field(description="The top-level graph, e.g. kg0123456789abcdef.")
    name: str = Field(description="1 to 20 letters or digits; the subgraph id is parent_name.")
    description: str | None = Field(default=None, description="What the subgraph is for.")
    fork_parent: bool = Field(default=False, description="Copy the parent's data into it.")
    fork_tables: list[str] | None = Field(
        default=None, description="Tables to copy when forking (all when empty)."
    )
    fork_exclude: list[str] = Field(
        default_factory=list, description="Table name patterns (fnmatch) not to copy."
    )


@dataclass(frozen=True)
class SubgraphWork:
    config: SubgraphConfig
    subgraph_id: str
    parent_path: Path
    path: Path
    tier: str
    #: The parent's host, where the subgraph lives.
    host_id: str
    started_at: float
    statements: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()


def discard_subgraph(ctx: StepContext, work: Any, exc: BaseException) -> None:
    """Remove the subgraph this run reserved (rows, file, and its place in the parent's count);
    a file its host, not answering, may hold is left to housekeeping (``discard_graph``)."""
    if not isinstance(work, SubgraphWork):
        return
    with ctx.database.session() as session:
        graphs.discard_graph(session, ctx.hosts, work.subgraph_id, undo=True)
    ctx.log.error(f"subgraph {work.subgraph_id}: creation failed ({detail(exc)}); removed")


@step(config=SubgraphConfig)
def reserve_subgraph(ctx: StepContext, config: SubgraphConfig) -> SubgraphWork:
    """Check the parent, the name and the tier's subgraph limit, and reserve the subgraph."""
    started_at = time.time()
    with ctx.database.session() as session:
        reserved = subgraphs.reserve_subgraph(
            session, user_id=config.user_id, parent_graph_id=config.parent_graph_id,
            name=config.name, description=config.description,
        )
    work = SubgraphWork(config=config, subgraph_id=reserved.subgraph_id,
                        parent_path=reserved.parent_path, path=reserved.path,
                        tier=reserved.tier, host_id=reserved.host_id, started_at=started_at,
                        statements=reserved.statements)
    ctx.progress(f"Reserved subgraph {work.subgraph_id}", 20)
    return work


@step(on_failure=discard_subgraph)
def create_subgraph_database(ctx: StepContext, work: SubgraphWork) -> SubgraphWork:
    """Create the subgraph's database file with the parent's schema, on the parent's host."""
    ctx.progress(f"Creating database for {work.subgraph_id}", 40)
    with ctx.database.session() as session:
        host = hosts.graph_host(session, ctx.hosts, work.host_id)
    host.create(work.subgraph_id, list(work.statements))
    tables = tuple(t.name for t in expected_tables(work.statements))  # verified by create
    ctx.progress(f"Subgraph {work.subgraph_id} created with {len(tables)} tables", 60)
    return replace(work, tables=tables)


@step(on_failure=None)
def fork_parent_data(ctx: StepContext, work: SubgraphWork) -> Outcome:
    """Copy the parent's data when asked; a failed fork leaves the subgraph and says so."""
    config = work.config
    fork: dict[str, Any] = {"fork_status": "not_requested"}
    if config.fork_parent:
        ctx.progress(f"Copying data from {config.parent_graph_id}", 70)
        try:
            with ctx.database.session() as session:
                host = hosts.graph_host(session, ctx.hosts, work.host_id)
            copied = host.fork(work.subgraph_id, config.parent_graph_id,
                               tables=config.fork_tables, exclude=config.fork_exclude)
            fork = {"fork_status": "completed", "rows_copied": copied}
        except Exception as exc:  # the subgraph stays; the fork's failure is reported
            fork = {"fork_status": "failed", "fork_error": fork_error(config, exc)}
            ctx.log.warning(f"subgraph {work.subgraph_id}: fork failed ({detail(exc)})")
        with ctx.database.session() as session:
            subgraphs.record_fork(session, work.subgraph_id, fork)
    ctx.progress(f"Subgraph {work.subgraph_id} ready", 100)
    result = {"graph_id": work.subgraph_id, "parent_graph_id": config.parent_graph_id,
              "name": config.name, "tier": work.tier, "database_path": str(work.path),
              "tables": list(work.tables), **fork}
    metadata = {"graph_id": work.subgraph_id, "parent_graph_id": config.parent_graph_id,
                "user_id": config.user_id, "tier": work.tier,
                "fork_status": fork["fork_status"]}
    return Outcome(asset_key=SUBGRAPH_ASSET, result=result, metadata=metadata,
                   started_at=work.started_at)


def fork_error(config: SubgraphConfig, exc: BaseException) -> str:
    """What the customer is told of a failed fork: what happened to their data and what to do,
    not the engine's words (those go to the log). A host that took the fork in and did not
    answer (killed, hung past the timeout) may have committed the copy, or may commit it
    still: its loads are one transaction, so the subgraph holds all of it or none."""
    if isinstance(exc, ParentUnreadable):
        why = ("its host has run out of disk space" if isinstance(exc.__cause__, StorageFull)
               else "its database file could not be opened")
        return (f"the parent graph {config.parent_graph_id} could not be read ({why}), so "
                "nothing was copied: the subgraph is empty. Delete it and fork again later; "
                "if this persists, contact support.")
    if isinstance(exc, HostUnavailable) and exc.reached:
        # The host may have received the fork and gone on with it (a lost answer, a cut
        # link): the copy is one transaction there, so all of it or none, but which is not
        # known here.
        return (f"the host of {config.parent_graph_id} did not answer while it copied the "
                f"data ({describe(exc)}), and may still have finished: the copy is all or "
                "nothing there, so the subgraph holds either all of the chosen data or none of "
                "it, which is not known here. Delete it and fork again to be sure.")
    return (f"copying the data of {config.parent_graph_id} failed ({describe(exc)}); nothing "
            "was copied: the subgraph is empty. Delete it and fork again later.")


def subgraph_tags(config: SubgraphConfig) -> dict[str, str]:
    """Runs on one graph queue behind each other: a subgraph is tagged with its parent."""
    return {GRAPH_TAG: config.parent_graph_id, USER_TAG: config.user_id}


def subgraph_owner(database: Database, config: SubgraphConfig) -> str | None:
    return config.user_id


def subgraph_result(database: Database, config: SubgraphConfig) -> dict[str, Any]:
    """The subgraph a run made, read back from its rows."""
    with database.session() as session:
        found = subgraphs.subgraph_summary(session, f"{config.parent_graph_id}_{config.name}")
    return found or {"error": "the subgraph was not created"}


SUBGRAPH_FLOW = Flow(
    name="subgraph",
    job_name="create_subgraph_job",
    operation_kind="subgraph_creation",
    description="Create a subgraph of a graph, optionally forking the parent's data.",
    asset_key=SUBGRAPH_ASSET,
    steps=(reserve_subgraph, create_subgraph_database, fork_parent_data),
    tags=subgraph_tags,
    owner=subgraph_owner,
    result=subgraph_result,
)
