"""The flows on graph hosts across a network: three ``host serve`` processes, each in a network
namespace of its own (a machine, ``tests/netns.py``), the control plane in this process on
PostgreSQL with no graph file of its own (``LOCAL_GRAPH_HOSTS=false``). Links are cut and
restored in the middle of each kind of work, and a TCP proxy of the tests' own (in front of the
host the first graph goes to) loses, delays or holds what passes.

What every test asks after the fault: each graph is on exactly one host, the one its row names
(asked of each host: ``GET /v1/databases``), the slots in the rows are what the hosts hold
(the integrity checks), the operation ended (done, or failed with a sentence naming the host),
and nothing half-made is left on any host's disk.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from provisioning_pipelines.errors import HostUnavailable
from provisioning_pipelines.flows import (
    BACKUP_FLOW,
    DELETION_FLOW,
    GRAPH_FLOW,
    SUBGRAPH_DELETION_FLOW,
    SUBGRAPH_FLOW,
    SubgraphConfig,
    SubscriptionConfig,
)
from provisioning_pipelines.flows.backup import BackupConfig
from provisioning_pipelines.flows.deletion import DeletionConfig, SubgraphDeletionConfig
from provisioning_pipelines.flows.public import customer_error
from provisioning_pipelines.orchestration import reaper
from provisioning_pipelines.services.capacity import remote
from provisioning_pipelines.services.graphs import backups
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.services.provisioning import claims, due
from provisioning_pipelines.services.upkeep import housekeeping, integrity
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.hosts.client import HostClient
from provisioning_pipelines.storage.hosts.contract import HOST_FOLDER, QUARANTINE
from provisioning_pipelines.storage.models import Graph, GraphHost, Subscription
from tests import netns
from tests.conftest import make_resources, require
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import run_direct
from tests.host_serving import TOKEN, HostProcess
from tests.netns import Machines
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.netns, pytest.mark.postgres]

TIER = "ladybug-large"  # a tier with subgraphs
#: The client's read timeout (``GRAPH_HOST_TIMEOUT_SECONDS``): what a held answer costs.
TIMEOUT = 2.0


@pytest.fixture
def machines() -> Iterator[Machines]:
    require("network namespaces", netns.problem())
    with Machines(3) as made:
        yield made


@pytest.fixture
def servers(machines: Machines, tmp_path: Path) -> Iterator[list[HostProcess]]:
    """Three host servers of one tier with 2, 3 and 3 slots, one per machine: the first graph
    goes to host-1 (most free slots, then the id), the second to host-2."""
    made = [HostProcess(tmp_path / f"host-{i}" / "data", tmp_path / f"host-{i}.log",
                        host_id=f"host-{i}", tier=TIER, capacity=capacity,
                        machine=machines[i])
            for i, capacity in enumerate((2, 3, 3))]
    try:
        for process in made:
            process.launch()
        for process in made:
            process.wait_ready()
        yield made
    finally:
        for process in made:
            process.stop()


@pytest.fixture
def proxy(servers: list[HostProcess]) -> Iterator[TcpProxy]:
    """A proxy in front of host-1, through which the control plane reaches it."""
    made = TcpProxy(servers[1].address, servers[1].port).start()
    try:
        yield made
    finally:
        made.stop()


class ControlPlane:
    """The control plane of one test: its database, its resources, the machines and hosts."""

    def __init__(self, database: Database, machines: Machines, servers: list[HostProcess],
                 tmp_path: Path, proxy: TcpProxy | None = None, **settings: Any) -> None:
        self.database = database
        self.machines = machines
        self.servers = servers
        self.proxy = proxy
        graph_dir = tmp_path / "control-plane" / "graphs"
        self.graph_dir = graph_dir
        with database.session() as session:
            for index, process in enumerate(servers):
                url = proxy.url if proxy is not None and index == 1 else process.url
                remote.add_remote_host(session, host_id=process.host_id, url=url,
                                       token=TOKEN, graph_data_dir=graph_dir)
        self.resources = make_resources(database.url, graph_dir, GRAPH_HOST_TOKEN=TOKEN,
                                        LOCAL_GRAPH_HOSTS="false",
                                        GRAPH_HOST_TIMEOUT_SECONDS=TIMEOUT,
                                        GRAPH_HOST_WORK_TIMEOUT_SECONDS=TIMEOUT, **settings)

    @property
    def directory(self) -> Any:
        return self.resources["graph_engine"].hosts()

    def fresh_clients(self) -> None:
        """Another worker's clients (no open breaker): as the resumer of another process."""
        self.directory.close()

    # ------------------------------------------------------------------ what hosts hold

    def held(self) -> dict[str, set[str]]:
        """What each host really holds, asked of it at its own address."""
        found = {}
        for process in self.servers:
            with HostClient(process.host_id, process.url, TOKEN) as host:
                holding = host.list()
            assert holding.unknown == (), f"{process.host_id} holds stray files"
            found[process.host_id] = set(holding.graphs)
        return found

    def placed(self) -> dict[str, str]:
        with self.database.session() as session:
            return dict(session.execute(select(Graph.id, Graph.host_id)
                                        .where(Graph.status != "deleted")).all())

    def assert_consistent(self, expected: dict[str, str]) -> None:
        """Each graph of ``expected`` on exactly its host, nothing else anywhere, and the
        rows, slots and schemas agreeing with the hosts."""
        assert self.placed() == expected
        wanted: dict[str, set[str]] = {process.host_id: set() for process in self.servers}
        for graph_id, host_id in expected.items():
            wanted[host_id].add(graph_id)
        assert self.held() == wanted
        with self.database.session() as session:
            assert integrity.files_match_rows(session, self.directory) == []
            assert integrity.hosts_within_capacity(session) == []
            _, findings = integrity.graphs_hold_their_schema(session, self.directory)
            assert findings == []
        for process in self.servers:  # nothing had to be put aside
            assert not (process.data_root / QUARANTINE).exists()

    def slots(self) -> dict[str, int]:
        with self.database.session() as session:
            return dict(session.execute(select(GraphHost.id, GraphHost.slots_used)).all())

    # ------------------------------------------------------------------ work

    def paid(self) -> str:
        user = new_customer(self.database)
        return paid_graph_subscription(self.database, user, plan_name=TIER)

    def provision(self, sub_id: str) -> dict[str, Any]:
        return run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                          self.resources).result

    def resume_due(self) -> list[dict[str, Any]]:
        """What the sensors launch (and the resumer continues): an attempt for each paid
        subscription that is due, run here."""
        with self.database.session() as session:
            found = due.due_now(session, ["graph"], now=datetime.now(UTC), grace_seconds=0,
                                direct_enabled=False,
                                max_attempts=self.resources["policy"].max_attempts,
                                actor="sensor")
        return [self.provision(item.subscription_id) for item in found.subscriptions]

    def subscription(self, sub_id: str) -> Subscription:
        with self.database.session() as session:
            found = session.get(Subscription, sub_id)
            assert found is not None
            session.expunge(found)
            return found


class Background:
    """A flow run in a thread, so the test can cut a link while it waits on a host."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            self.result = work()
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 120) -> Background:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the flow did not end"
        return self


def wait_until(condition: Callable[[], bool], *, timeout: float = 60,
               what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.02)  # polling for a state, not a timing


def on_disk(process: HostProcess, graph_id: str) -> bool:
    return (process.data_root / f"{graph_id}.lbug").is_file()


@pytest.fixture
def plane(postgres_database: Database, machines: Machines, servers: list[HostProcess],
          proxy: TcpProxy, tmp_path: Path) -> ControlPlane:
    return ControlPlane(postgres_database, machines, servers, tmp_path, proxy)


# --------------------------------------------------------------------------- create


def test_a_create_whose_answer_is_lost_in_a_cut_is_finished_on_its_host_once(
        plane: ControlPlane) -> None:
    """The host made the graph, its answer was lost, then the link went: the attempt fails
    as "may have reached", the graph keeps its place, and the next attempt after the link is
    back finds the file there (``created: false``)."""
    proxy, sub_id = plane.proxy, plane.paid()
    assert proxy is not None
    graph_id = graphs.graph_id_for_subscription(sub_id)
    proxy.discard("answers")
    run = Background(lambda: plane.provision(sub_id))
    wait_until(lambda: on_disk(plane.servers[1], graph_id), what="host-1 made the graph")
    proxy.wait_for(lambda p: p.discarded["answers"] > 0)  # it answered, and the answer is lost
    plane.machines.cut(1)
    run.join()
    assert isinstance(run.error, claims.RetryScheduled), run.error
    cause = run.error.__cause__
    assert isinstance(cause, HostUnavailable) and cause.reached
    assert customer_error(run.error).code == "retry_scheduled"
    assert "graph host host-1 is unavailable" in run.error.message
    subscription = plane.subscription(sub_id)
    assert (subscription.status, subscription.attempts) == ("provisioning", 1)
    assert plane.placed() == {graph_id: "host-1"}  # kept: it may be (and is) there
    assert plane.slots() == {"host-0": 0, "host-1": 1, "host-2": 0}

    # A second attempt while the link is still cut: the same host again, never another.
    with pytest.raises(claims.RetryScheduled, match="host-1 is unavailable"):
        plane.resume_due()
    assert plane.placed() == {graph_id: "host-1"}
    assert plane.slots() == {"host-0": 0, "host-1": 1, "host-2": 0}

    plane.machines.restore(1)
    proxy.release()
    plane.fresh_clients()
    [result] = plane.resume_due()
    assert (result["status"], result["resource_id"]) == ("active", graph_id)
    assert (result["host_id"], result["resumed"]) == ("host-1", True)
    assert plane.subscription(sub_id).attempts == 3
    plane.assert_consistent({graph_id: "host-1"})


def test_a_create_delayed_past_the_timeout_arrives_late_and_is_still_one_graph(
        plane: ControlPlane) -> None:
    """Every request to host-1 takes longer than the client waits: each try of the create
    times out (it may have reached the host, so the graph keeps its place) and arrives at the
    host after the client gave up, the last one after the attempt ended. The next attempt,
    with the network quick again, finds the graph the late creates made: one file, one row."""
    proxy, sub_id = plane.proxy, plane.paid()
    assert proxy is not None
    graph_id = graphs.graph_id_for_subscription(sub_id)
    proxy.delay(TIMEOUT + 0.5, "requests")
    started = time.monotonic()
    with pytest.raises(claims.RetryScheduled, match="host-1 is unavailable") as retry:
        plane.provision(sub_id)
    assert time.monotonic() - started >= 3 * TIMEOUT  # three tries, each waited out
    cause = retry.value.__cause__
    assert isinstance(cause, HostUnavailable) and cause.reached
    assert plane.placed() == {graph_id: "host-1"}
    wait_until(lambda: on_disk(plane.servers[1], graph_id), what="a late create arrived")

    proxy.release()
    [result] = plane.resume_due()
    assert (result["status"], result["host_id"], result["resumed"]) == ("active", "host-1",
                                                                        True)
    proxy.wait_for(lambda p: p.pending["requests"] == 0)  # every late request arrived
    plane.assert_consistent({graph_id: "host-1"})


@pytest.fixture
def direct_plane(postgres_database: Database, machines: Machines, servers: list[HostProcess],
                 tmp_path: Path) -> ControlPlane:
    """Every host reached at its own address: a cut link refuses new connections at once."""
    return ControlPlane(postgres_database, machines, servers, tmp_path)


def test_a_create_sent_on_an_open_connection_into_a_cut_keeps_its_place_until_the_link_is_back(
        direct_plane: ControlPlane) -> None:
    """The control plane's connection to host-1 is open (an integrity check used it) when the
    link goes: the create is written into it and never answered, so it may have reached the
    host. A later attempt, refused a connection at once while the link is down, still must not
    give the graph up or move it: the first attempt's create may be there."""
    plane = direct_plane
    with plane.database.session() as session:  # an operator's check: opens the connections
        assert integrity.files_match_rows(session, plane.directory) == []
    sub_id = plane.paid()
    graph_id = graphs.graph_id_for_subscription(sub_id)
    plane.machines.cut(1)
    with pytest.raises(claims.RetryScheduled, match="host-1 is unavailable") as first:
        plane.provision(sub_id)
    assert isinstance(first.value.__cause__, HostUnavailable)
    assert first.value.__cause__.reached
    assert plane.placed() == {graph_id: "host-1"}

    # The next attempt, link still down: no connection at all this time (reached false).
    with pytest.raises(claims.RetryScheduled, match="host-1 is unavailable") as second:
        plane.resume_due()
    assert isinstance(second.value.__cause__, HostUnavailable)
    subscription = plane.subscription(sub_id)
    assert (subscription.status, subscription.attempts) == ("provisioning", 2)
    assert subscription.claim_token is None  # given back: the next trigger may try at once
    assert plane.placed() == {graph_id: "host-1"}
    assert plane.slots() == {"host-0": 0, "host-1": 1, "host-2": 0}

    plane.machines.restore(1)
    plane.fresh_clients()
    [result] = plane.resume_due()
    assert (result["status"], result["host_id"]) == ("active", "host-1")
    plane.assert_consistent({graph_id: "host-1"})


def test_the_last_attempt_of_a_create_cut_off_its_host_ends_failed_and_leaves_nothing_placed(
        postgres_database: Database, machines: Machines, servers: list[HostProcess],
        proxy: TcpProxy, tmp_path: Path) -> None:
    """One attempt allowed: host-1 made the file, the answer was lost, the link went. The
    attempt's undo cannot reach the host to delete the file; it must still end: the
    subscription failed with the host named, no row, no slot. Once the link is back the file
    no row places is found and quarantined by housekeeping, not served and not lost."""
    plane = ControlPlane(postgres_database, machines, servers, tmp_path, proxy,
                         PROVISIONING_MAX_ATTEMPTS=1)
    sub_id = plane.paid()
    graph_id = graphs.graph_id_for_subscription(sub_id)
    proxy.discard("answers")
    run = Background(lambda: plane.provision(sub_id))
    wait_until(lambda: on_disk(servers[1], graph_id), what="host-1 made the graph")
    proxy.wait_for(lambda p: p.discarded["answers"] > 0)
    machines.cut(1)
    run.join()
    assert isinstance(run.error, HostUnavailable), run.error  # the operation fails with it
    assert customer_error(run.error).code == "host_unavailable"
    subscription = plane.subscription(sub_id)
    assert subscription.status == "failed"
    assert subscription.claim_token is None
    assert "graph host host-1 is unavailable" in (subscription.last_error or "")
    assert plane.placed() == {}
    assert plane.slots() == {"host-0": 0, "host-1": 0, "host-2": 0}

    machines.restore(1)
    proxy.release()
    plane.fresh_clients()
    assert plane.held()["host-1"] == {graph_id}
    with postgres_database.session() as session:
        assert [str(f) for f in integrity.files_match_rows(session, plane.directory)] == \
            [f"{graph_id}: a graph file on host host-1 no row places there"]
        report = housekeeping.SweepReport()
        housekeeping.sweep_host_servers(session, plane.directory, report)
    assert report.orphans_quarantined == [f"host-1:{graph_id}"]
    assert plane.held() == {"host-0": set(), "host-1": set(), "host-2": set()}
    kept = [entry.name for entry in (servers[1].data_root / QUARANTINE).iterdir()]
    assert any(name.startswith(f"{graph_id}.lbug.") for name in kept)
    with postgres_database.session() as session:
        assert integrity.files_match_rows(session, plane.directory) == []
        assert integrity.hosts_within_capacity(session) == []


# --------------------------------------------------------------------------- fork


def _entities(host: HostClient, graph_id: str, count: int) -> None:
    host.query(graph_id, "UNWIND range(1, $n) AS i CREATE (:Entity {identifier: 'e' + "
               "CAST(i AS STRING), name: 'entity ' + CAST(i AS STRING)})", {"n": count},
               read_only=False)


def _count(host: HostClient, graph_id: str) -> int:
    return int(host.query(graph_id, "MATCH (e:Entity) RETURN count(e) AS n")[0]["n"])


def test_a_fork_whose_answer_is_lost_in_a_cut_says_its_outcome_is_unknown_and_is_made_again(
        plane: ControlPlane) -> None:
    """The host copied the parent's rows into the subgraph, its answer was lost, the link
    went. The subgraph stays (as any failed fork leaves it), and the customer is told what is
    known: not "nothing was copied" (it was), but that the copy is all or nothing and not
    known. Deleting the subgraph while the link is down fails naming the host and changes
    nothing; after the link is back it is deleted, and a fork again copies every row once."""
    proxy = plane.proxy
    assert proxy is not None
    parent = plane.provision(plane.paid())["resource_id"]
    host_1 = HostClient("host-1", plane.servers[1].url, TOKEN)
    _entities(host_1, parent, 500)
    user_id = _owner(plane.database, parent)
    config = SubgraphConfig(user_id=user_id, parent_graph_id=parent, name="analysis",
                            fork_parent=True)
    child = f"{parent}_analysis"
    proxy.after_request(b"/fork", "discard")
    run = Background(lambda: run_direct(SUBGRAPH_FLOW, config, plane.resources))
    proxy.wait_for(lambda p: p.discarded["answers"] > 0)  # the host answered: the copy is made
    plane.machines.cut(1)
    run.join()
    assert run.error is None, run.error  # the operation ends: the subgraph is made
    result = run.result.result
    assert result["fork_status"] == "failed"
    assert "nothing was copied" not in result["fork_error"]
    assert "host-1" in result["fork_error"] and "not known" in result["fork_error"]
    assert plane.placed() == {parent: "host-1", child: "host-1"}

    deletion = SubgraphDeletionConfig(user_id=user_id, parent_graph_id=parent, name="analysis")
    with pytest.raises(HostUnavailable, match="graph host host-1 is unavailable"):
        run_direct(SUBGRAPH_DELETION_FLOW, deletion, plane.resources)
    assert plane.placed() == {parent: "host-1", child: "host-1"}  # nothing changed

    plane.machines.restore(1)
    proxy.release()
    plane.fresh_clients()
    assert _count(host_1, child) == 500  # it was copied, all of it, once
    plane.assert_consistent({parent: "host-1", child: "host-1"})
    run_direct(SUBGRAPH_DELETION_FLOW, deletion, plane.resources)
    again = run_direct(SUBGRAPH_FLOW, config, plane.resources).result
    assert (again["fork_status"], again["rows_copied"]["Entity"]) == ("completed", 500)
    assert _count(host_1, child) == 500
    plane.assert_consistent({parent: "host-1", child: "host-1"})
    host_1.close()


def test_a_subgraph_whose_create_is_cut_off_is_removed_and_its_name_is_free_again(
        plane: ControlPlane) -> None:
    """host-1 made the subgraph's file, the answer was lost, the link went: the creation
    fails naming the host and is undone although the host cannot be asked to delete the file
    (its rows and its place under the parent go). Once the link is back the file no row
    places is quarantined, and the same name can be created again."""
    proxy = plane.proxy
    assert proxy is not None
    parent = plane.provision(plane.paid())["resource_id"]
    child = f"{parent}_analysis"
    config = SubgraphConfig(user_id=_owner(plane.database, parent), parent_graph_id=parent,
                            name="analysis")
    proxy.after_request(f"PUT /v1/graphs/{child} ".encode(), "discard")
    run = Background(lambda: run_direct(SUBGRAPH_FLOW, config, plane.resources))
    proxy.wait_for(lambda p: p.discarded["answers"] > 0)
    plane.machines.cut(1)
    run.join()
    assert isinstance(run.error, HostUnavailable), run.error
    assert "graph host host-1 is unavailable" in run.error.message
    assert plane.placed() == {parent: "host-1"}
    with plane.database.session() as session:
        graph = session.get(Graph, parent)
        assert graph is not None and graph.subgraph_count == 0

    plane.machines.restore(1)
    proxy.release()
    plane.fresh_clients()
    assert plane.held()["host-1"] == {parent, child}
    with plane.database.session() as session:
        report = housekeeping.SweepReport()
        housekeeping.sweep_host_servers(session, plane.directory, report)
    assert report.orphans_quarantined == [f"host-1:{child}"]
    made = run_direct(SUBGRAPH_FLOW, config, plane.resources).result
    assert made["graph_id"] == child
    assert plane.placed() == {parent: "host-1", child: "host-1"}
    assert plane.held()["host-1"] == {parent, child}


def _owner(database: Database, graph_id: str) -> str:
    with database.session() as session:
        graph = session.get(Graph, graph_id)
        assert graph is not None
        return graph.owner_user_id


# --------------------------------------------------------------------------- backup


def _host_backups(process: HostProcess, graph_id: str) -> list[str]:
    folder = process.data_root / HOST_FOLDER / "backups" / graph_id
    return sorted(entry.name for entry in folder.iterdir()  # the backups, not their manifests
                  if not entry.name.endswith(".manifest.json")) if folder.is_dir() else []


def test_a_backup_whose_answer_is_lost_in_a_cut_fails_naming_the_host_and_its_rerun_is_one_copy(
        plane: ControlPlane) -> None:
    """host-1 made the copy, its answer was lost, the link went: the backup's operation fails
    naming the host, the graph's claim is given back (the graph is neither busy nor changed),
    no backup is recorded. Run again under the same backup id (the schedule's daily id, a
    launch retried), it finds the copy the host already made: one copy, one row."""
    proxy = plane.proxy
    assert proxy is not None
    graph_id = plane.provision(plane.paid())["resource_id"]
    config = BackupConfig(graph_id=graph_id, kind="daily",
                          backup_id=backups.backup_id_for("daily", graph_id))
    proxy.after_request(b"/backups/", "discard")
    run = Background(lambda: run_direct(BACKUP_FLOW, config, plane.resources))
    proxy.wait_for(lambda p: p.discarded["answers"] > 0)  # the host answered: the copy is made
    plane.machines.cut(1)
    run.join()
    assert isinstance(run.error, HostUnavailable), run.error
    assert customer_error(run.error).message.startswith("graph host host-1 is unavailable")
    with plane.database.session() as session:
        graph = session.get(Graph, graph_id)
        assert graph is not None
        assert (graph.status, graph.lifecycle_token) == ("active", None)
        assert backups.backups_of(session, graph_id) == []
    assert _host_backups(plane.servers[1], graph_id) == [f"{config.backup_id}.lbug"]

    plane.machines.restore(1)
    proxy.release()
    plane.fresh_clients()
    made = run_direct(BACKUP_FLOW, config, plane.resources).result
    assert made["backup_id"] == config.backup_id
    with plane.database.session() as session:
        assert [b.id for b in backups.backups_of(session, graph_id)] == [config.backup_id]
    assert _host_backups(plane.servers[1], graph_id) == [f"{config.backup_id}.lbug"]
    plane.assert_consistent({graph_id: "host-1"})


# --------------------------------------------------------------------------- delete


def test_a_deletion_held_and_cut_mid_way_stays_deleting_and_the_reaper_finishes_it_once(
        plane: ControlPlane) -> None:
    """The final backup and the subgraph are gone, then the delete of the graph's file is
    held in the network (the host deleted the file; its answer stalls) and the link goes.
    The deletion fails naming the host, the graph stays ``deleting`` with its slot, and its
    claim is given back. Once the link is back the reaper lists it and its run finishes it:
    the tombstone, the slot freed once, one final backup."""
    proxy = plane.proxy
    assert proxy is not None
    graph_id = plane.provision(plane.paid())["resource_id"]
    other = plane.provision(plane.paid())["resource_id"]  # on host-2, untouched throughout
    user_id = _owner(plane.database, graph_id)
    run_direct(SUBGRAPH_FLOW, SubgraphConfig(user_id=user_id, parent_graph_id=graph_id,
                                             name="analysis"), plane.resources)
    proxy.after_request(f"DELETE /v1/graphs/{graph_id} ".encode(), "hold")
    config = DeletionConfig(graph_id=graph_id, at_once=True, actor="operator",
                            reason="network test")
    run = Background(lambda: run_direct(DELETION_FLOW, config, plane.resources))
    proxy.wait_for(lambda p: p.held["answers"] > 0)  # the host answered; the answer is held
    plane.machines.cut(1)
    run.join()
    assert isinstance(run.error, HostUnavailable), run.error
    assert "graph host host-1 is unavailable" in run.error.message
    with plane.database.session() as session:
        graph = session.get(Graph, graph_id)
        assert graph is not None
        assert (graph.status, graph.lifecycle_token) == ("deleting", None)
        assert [b.kind for b in backups.backups_of(session, graph_id)] == ["final"]
    assert plane.placed() == {graph_id: "host-1", other: "host-2"}
    assert plane.slots() == {"host-0": 0, "host-1": 1, "host-2": 1}

    plane.machines.restore(1)
    proxy.release()
    plane.fresh_clients()
    requests = reaper.lifecycle_requests(plane.resources["database"], datetime.now(UTC))
    assert [r.tags.get("provisioning/graph_id") for r in requests] == [graph_id]
    [request] = requests
    again = DeletionConfig(**request.run_config["ops"]["claim_graph_deletion"]["config"])
    done = run_direct(DELETION_FLOW, again, plane.resources).result
    assert (done["graph_id"], done["status"]) == (graph_id, "deleted")
    with plane.database.session() as session:
        assert [b.kind for b in backups.backups_of(session, graph_id)] == ["final"]
    assert _host_backups(plane.servers[1], graph_id) == [f"bk_final_{graph_id}.lbug"]
    assert plane.slots() == {"host-0": 0, "host-1": 0, "host-2": 1}
    plane.assert_consistent({other: "host-2"})
    assert reaper.lifecycle_requests(plane.resources["database"], datetime.now(UTC)) == []
