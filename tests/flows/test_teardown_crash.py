"""A deletion whose process is killed (SIGKILL) half-way is found by the reaper's query once its
lease lapses, run again, and finishes: no file, slot, role or row is left behind, and the slot is
given back exactly once."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from provisioning_pipelines.flows import (
    DELETION_FLOW,
    GRAPH_FLOW,
    SUBGRAPH_FLOW,
    SUSPENSION_FLOW,
    DeletionConfig,
    LifecycleConfig,
    SubgraphConfig,
    SubscriptionConfig,
    run_step,
)
from provisioning_pipelines.services.graphs import lifecycle
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import (
    CreditPool,
    Graph,
    GraphBackup,
    GraphHost,
    GraphSchema,
    GraphUser,
)
from tests.conftest import make_resources
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import direct_context, run_direct

LEASE = {"PROVISIONING_CLAIM_LEASE_SECONDS": 1}


def _delete_until_killed(database_url: str, graph_dir: str, graph_id: str,
                         last_step: str) -> None:
    """In a process of its own: run the deletion's steps, and die by SIGKILL after one."""
    resources = make_resources(database_url, graph_dir, **LEASE)
    ctx = direct_context(resources)
    value: Any = DeletionConfig(graph_id=graph_id, reason="test")
    for step in DELETION_FLOW.steps:
        value = run_step(step, ctx, value)
        if step.name == last_step:
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("last_step", [step.name for step in DELETION_FLOW.steps[:-1]])
def test_a_teardown_killed_half_way_is_resumed_and_finishes(
        postgres_database: Database, graph_dir: Path, last_step: str) -> None:
    url = postgres_database.url
    resources = make_resources(url, graph_dir, GRAPH_DELETION_GRACE_DAYS=0, **LEASE)
    user = new_customer(postgres_database)
    sub_id = paid_graph_subscription(postgres_database, user, plan_name="ladybug-large")
    graph_id = run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                          resources).result["graph_id"]
    run_direct(SUBGRAPH_FLOW, SubgraphConfig(user_id=user.user_id, parent_graph_id=graph_id,
                                             name="child"), resources)
    run_direct(SUSPENSION_FLOW, LifecycleConfig(subscription_id=sub_id), resources)
    with postgres_database.session() as session:
        slots_before = session.scalar(select(func.sum(GraphHost.slots_used)))

    worker = multiprocessing.get_context("spawn").Process(
        target=_delete_until_killed, args=(url, str(graph_dir), graph_id, last_step))
    worker.start()
    worker.join(120)
    assert worker.exitcode == -signal.SIGKILL

    # The reaper's query finds it once the dead worker's lease lapses.
    deadline = time.monotonic() + 60
    while True:
        with postgres_database.session() as session:
            due = lifecycle.due_deletions(session, now=datetime.now(UTC))
        if graph_id in due:
            break
        assert time.monotonic() < deadline, "the interrupted deletion never became due"
        time.sleep(0.2)

    result = run_direct(DELETION_FLOW, DeletionConfig(graph_id=graph_id, actor="reaper",
                                                      reason="resumed"), resources).result

    assert result["status"] == "deleted"
    leftovers = [p.name for p in graph_dir.rglob(f"{graph_id}*")]
    assert leftovers == []
    with postgres_database.session() as session:
        graph = session.get(Graph, graph_id)
        assert graph is not None and graph.status == "deleted"
        assert session.get(Graph, f"{graph_id}_child") is None
        assert session.scalar(select(func.sum(GraphHost.slots_used))) == slots_before - 1
        for table in (GraphUser, CreditPool):
            assert session.scalar(select(func.count()).select_from(table)
                                  .where(table.graph_id.in_([graph_id, f"{graph_id}_child"]))) \
                == 0
        assert session.scalar(select(func.count()).select_from(GraphSchema)
                              .where(GraphSchema.graph_id == f"{graph_id}_child")) == 0
        finals = session.scalars(select(GraphBackup).where(GraphBackup.graph_id == graph_id))
        assert [backup.kind for backup in finals] == ["final"]
        assert graph.lifecycle_token is None
