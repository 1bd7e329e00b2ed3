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
from provisioning_pipelines.flows import GRAPH_FLOW, SubscriptionConfig
from provisioning_pipelines.flows.public import customer_error
from provisioning_pipelines.services.capacity import remote
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.services.provisioning import claims, due
from provisioning_pipelines.services.upkeep import integrity
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
                                        GRAPH_HOST_TIMEOUT_SECONDS=TIMEOUT, **settings)

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
                                direct_enabled=False, max_attempts=3, actor="sensor")
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
