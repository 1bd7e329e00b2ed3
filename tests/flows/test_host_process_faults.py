"""Faults really caused to graph host server processes, at the flow level.

Real ``host serve`` processes on loopback, registered by url in PostgreSQL; the control plane
is this test process, running the flows as the direct path runs them, with
``LOCAL_GRAPH_HOSTS=false`` (it opens no graph file). A host is SIGKILLed before, during or after
each kind of work (a graph's create, a subgraph's fork, a backup, a graph's and a subgraph's
deletion), or SIGSTOPped past ``GRAPH_HOST_TIMEOUT_SECONDS`` and let go again. "During" is
during: the host is stopped the moment its data root shows the work under way (a temp file, a
fork workspace), checked to be still mid-work, then killed or left hanging; a deletion, which
is one unlink, is killed while its request sits unread in the stopped host's socket.

Each test ends on what a user would find: the graph active exactly once on exactly one host (each
host asked what it holds) or failed with a clear message, slots in the rows equal to what the
hosts hold, the operator's checks clean, no half-made file left, every operation ended.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from provisioning_pipelines.errors import HostUnavailable
from provisioning_pipelines.flows import (
    GRAPH_FLOW,
    SubscriptionConfig,
)
from provisioning_pipelines.services.provisioning import claims
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import Graph, GraphHost, Subscription
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import run_direct
from tests.flows.host_servers import (
    TIER,
    control_plane,
    fresh_clients,
    held,
    placed,
    register,
    rows_match_hosts,
    start_hosts,
    stop_hosts,
)
from tests.host_serving import HostProcess


@dataclass
class Hosts:
    """Host servers registered with a control plane, and that control plane's resources."""

    database: Database
    servers: list[HostProcess]
    resources: dict[str, Any]
    tmp_path: Path

    def __getitem__(self, index: int) -> HostProcess:
        return self.servers[index]

    def check(self) -> None:
        rows_match_hosts(self.database, self.resources, self.servers)


@pytest.fixture
def make_hosts(postgres_database: Database, tmp_path: Path) -> Iterator[Callable[..., Hosts]]:
    started: list[HostProcess] = []

    def make(*capacities: int, **settings: Any) -> Hosts:
        servers = start_hosts(tmp_path, capacities)
        started.extend(servers)
        register(postgres_database, servers, tmp_path)
        return Hosts(postgres_database, servers,
                     control_plane(postgres_database, tmp_path, **settings), tmp_path)

    yield make
    stop_hosts(started)


def subscription(database: Database, subscription_id: str) -> Subscription:
    with database.session() as session:
        found = session.get(Subscription, subscription_id)
        assert found is not None
        session.expunge(found)
        return found


def graph_row(database: Database, graph_id: str) -> Graph | None:
    with database.session() as session:
        found = session.get(Graph, graph_id)
        if found is not None:
            session.expunge(found)
        return found


def slots(database: Database) -> dict[str, int]:
    with database.session() as session:
        return dict(session.execute(select(GraphHost.id, GraphHost.slots_used)).all())


# --- a host SIGKILLed before the work --------------------------------------------------------


def test_a_create_whose_only_host_is_dead_fails_cleanly_and_a_retry_makes_it_once(
        make_hosts: Callable[..., Hosts]) -> None:
    hosts = make_hosts(2)
    hosts[0].kill()  # its probes have not noticed: the row still says healthy
    user = new_customer(hosts.database)
    sub_id = paid_graph_subscription(hosts.database, user, plan_name=TIER)
    config = SubscriptionConfig(subscription_id=sub_id)
    for attempt in (1, 2):
        with pytest.raises(claims.RetryScheduled, match=f"attempt {attempt} of 3 failed"):
            run_direct(GRAPH_FLOW, config, hosts.resources)
        assert placed(hosts.database) == {} and slots(hosts.database) == {"host-0": 0}
    with pytest.raises(HostUnavailable):
        run_direct(GRAPH_FLOW, config, hosts.resources)
    failed = subscription(hosts.database, sub_id)
    assert (failed.status, failed.claim_token) == ("failed", None)
    assert failed.last_error is not None
    assert failed.last_error.startswith("graph host host-0 is unavailable: ")
    assert placed(hosts.database) == {} and slots(hosts.database) == {"host-0": 0}

    hosts[0].start()
    fresh_clients(hosts.resources)
    result = run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id,
                                                       retry_failed=True), hosts.resources)
    assert (result.result["status"], result.result["host_id"]) == ("active", "host-0")
    assert held(hosts.servers) == {"host-0": {result.result["graph_id"]}}
    hosts.check()


@pytest.mark.parametrize(("token", "why"), [
    ("a-token-the-hosts-never-had",
     "it refused this process's token (GRAPH_HOST_TOKEN is not the one it serves with)"),
    (None, "GRAPH_HOST_TOKEN is not set in this process"),
], ids=["wrong token", "no token"])
def test_a_control_plane_without_the_hosts_token_makes_nothing_and_holds_nothing(
        make_hosts: Callable[..., Hosts], token: str | None, why: str) -> None:
    hosts = make_hosts(2, 2)
    wrong = control_plane(hosts.database, hosts.tmp_path, GRAPH_HOST_TOKEN=token)
    user = new_customer(hosts.database)
    sub_id = paid_graph_subscription(hosts.database, user, plan_name=TIER)
    config = SubscriptionConfig(subscription_id=sub_id)
    for attempt in (1, 2):  # each attempt ends, its claim given back for the next
        with pytest.raises(claims.RetryScheduled, match=f"attempt {attempt} of 3 failed"):
            run_direct(GRAPH_FLOW, config, wrong)
        assert subscription(hosts.database, sub_id).claim_token is None
    with pytest.raises(HostUnavailable) as last:
        run_direct(GRAPH_FLOW, config, wrong)
    assert last.value.message.endswith(why)
    failed = subscription(hosts.database, sub_id)
    assert (failed.status, failed.claim_token) == ("failed", None)
    assert failed.last_error is not None and failed.last_error.endswith(why)
    assert placed(hosts.database) == {}
    assert slots(hosts.database) == {"host-0": 0, "host-1": 0}
    assert held(hosts.servers) == {"host-0": set(), "host-1": set()}

    # The operator sets the hosts' token and puts the subscription back: made once.
    result = run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id,
                                                       retry_failed=True), hosts.resources)
    assert result.result["status"] == "active"
    hosts.check()
