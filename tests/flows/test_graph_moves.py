"""A graph moved to another host with its subgraph, on real ``host serve`` processes and
PostgreSQL: its rows answer there and nowhere else, one slot each; while its last copy is made
writes are refused with a 503 (``graph_moving``) and reads answered; a write made during the
first copy reaches the new host; a move killed (SIGKILL) after each of its steps is found by the
reaper's query and run again, or its old copy swept, and ends whole on exactly one host; a move
whose new host dies is given up and the graph takes writes where it was."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from provisioning_pipelines.errors import GraphMoving, HostUnavailable
from provisioning_pipelines.flows import MOVE_FLOW, SUBGRAPH_FLOW, MoveConfig, SubgraphConfig
from provisioning_pipelines.flows.runner import run_step
from provisioning_pipelines.services.graphs import lifecycle
from provisioning_pipelines.services.upkeep import housekeeping, moves
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import Graph, GraphHost
from tests.conftest import make_resources
from tests.flows.helpers import direct_context, run_direct
from tests.flows.host_servers import (
    client,
    control_plane_dir,
    fresh_clients,
    owner,
    placed,
    provision,
    rows_match_hosts,
)
from tests.host_serving import TOKEN, HostProcess

ROWS = "MATCH (e:Entity) RETURN e.identifier AS id ORDER BY id"
LEASE = {"PROVISIONING_CLAIM_LEASE_SECONDS": 1}


def settings_of(**more: Any) -> dict[str, Any]:
    return {"GRAPH_HOST_TOKEN": TOKEN, "LOCAL_GRAPH_HOSTS": "false",
            "GRAPH_HOST_TIMEOUT_SECONDS": 5, "GRAPH_HOST_WORK_TIMEOUT_SECONDS": 30, **more}


@pytest.fixture
def resources(postgres_database: Database, servers: list[HostProcess],
              tmp_path: Path) -> dict[str, Any]:
    from tests.flows.host_servers import register

    register(postgres_database, servers, tmp_path)
    return make_resources(postgres_database.url, control_plane_dir(tmp_path), **settings_of())


def server(servers: list[HostProcess], host_id: str) -> HostProcess:
    return next(process for process in servers if process.host_id == host_id)


def write(process: HostProcess, graph_id: str, *identifiers: str) -> None:
    with client(process) as host:
        for identifier in identifiers:
            host.query(graph_id, "CREATE (:Entity {identifier: $id, name: $id})",
                       {"id": identifier}, read_only=False)


def rows(process: HostProcess, graph_id: str) -> list[str]:
    with client(process) as host:
        return [row["id"] for row in host.query(graph_id, ROWS)]


def family(database: Database, resources: dict[str, Any], servers: list[HostProcess]
           ) -> tuple[str, str, str, str]:
    """A graph with rows and a subgraph with rows; its id, its subgraph's, its host and
    another host of the tier with a free slot."""
    graph = provision(database, resources)
    graph_id, host_id = graph["graph_id"], graph["host_id"]
    sub = run_direct(SUBGRAPH_FLOW, SubgraphConfig(user_id=owner(database, graph_id),
                                                   parent_graph_id=graph_id, name="analysis"),
                     resources).result["graph_id"]
    write(server(servers, host_id), graph_id, "acme", "globex")
    write(server(servers, host_id), sub, "initech")
    other = next(process.host_id for process in servers if process.host_id != host_id)
    return graph_id, sub, host_id, other


def slots(database: Database) -> dict[str, int]:
    with database.session() as session:
        return dict(session.execute(select(GraphHost.id, GraphHost.slots_used)).all())


def test_a_graph_moves_with_its_subgraph_and_answers_only_on_its_new_host(
        postgres_database: Database, servers: list[HostProcess],
        resources: dict[str, Any]) -> None:
    graph_id, sub, old, new = family(postgres_database, resources, servers)
    before = slots(postgres_database)
    made = run_direct(MOVE_FLOW, MoveConfig(graph_id=graph_id, to_host_id=new), resources)
    assert made.result["moved"] is True and made.result["host_id"] == new
    assert made.result["from_host_id"] == old
    assert 0 <= made.result["write_window_seconds"] < 30
    assert placed(postgres_database)[graph_id] == new == placed(postgres_database)[sub]
    assert rows(server(servers, new), graph_id) == ["acme", "globex"]
    assert rows(server(servers, new), sub) == ["initech"]
    after = slots(postgres_database)
    assert after[old] == before[old] - 1 and after[new] == before[new] + 1
    rows_match_hosts(postgres_database, resources, servers)
    write(server(servers, new), graph_id, "hooli")  # it takes writes there
    with postgres_database.session() as session:
        graph = session.get(Graph, graph_id)
        assert "moving" not in graph.details and graph.details["moved_from"]["host_id"] == old
        assert graph.lifecycle_token is None
    again = run_direct(MOVE_FLOW, MoveConfig(graph_id=graph_id, to_host_id=new), resources)
    assert again.result["moved"] is False  # there already: nothing done, nothing taken
    assert slots(postgres_database) == after


def test_writes_wait_while_the_last_copy_is_made_and_reads_go_on(
        postgres_database: Database, servers: list[HostProcess],
        resources: dict[str, Any]) -> None:
    graph_id, sub, old, new = family(postgres_database, resources, servers)
    ctx = direct_context(resources)
    value: Any = MoveConfig(graph_id=graph_id, to_host_id=new)
    for step in MOVE_FLOW.steps[:2]:
        value = run_step(step, ctx, value)
    write(server(servers, old), graph_id, "during-the-first-copy")  # still takes writes
    value = run_step(MOVE_FLOW.steps[2], ctx, value)  # frozen: the last copy

    with pytest.raises(GraphMoving, match="moving to another host") as refused:
        write(server(servers, old), graph_id, "refused")
    assert refused.value.status_code == 503
    with pytest.raises(GraphMoving):
        write(server(servers, old), sub, "refused")
    assert rows(server(servers, old), graph_id) == ["acme", "during-the-first-copy", "globex"]
    with postgres_database.session() as session, pytest.raises(GraphMoving):
        lifecycle.check_not_moving(session, sub)  # a lifecycle change of it waits too

    value = run_step(MOVE_FLOW.steps[3], ctx, value)
    run_step(MOVE_FLOW.steps[4], ctx, value)
    assert rows(server(servers, new), graph_id) == ["acme", "during-the-first-copy", "globex"]
    with client(server(servers, old)) as host:
        assert graph_id not in host.list().graphs and sub not in host.list().graphs
    write(server(servers, new), graph_id, "after")
    rows_match_hosts(postgres_database, resources, servers)


def _move_until_killed(database_url: str, root: str, graph_id: str, to_host_id: str,
                       last_step: str) -> None:
    """In a process of its own: run the move's steps, and die by SIGKILL after one."""
    resources = make_resources(database_url, Path(root), **settings_of(**LEASE))
    ctx = direct_context(resources)
    value: Any = MoveConfig(graph_id=graph_id, to_host_id=to_host_id)
    for step in MOVE_FLOW.steps:
        value = run_step(step, ctx, value)
        if step.name == last_step:
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("last_step", [step.name for step in MOVE_FLOW.steps[:-1]])
def test_a_move_killed_after_each_step_ends_whole_on_one_host(
        postgres_database: Database, servers: list[HostProcess], resources: dict[str, Any],
        tmp_path: Path, last_step: str) -> None:
    graph_id, sub, old, new = family(postgres_database, resources, servers)
    worker = multiprocessing.get_context("spawn").Process(
        target=_move_until_killed, args=(postgres_database.url, str(control_plane_dir(tmp_path)),
                                         graph_id, new, last_step))
    worker.start()
    worker.join(120)
    assert worker.exitcode == -signal.SIGKILL

    switched = last_step == "switch_host"
    later = datetime.now(UTC) + timedelta(seconds=5)  # past the dead worker's lease
    with postgres_database.session() as session:
        due = moves.interrupted(session, now=later)
    if switched:  # the rows moved: nothing for the reaper; the old copy is housekeeping's
        assert due == [] and placed(postgres_database)[graph_id] == new
        with postgres_database.session() as session:
            report = housekeeping.SweepReport()
            housekeeping.sweep_host_servers(session, resources["graph_engine"].hosts(), report)
        assert sorted(report.orphans_quarantined) == sorted([f"{old}:{graph_id}",
                                                             f"{old}:{sub}"])
    else:
        assert due == [(graph_id, new)]
        assert placed(postgres_database)[graph_id] == old  # whole where its rows say
        assert rows(server(servers, old), graph_id) == ["acme", "globex"]
        # Until the lease lapses the run holds it; then the reaper's run continues the move.
        deadline = time.monotonic() + 30
        while True:
            try:
                run_direct(MOVE_FLOW, MoveConfig(graph_id=graph_id, to_host_id=new), resources)
                break
            except GraphMoving:  # the dead worker's claim, until its lease lapses
                assert time.monotonic() < deadline
                time.sleep(0.2)
    assert placed(postgres_database)[graph_id] == new == placed(postgres_database)[sub]
    assert rows(server(servers, new), graph_id) == ["acme", "globex"]
    assert rows(server(servers, new), sub) == ["initech"]
    rows_match_hosts(postgres_database, resources, servers)
    write(server(servers, new), graph_id, "after")


def test_a_move_whose_new_host_dies_is_given_up_and_the_graph_takes_writes_again(
        postgres_database: Database, servers: list[HostProcess],
        resources: dict[str, Any]) -> None:
    graph_id, sub, old, new = family(postgres_database, resources, servers)
    before = slots(postgres_database)
    ctx = direct_context(resources)
    value: Any = MoveConfig(graph_id=graph_id, to_host_id=new)
    for step in MOVE_FLOW.steps[:2]:
        value = run_step(step, ctx, value)
    server(servers, new).kill()
    with pytest.raises(HostUnavailable):
        run_step(MOVE_FLOW.steps[2], ctx, value)  # the old copy is frozen, the new one gone
    with pytest.raises(GraphMoving):
        write(server(servers, old), graph_id, "refused")

    with postgres_database.session() as session:
        moves.cancel(session, resources["graph_engine"].hosts(), graph_id, lease_seconds=15)
    write(server(servers, old), graph_id, "after")  # writes again where it was
    write(server(servers, old), sub, "after")
    assert placed(postgres_database)[graph_id] == old
    assert slots(postgres_database) == before  # the new host's slot given back
    server(servers, new).start()  # back: the copy nothing places there is swept
    fresh_clients(resources)  # the breaker the dead host opened, as a later sweep finds it
    with postgres_database.session() as session:
        report = housekeeping.SweepReport()
        housekeeping.sweep_host_servers(session, resources["graph_engine"].hosts(), report)
    assert sorted(report.orphans_quarantined) == sorted([f"{new}:{graph_id}", f"{new}:{sub}"])
    rows_match_hosts(postgres_database, resources, servers)
