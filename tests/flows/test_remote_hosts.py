"""The flows on graph host servers: real ``host serve`` processes, PostgreSQL, and the control
plane holding no graph file of its own (``LOCAL_GRAPH_HOSTS=false``); the ``servers`` and
``remote_resources`` fixtures are ``tests/flows/host_servers.py``'s."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from provisioning_pipelines.errors import HostUnavailable
from provisioning_pipelines.flows import (
    DELETION_FLOW,
    GRAPH_FLOW,
    SUBGRAPH_DELETION_FLOW,
    SUBGRAPH_FLOW,
    SubgraphConfig,
    SubscriptionConfig,
)
from provisioning_pipelines.flows.backup import BACKUP_FLOW, BackupConfig
from provisioning_pipelines.flows.deletion import DeletionConfig, SubgraphDeletionConfig
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.services.provisioning import claims
from provisioning_pipelines.services.upkeep import housekeeping, integrity
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import (
    Graph,
    GraphBackup,
    GraphHost,
    Subscription,
    utcnow,
)
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import run_direct
from tests.flows.host_servers import TIER, client, held, owner, placed, provision
from tests.host_serving import HostProcess
from tests.orchestration.test_reaper import reap


def test_graphs_go_to_the_host_with_most_free_slots_and_subgraphs_beside_their_parent(
        postgres_database: Database, servers: list[HostProcess],
        remote_resources: dict[str, Any], tmp_path: Path) -> None:
    made = [provision(postgres_database, remote_resources) for _ in range(4)]
    # 3 and 3 free before 2: host-1, host-2, then 2 free each, by id: host-0, host-1.
    assert [graph["host_id"] for graph in made] == ["host-1", "host-2", "host-0", "host-1"]
    on_hosts = held(servers)
    for graph in made:  # exactly one file per graph, on the host its row names
        assert [h for h, ids in on_hosts.items() if graph["graph_id"] in ids] == \
            [graph["host_id"]]
    assert not (tmp_path / "control-plane").exists()  # the control plane made no file

    parent = made[0]
    with client(servers[1]) as host:
        host.query(parent["graph_id"], "CREATE (:Entity {identifier: 'a', name: 'A'})",
                   read_only=False)
    user_id = owner(postgres_database, parent["graph_id"])
    child = run_direct(SUBGRAPH_FLOW, SubgraphConfig(
        user_id=user_id, parent_graph_id=parent["graph_id"], name="analysis",
        fork_parent=True), remote_resources).result
    assert child["fork_status"] == "completed" and child["rows_copied"]["Entity"] == 1
    assert placed(postgres_database)[child["graph_id"]] == "host-1"
    with client(servers[1]) as host:
        rows = host.query(child["graph_id"], "MATCH (e:Entity) RETURN e.identifier AS id")
    assert rows == [{"id": "a"}]

    run_direct(SUBGRAPH_DELETION_FLOW, SubgraphDeletionConfig(
        user_id=user_id, parent_graph_id=parent["graph_id"], name="analysis"), remote_resources)
    assert child["graph_id"] not in held(servers)["host-1"]

    run_direct(DELETION_FLOW, DeletionConfig(graph_id=made[3]["graph_id"], at_once=True,
                                                   actor="test", reason="test"),
               remote_resources)
    assert made[3]["graph_id"] not in held(servers)["host-1"]
    with postgres_database.session() as session:
        slots = dict(session.execute(select(GraphHost.id, GraphHost.slots_used)).all())
        assert slots == {"host-0": 1, "host-1": 1, "host-2": 1}
        directory = remote_resources["graph_engine"].hosts()
        assert integrity.files_match_rows(session, directory) == []
        assert integrity.hosts_within_capacity(session) == []
        checked, findings = integrity.graphs_hold_their_schema(session, directory)
        assert (checked, findings) == (3, [])


def test_a_graph_no_row_places_on_a_host_is_reported_and_quarantined_there(
        postgres_database: Database, servers: list[HostProcess],
        remote_resources: dict[str, Any]) -> None:
    graph = provision(postgres_database, remote_resources)
    stray = "kg" + "0" * 15 + "1"
    with client(servers[0]) as host:
        host.create(stray, ["CREATE NODE TABLE Thing(id INT64, PRIMARY KEY(id))"])
    directory = remote_resources["graph_engine"].hosts()
    with postgres_database.session() as session:
        findings = [str(f) for f in integrity.files_match_rows(session, directory)]
        assert findings == [f"{stray}: a graph file on host host-0 no row places there"]
        report = housekeeping.SweepReport()
        housekeeping.sweep_host_servers(session, directory, report)
    assert report.orphans_quarantined == [f"host-0:{stray}"]
    assert held(servers)["host-0"] == set()
    assert (servers[0].data_root / ".quarantine").is_dir()  # kept for an operator, not lost
    assert graph["graph_id"] in held(servers)[graph["host_id"]]
    with postgres_database.session() as session:
        assert integrity.files_match_rows(session, directory) == []


def test_a_graph_placed_on_a_host_while_the_sweep_lists_it_is_not_quarantined(
        postgres_database: Database, servers: list[HostProcess],
        remote_resources: dict[str, Any]) -> None:
    """The sweep reads the rows, then asks each host what it holds: a graph placed and made on
    a host in between has a row the first read did not see, and is live work, not an orphan."""
    graph = provision(postgres_database, remote_resources)
    target = next(p for p in servers if p.host_id != graph["host_id"])
    with client(target) as host:  # its file made there, as a placement elsewhere makes it
        host.create(graph["graph_id"], ["CREATE NODE TABLE Thing(id INT64, PRIMARY KEY(id))"])
    directory = remote_resources["graph_engine"].hosts()
    with postgres_database.session() as session:
        listed = hosts.graph_host(session, directory, target.host_id)
    listing = listed.list

    def placed_meanwhile() -> Any:
        with postgres_database.session() as other:  # another worker's committed placement
            other.get(Graph, graph["graph_id"]).host_id = target.host_id
        return listing()

    listed.list = placed_meanwhile  # type: ignore[method-assign]
    with postgres_database.session() as session:
        report = housekeeping.SweepReport()
        housekeeping.sweep_host_servers(session, directory, report)
    assert f"{target.host_id}:{graph['graph_id']}" not in report.orphans_quarantined
    assert graph["graph_id"] in held(servers)[target.host_id]


def test_a_create_that_never_reached_a_dead_host_is_placed_on_another(
        postgres_database: Database, servers: list[HostProcess],
        remote_resources: dict[str, Any]) -> None:
    servers[1].kill()  # the host with most free slots; its probes have not noticed yet
    graph = provision(postgres_database, remote_resources)
    assert graph["host_id"] == "host-2"
    assert placed(postgres_database) == {graph["graph_id"]: "host-2"}
    servers[1].start()
    on_hosts = held(servers)
    assert on_hosts == {"host-0": set(), "host-1": set(), "host-2": {graph["graph_id"]}}
    with postgres_database.session() as session:
        assert integrity.hosts_within_capacity(session) == []  # no slot counted twice


def test_a_create_that_may_have_reached_a_hung_host_is_retried_only_there(
        postgres_database: Database, servers: list[HostProcess],
        remote_resources: dict[str, Any]) -> None:
    hung = servers[1]
    hung.pause()  # accepts connections, answers nothing
    user = new_customer(postgres_database)
    sub_id = paid_graph_subscription(postgres_database, user, plan_name=TIER)
    config = SubscriptionConfig(subscription_id=sub_id)
    with pytest.raises(claims.RetryScheduled, match="attempt 1 of 3 failed") as retry:
        run_direct(GRAPH_FLOW, config, remote_resources)
    cause = retry.value.__cause__
    assert isinstance(cause, HostUnavailable) and cause.reached
    graph_id = next(iter(placed(postgres_database)))
    assert placed(postgres_database) == {graph_id: "host-1"}  # not moved: it may be there

    hung.resume()
    remote_resources["graph_engine"].hosts().close()  # a fresh client: its breaker closed
    result = run_direct(GRAPH_FLOW, config, remote_resources).result
    assert (result["graph_id"], result["host_id"]) == (graph_id, "host-1")
    assert held(servers) == {"host-0": set(), "host-1": {graph_id}, "host-2": set()}
    with postgres_database.session() as session:
        assert session.get(Subscription, sub_id).status == "active"
        assert integrity.hosts_within_capacity(session) == []


def test_a_backup_past_its_retention_is_removed_from_the_host_that_keeps_it(
        postgres_database: Database, servers: list[HostProcess],
        remote_resources: dict[str, Any]) -> None:
    graph = provision(postgres_database, remote_resources)
    server = next(s for s in servers if s.host_id == graph["host_id"])
    run_direct(BACKUP_FLOW, BackupConfig(graph_id=graph["graph_id"], backup_id="bk_old"),
               remote_resources)
    kept = server.data_root / ".host" / "backups" / graph["graph_id"] / "bk_old.lbug"
    assert kept.is_file()
    with postgres_database.session() as session:
        session.get(GraphBackup, "bk_old").expires_at = utcnow() - timedelta(seconds=1)

    server.kill()  # the host is down when the reaper comes: the backup waits for it
    reap(remote_resources)
    with postgres_database.session() as session:
        assert session.get(GraphBackup, "bk_old") is not None
    server.start()
    remote_resources["graph_engine"].hosts().close()  # a fresh client: its breaker closed
    reap(remote_resources)
    with postgres_database.session() as session:
        assert session.get(GraphBackup, "bk_old") is None
    assert not kept.exists()
