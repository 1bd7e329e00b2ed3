"""A host killed for good (SIGKILL) is replaced: its graphs are rebuilt on the other host from
their newest backups in the shared S3 store (a real SeaweedFS), answer queries there with the
backup's data, and their owners are told how old it is; the dead host's row is kept, marked; when
it comes back it serves nothing and takes no new graph until an operator clears it, which moves
its stale copies aside. A replacement cut short (its new host down) is run again and takes no
second slot. Real ``host serve`` processes, PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from provisioning_pipelines.errors import HostUnavailable
from provisioning_pipelines.flows import (
    GRAPH_FLOW,
    REPLACEMENT_FLOW,
    SUBGRAPH_FLOW,
    ReplacementConfig,
    SubgraphConfig,
    SubscriptionConfig,
)
from provisioning_pipelines.flows.backup import BACKUP_FLOW, BackupConfig
from provisioning_pipelines.services.capacity import hosts, remote
from provisioning_pipelines.services.upkeep import integrity, replacement
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import Graph, GraphHost
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import run_direct
from tests.flows.host_servers import TIER, client, control_plane, register, stop_hosts
from tests.host_serving import TOKEN, HostProcess
from tests.seaweed import SeaweedServer

ROWS = "MATCH (e:Entity) RETURN e.identifier AS id ORDER BY id"


class Site:
    def __init__(self, database: Database, servers: list[HostProcess],
                 resources: dict[str, Any]) -> None:
        self.database, self.servers, self.resources = database, servers, resources

    def server(self, host_id: str) -> HostProcess:
        return next(process for process in self.servers if process.host_id == host_id)

    def graph(self) -> dict[str, Any]:
        sub_id = paid_graph_subscription(self.database, new_customer(self.database),
                                         plan_name=TIER)
        return run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                          self.resources).result

    def rows(self, host_id: str, graph_id: str) -> list[str]:
        with client(self.server(host_id)) as host:
            return [row["id"] for row in host.query(graph_id, ROWS)]

    def write(self, host_id: str, graph_id: str, *identifiers: str) -> None:
        with client(self.server(host_id)) as host:
            for identifier in identifiers:
                host.query(graph_id, "CREATE (:Entity {identifier: $id, name: $id})",
                           {"id": identifier}, read_only=False)

    def probe(self, rounds: int = 2) -> dict[str, str]:
        found: dict[str, str] = {}
        for _ in range(rounds):
            found = remote.probe_hosts(self.database, TOKEN, misses=2)
        return found

    def placed(self, graph_id: str) -> str:
        with self.database.session() as session:
            graph = session.get(Graph, graph_id)
            assert graph is not None
            return graph.host_id

    def slots(self) -> dict[str, int]:
        with self.database.session() as session:
            return dict(session.execute(select(GraphHost.id, GraphHost.slots_used)).all())


@pytest.fixture
def site(postgres_database: Database, tmp_path: Path, seaweed: SeaweedServer,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    bucket = seaweed.bucket(f"replace-{uuid.uuid4().hex[:10]}")
    settings = {"BACKUP_STORE_URL": f"s3://{bucket}/backups",
                "BACKUP_STORE_ENDPOINT_URL": seaweed.endpoint_url}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "test")
    made = [HostProcess(tmp_path / f"host-{i}" / "data", tmp_path / f"host-{i}.log",
                        host_id=f"host-{i}", tier=TIER, capacity=2) for i in range(2)]
    servers: list[HostProcess] = []
    try:
        for process in made:
            process.env.update({**settings, "AWS_ACCESS_KEY_ID": "test",
                                "AWS_SECRET_ACCESS_KEY": "test"})
            servers.append(process.start())
        register(postgres_database, servers, tmp_path)
        resources = control_plane(postgres_database, tmp_path, GRAPH_HOST_TIMEOUT_SECONDS=5,
                                  GRAPH_HOST_WORK_TIMEOUT_SECONDS=30, **settings)
        yield Site(postgres_database, servers, resources)
    finally:
        stop_hosts(servers)


def test_a_lost_host_is_replaced_and_its_graphs_answer_elsewhere(site: Site) -> None:
    graph = site.graph()
    lost = graph["host_id"]
    other = next(process.host_id for process in site.servers if process.host_id != lost)
    graph_id = graph["graph_id"]
    site.write(lost, graph_id, "acme", "globex")
    run_direct(BACKUP_FLOW, BackupConfig(graph_id=graph_id, backup_id="bk_before"),
               site.resources)
    site.write(lost, graph_id, "after-the-backup")
    with site.database.session() as session:
        owner = session.get(Graph, graph_id).owner_user_id
    sub = run_direct(SUBGRAPH_FLOW, SubgraphConfig(user_id=owner, parent_graph_id=graph_id,
                                                   name="analysis"), site.resources).result
    assert site.slots() == {lost: 1, other: 0}

    site.server(lost).kill()  # for good: its disk is never read again here
    assert site.probe()[lost] == "unhealthy"
    with site.database.session() as session:
        replacement.mark_replaced(session, lost)
        assert replacement.graphs_on(session, lost) == [graph_id]
    result = run_direct(REPLACEMENT_FLOW, ReplacementConfig(graph_id=graph_id,
                                                            lost_host_id=lost),
                        site.resources).result

    assert result["replaced"] and result["host_id"] == other
    assert result["replaced_from"]["backup_id"] == "bk_before"
    assert 0 <= result["data_age_seconds"] < 600
    assert site.rows(other, graph_id) == ["acme", "globex"]  # the backup's data, told its age
    assert site.placed(sub["graph_id"]) == other and site.rows(other, sub["graph_id"]) == []
    assert site.slots() == {lost: 0, other: 1}
    with site.database.session() as session:
        assert session.get(GraphHost, lost).status == "replaced"  # kept, marked
        assert integrity.hosts_within_capacity(session) == []
    # Run again: nothing more to do, nothing taken twice.
    again = run_direct(REPLACEMENT_FLOW, ReplacementConfig(graph_id=graph_id,
                                                           lost_host_id=lost),
                       site.resources).result
    assert again["replaced"] is False and site.slots() == {lost: 0, other: 1}

    # The lost host comes back on its old disk: it answers, but nothing is sent to it.
    site.server(lost).start()
    assert site.probe(1)[lost] == "healthy"
    with site.database.session() as session, pytest.raises(HostUnavailable, match="replaced"):
        hosts.graph_host(session, site.resources["graph_engine"].hosts(), lost)
    newer = site.graph()
    assert newer["host_id"] == other  # never placed on the replaced host
    with client(site.server(lost)) as old:
        assert graph_id in old.list().graphs  # its stale copy, still there, served to nobody
    with site.database.session() as session:
        moved = replacement.clear(session, site.resources["graph_engine"].hosts(), lost)
        assert session.get(GraphHost, lost).status == "available"
    assert set(moved) == {graph_id, sub["graph_id"]}
    with client(site.server(lost)) as old:
        assert old.list().graphs == ()
    assert site.slots() == {lost: 0, other: 2}
    assert site.rows(other, graph_id) == ["acme", "globex"]


def test_a_replacement_cut_short_is_run_again_and_takes_one_slot(site: Site) -> None:
    graph = site.graph()
    lost, graph_id = graph["host_id"], graph["graph_id"]
    other = next(process.host_id for process in site.servers if process.host_id != lost)
    site.write(lost, graph_id, "acme")
    run_direct(BACKUP_FLOW, BackupConfig(graph_id=graph_id, backup_id="bk_one"),
               site.resources)
    site.server(lost).kill()
    site.probe()
    with site.database.session() as session:
        replacement.mark_replaced(session, lost)
    site.server(other).kill()  # the new host dies too, after its slot was taken
    with pytest.raises(HostUnavailable):
        run_direct(REPLACEMENT_FLOW, ReplacementConfig(graph_id=graph_id, lost_host_id=lost,
                                                       to_host_id=other), site.resources)
    assert site.placed(graph_id) == lost and site.slots() == {lost: 1, other: 1}
    with site.database.session() as session:
        graph_row = session.get(Graph, graph_id)
        assert graph_row.details["replacing"]["to"] == other and not graph_row.lifecycle_token

    site.server(other).start()
    site.resources["graph_engine"].hosts().close()  # a fresh breaker, as a rerun's process
    result = run_direct(REPLACEMENT_FLOW, ReplacementConfig(graph_id=graph_id,
                                                            lost_host_id=lost),
                        site.resources).result
    assert result["host_id"] == other and site.rows(other, graph_id) == ["acme"]
    assert site.slots() == {lost: 0, other: 1}  # the slot the first run took, once
