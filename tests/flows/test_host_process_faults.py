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

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
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
    Flow,
    Outcome,
    SubgraphConfig,
    SubscriptionConfig,
)
from provisioning_pipelines.flows.backup import BACKUP_FLOW, BackupConfig
from provisioning_pipelines.flows.deletion import DeletionConfig, SubgraphDeletionConfig
from provisioning_pipelines.services.capacity import hosts as capacity
from provisioning_pipelines.services.capacity import remote
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.services.graphs import views
from provisioning_pipelines.services.provisioning import claims
from provisioning_pipelines.services.upkeep import housekeeping
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.hosts.contract import HOST_FOLDER
from provisioning_pipelines.storage.ladybug.files import TEMP_NAME
from provisioning_pipelines.storage.ladybug.fork import FORK_WORKSPACE
from provisioning_pipelines.storage.models import (
    Graph,
    GraphBackup,
    GraphHost,
    Subscription,
)
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import run_direct
from tests.flows.host_servers import (
    TIER,
    backups_on,
    client,
    control_plane,
    finish_and_stop,
    freeze_during,
    fresh_clients,
    held,
    leftovers,
    owner,
    pause,
    placed,
    provision,
    register,
    request_waiting,
    resume,
    rows_match_hosts,
    start_hosts,
    stop_hosts,
)
from tests.host_serving import TOKEN, HostProcess

#: Every schema extension: a host's first graph of this schema builds its template (~0.1 s of
#: DDL into a temp file under ``.host/templates``), the create's window to be caught in.
EXTENSIONS = ["crm", "accounting", "procurement", "supply_chain"]
#: Rows a fork copies (~0.3 s of work with its workspace beside the child).
FORK_ROWS = 20_000
#: Distinct 4,000-character texts, stored as they are: ~17 MB of file, whose backup copy (a
#: temp file, then sha256 and fsync) takes ~0.1 s.
TEXT = os.urandom(2000).hex()
#: How long a hung host is waited for in the hang tests.
HANG_TIMEOUT = 1


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


def backup_ids(database: Database) -> set[str]:
    with database.session() as session:
        return set(session.scalars(select(GraphBackup.id)))


def in_background(flow: Flow, config: Any, resources: dict[str, Any]) -> Future[Outcome]:
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(run_direct, flow, config, resources)
    finally:
        pool.shutdown(wait=False)


def is_temp(name: str) -> bool:
    return bool(TEMP_NAME.fullmatch(name))


def is_workspace(name: str) -> bool:
    return name.startswith(FORK_WORKSPACE)


def backups_folder(process: HostProcess, graph_id: str) -> Path:
    return process.data_root / HOST_FOLDER / "backups" / graph_id


def fill_entities(process: HostProcess, graph_id: str, count: int = FORK_ROWS) -> None:
    with client(process) as host:
        host.query(graph_id, "UNWIND range(1, CAST($n AS INT64)) AS i CREATE (:Entity "
                   "{identifier: 'e' + CAST(i AS STRING), name: 'entity ' + CAST(i AS STRING)})",
                   {"n": count}, read_only=False)


def fill_documents(process: HostProcess, graph_id: str, *, batches: int = 2,
                   each: int = 2000) -> int:
    with client(process) as host:
        for batch in range(batches):
            host.query(graph_id, "UNWIND range(1, CAST($n AS INT64)) AS i CREATE (:Document "
                       "{identifier: CAST(i + CAST($at AS INT64) AS STRING), "
                       "content: CAST(i AS STRING) + $text})",
                       {"n": each, "at": batch * each, "text": TEXT}, read_only=False)
    return batches * each


def count(process: HostProcess, graph_id: str, table: str) -> int:
    with client(process) as host:
        return int(host.query(graph_id, f"MATCH (n:{table}) RETURN count(n) AS n")[0]["n"])


def subgraph_config(database: Database, parent_id: str, name: str, *,
                    fork: bool = False) -> SubgraphConfig:
    return SubgraphConfig(user_id=owner(database, parent_id), parent_graph_id=parent_id,
                          name=name, fork_parent=fork)


def subgraph_deletion(database: Database, parent_id: str, name: str) -> SubgraphDeletionConfig:
    return SubgraphDeletionConfig(user_id=owner(database, parent_id), parent_graph_id=parent_id,
                                  name=name)


def deletion(graph_id: str) -> DeletionConfig:
    return DeletionConfig(graph_id=graph_id, at_once=True, actor="test", reason="test")


def hung(hosts: Hosts, **settings: Any) -> dict[str, Any]:
    """A control plane that waits ``HANG_TIMEOUT`` seconds for a host's answer."""
    return control_plane(hosts.database, hosts.tmp_path,
                         GRAPH_HOST_TIMEOUT_SECONDS=HANG_TIMEOUT,
                         GRAPH_HOST_WORK_TIMEOUT_SECONDS=HANG_TIMEOUT, **settings)


def restart(hosts: Hosts, index: int = 0) -> None:
    """Start the killed host again on its disk; the control plane's next call is a fresh
    client's (its breaker opened on the dead host)."""
    hosts[index].start()
    fresh_clients(hosts.resources)


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


def test_a_subgraph_whose_host_is_dead_is_not_made_and_its_name_stays_free(
        make_hosts: Callable[..., Hosts]) -> None:
    hosts = make_hosts(2)
    parent = provision(hosts.database, hosts.resources)["graph_id"]
    hosts[0].kill()
    config = subgraph_config(hosts.database, parent, "analysis", fork=True)
    for _ in range(2):  # the second finds the name free again: nothing was left reserved
        with pytest.raises(HostUnavailable, match="graph host host-0 is unavailable"):
            run_direct(SUBGRAPH_FLOW, config, hosts.resources)
        assert graph_row(hosts.database, f"{parent}_analysis") is None
        parent_row = graph_row(hosts.database, parent)
        assert parent_row is not None and parent_row.subgraph_count == 0


def test_a_backup_whose_host_is_dead_fails_and_gives_the_graph_back(
        make_hosts: Callable[..., Hosts]) -> None:
    hosts = make_hosts(2)
    graph_id = provision(hosts.database, hosts.resources)["graph_id"]
    hosts[0].kill()
    config = BackupConfig(graph_id=graph_id, backup_id="bk_dead")
    for _ in range(2):  # the second is not refused as claimed: the claim was given back
        with pytest.raises(HostUnavailable, match="graph host host-0 is unavailable"):
            run_direct(BACKUP_FLOW, config, hosts.resources)
        row = graph_row(hosts.database, graph_id)
        assert row is not None and (row.status, row.lifecycle_token) == ("active", None)
    assert backup_ids(hosts.database) == set()


def test_a_deletion_whose_host_is_dead_stays_deleting_and_its_rerun_finishes(
        make_hosts: Callable[..., Hosts]) -> None:
    hosts = make_hosts(2)
    graph_id = provision(hosts.database, hosts.resources)["graph_id"]
    hosts[0].kill()
    with pytest.raises(HostUnavailable, match="graph host host-0 is unavailable"):
        run_direct(DELETION_FLOW, deletion(graph_id), hosts.resources)
    row = graph_row(hosts.database, graph_id)
    assert row is not None and (row.status, row.lifecycle_token) == ("deleting", None)
    assert slots(hosts.database) == {"host-0": 1}  # its file may be there: the slot stays

    restart(hosts)
    done = run_direct(DELETION_FLOW, deletion(graph_id), hosts.resources).result
    assert done["status"] == "deleted"
    assert held(hosts.servers) == {"host-0": set()} and slots(hosts.database) == {"host-0": 0}
    assert backups_on(hosts[0], graph_id) == {f"bk_final_{graph_id}"}
    assert backup_ids(hosts.database) == {f"bk_final_{graph_id}"}
    hosts.check()


def test_a_subgraph_deletion_whose_host_is_dead_leaves_it_for_the_rerun(
        make_hosts: Callable[..., Hosts]) -> None:
    hosts = make_hosts(2)
    parent = provision(hosts.database, hosts.resources)["graph_id"]
    child = run_direct(SUBGRAPH_FLOW, subgraph_config(hosts.database, parent, "scratch"),
                       hosts.resources).result["graph_id"]
    hosts[0].kill()
    config = subgraph_deletion(hosts.database, parent, "scratch")
    with pytest.raises(HostUnavailable, match="graph host host-0 is unavailable"):
        run_direct(SUBGRAPH_DELETION_FLOW, config, hosts.resources)
    row = graph_row(hosts.database, child)
    assert row is not None and row.status == "deleting"  # its file is there: run it again

    restart(hosts)
    assert held(hosts.servers) == {"host-0": {parent, child}}
    hosts.check()
    run_direct(SUBGRAPH_DELETION_FLOW, config, hosts.resources)
    assert graph_row(hosts.database, child) is None
    assert held(hosts.servers) == {"host-0": {parent}}
    hosts.check()


# --- a host SIGKILLed during the work ---------------------------------------------------------


def test_a_host_killed_while_it_makes_a_graph_keeps_it_placed_there_and_makes_it_once(
        make_hosts: Callable[..., Hosts]) -> None:
    hosts = make_hosts(2)
    user = new_customer(hosts.database)
    sub_id = paid_graph_subscription(hosts.database, user, plan_name=TIER,
                                     schema_extensions=EXTENSIONS)
    config = SubscriptionConfig(subscription_id=sub_id)
    future = in_background(GRAPH_FLOW, config, hosts.resources)
    freeze_during(hosts[0], hosts[0].data_root / HOST_FOLDER / "templates", is_temp,
                  future.done)
    hosts[0].kill()
    with pytest.raises(claims.RetryScheduled, match="attempt 1 of 3 failed") as retry:
        future.result(timeout=60)
    cause = retry.value.__cause__
    assert isinstance(cause, HostUnavailable) and cause.reached
    graph_id = graphs.graph_id_for_subscription(sub_id)
    assert placed(hosts.database) == {graph_id: "host-0"}  # it may be there: not moved
    assert subscription(hosts.database, sub_id).claim_token is None

    restart(hosts)
    assert leftovers(hosts[0]) == []  # the host's start removed the half-built template
    assert "removed 1 half-made files" in hosts[0].log.read_text()
    result = run_direct(GRAPH_FLOW, config, hosts.resources).result
    assert (result["status"], result["graph_id"], result["host_id"]) == \
        ("active", graph_id, "host-0")
    assert held(hosts.servers) == {"host-0": {graph_id}}
    hosts.check()


def test_a_host_killed_mid_fork_leaves_the_subgraph_with_all_or_none_and_says_so(
        make_hosts: Callable[..., Hosts]) -> None:
    hosts = make_hosts(2)
    parent = provision(hosts.database, hosts.resources)["graph_id"]
    fill_entities(hosts[0], parent)
    config = subgraph_config(hosts.database, parent, "analysis", fork=True)
    future = in_background(SUBGRAPH_FLOW, config, hosts.resources)
    freeze_during(hosts[0], hosts[0].data_root, is_workspace, future.done)
    hosts[0].kill()
    result = future.result(timeout=60).result
    child = f"{parent}_analysis"
    assert (result["graph_id"], result["fork_status"]) == (child, "failed")
    assert result["fork_error"].startswith(
        f"the host of {parent} did not answer while it copied the data (graph host ")
    assert result["fork_error"].endswith(
        "and may still have finished: the copy is all or nothing there, so the subgraph holds "
        "either all of the chosen data or none of it, which is not known here. Delete it and "
        "fork again to be sure.")

    restart(hosts)
    assert leftovers(hosts[0]) == []  # the fork's workspace went with the host's start
    assert count(hosts[0], child, "Entity") in (0, FORK_ROWS)  # one transaction: never a part
    hosts.check()
    run_direct(SUBGRAPH_DELETION_FLOW, subgraph_deletion(hosts.database, parent, "analysis"),
               hosts.resources)
    again = run_direct(SUBGRAPH_FLOW, config, hosts.resources).result
    assert (again["fork_status"], again["rows_copied"]["Entity"]) == ("completed", FORK_ROWS)
    hosts.check()


def test_a_host_killed_mid_backup_keeps_no_backup_and_the_graph_whole(
        make_hosts: Callable[..., Hosts]) -> None:
    hosts = make_hosts(2)
    graph_id = provision(hosts.database, hosts.resources)["graph_id"]
    documents = fill_documents(hosts[0], graph_id)
    config = BackupConfig(graph_id=graph_id, backup_id="bk_cut")
    future = in_background(BACKUP_FLOW, config, hosts.resources)
    freeze_during(hosts[0], backups_folder(hosts[0], graph_id), is_temp, future.done)
    hosts[0].kill()
    with pytest.raises(HostUnavailable, match="graph host host-0 is unavailable"):
        future.result(timeout=60)
    row = graph_row(hosts.database, graph_id)
    assert row is not None and (row.status, row.lifecycle_token) == ("active", None)
    assert backup_ids(hosts.database) == set()

    restart(hosts)
    assert leftovers(hosts[0]) == [] and backups_on(hosts[0], graph_id) == set()
    assert count(hosts[0], graph_id, "Document") == documents
    done = run_direct(BACKUP_FLOW, config, hosts.resources).result
    assert done["backup_id"] == "bk_cut" and backups_on(hosts[0], graph_id) == {"bk_cut"}
    hosts.check()


def test_a_host_killed_mid_deletion_leaves_the_graph_deleting_and_the_rerun_finishes(
        make_hosts: Callable[..., Hosts]) -> None:
    hosts = make_hosts(2)
    graph_id = provision(hosts.database, hosts.resources)["graph_id"]
    fill_documents(hosts[0], graph_id)
    future = in_background(DELETION_FLOW, deletion(graph_id), hosts.resources)
    # The deletion's first work on the host: the final backup's copy.
    freeze_during(hosts[0], backups_folder(hosts[0], graph_id), is_temp, future.done)
    hosts[0].kill()
    with pytest.raises(HostUnavailable, match="graph host host-0 is unavailable"):
        future.result(timeout=60)
    row = graph_row(hosts.database, graph_id)
    assert row is not None and (row.status, row.lifecycle_token) == ("deleting", None)

    restart(hosts)
    assert leftovers(hosts[0]) == [] and backups_on(hosts[0], graph_id) == set()
    assert held(hosts.servers) == {"host-0": {graph_id}}
    done = run_direct(DELETION_FLOW, deletion(graph_id), hosts.resources).result
    assert done["status"] == "deleted"
    assert held(hosts.servers) == {"host-0": set()} and slots(hosts.database) == {"host-0": 0}
    assert backups_on(hosts[0], graph_id) == backup_ids(hosts.database) == \
        {f"bk_final_{graph_id}"}
    hosts.check()


def test_a_host_killed_with_a_subgraphs_deletion_unread_leaves_it_for_the_rerun(
        make_hosts: Callable[..., Hosts]) -> None:
    hosts = make_hosts(2)
    parent = provision(hosts.database, hosts.resources)["graph_id"]
    child = run_direct(SUBGRAPH_FLOW, subgraph_config(hosts.database, parent, "scratch"),
                       hosts.resources).result["graph_id"]
    config = subgraph_deletion(hosts.database, parent, "scratch")
    # A deletion is one unlink: it is caught as a request the stopped host took in, unread.
    pause(hosts[0])
    future = in_background(SUBGRAPH_DELETION_FLOW, config, hosts.resources)
    assert request_waiting(hosts[0], until=future.done)
    hosts[0].kill()
    with pytest.raises(HostUnavailable, match="graph host host-0 is unavailable"):
        future.result(timeout=60)
    row = graph_row(hosts.database, child)
    assert row is not None and row.status == "deleting"

    restart(hosts)
    assert held(hosts.servers) == {"host-0": {parent, child}}  # it never read the request
    run_direct(SUBGRAPH_DELETION_FLOW, config, hosts.resources)
    assert graph_row(hosts.database, child) is None
    assert held(hosts.servers) == {"host-0": {parent}}
    hosts.check()


# --- a host SIGKILLed after the work, and restarted on its disk ------------------------------


def test_work_finished_before_its_host_was_killed_is_served_and_counted_once_restarted(
        make_hosts: Callable[..., Hosts]) -> None:
    hosts = make_hosts(3, 2)  # the most free slots first: host-0, then host-0 (ties by id)
    db, resources = hosts.database, hosts.resources
    kept, dropped = (provision(db, resources)["graph_id"] for _ in range(2))
    fill_entities(hosts[0], kept, 1000)
    forked = run_direct(SUBGRAPH_FLOW, subgraph_config(db, kept, "kept", fork=True),
                        resources).result
    assert forked["rows_copied"]["Entity"] == 1000
    run_direct(SUBGRAPH_FLOW, subgraph_config(db, kept, "dropped"), resources)
    run_direct(SUBGRAPH_DELETION_FLOW, subgraph_deletion(db, kept, "dropped"), resources)
    run_direct(BACKUP_FLOW, BackupConfig(graph_id=kept, backup_id="bk_kept"), resources)
    run_direct(DELETION_FLOW, deletion(dropped), resources)
    directory = resources["graph_engine"].hosts()
    with db.session() as session, client(hosts[0]) as host:  # sizes asked of the host
        view = views.describe(session, session.get(Graph, kept), directory)
        assert view["size_bytes"] == host.size(kept) > 0
        assert view["subgraphs"][0]["size_bytes"] == host.size(f"{kept}_kept") > 0
    hosts[0].kill()

    # Down: its probes miss, its graphs show unavailable, work on them is refused before an
    # operation opens, and a new graph goes to the other host though host-0 has more room.
    for _ in range(3):
        remote.probe_hosts(db, TOKEN, misses=3)
    with db.session() as session:
        view = views.describe(session, session.get(Graph, kept), directory)
        assert (view["available"], view["size_bytes"]) == (False, None)  # not asked
        assert [(s["graph_id"], s["available"], s["size_bytes"]) for s in view["subgraphs"]] \
            == [(f"{kept}_kept", False, None)]
        with pytest.raises(HostUnavailable, match="which is not answering"):
            capacity.check_serving(session, kept)
    elsewhere = provision(db, resources)
    assert elsewhere["host_id"] == "host-1"

    restart(hosts)
    assert remote.probe_hosts(db, TOKEN, misses=3) == {"host-0": "healthy", "host-1": "healthy"}
    assert held(hosts.servers) == {"host-0": {kept, f"{kept}_kept"},
                                   "host-1": {elsewhere["graph_id"]}}
    assert count(hosts[0], f"{kept}_kept", "Entity") == count(hosts[0], kept, "Entity") == 1000
    assert backups_on(hosts[0], kept) == {"bk_kept"}
    assert backups_on(hosts[0], dropped) == {f"bk_final_{dropped}"}
    with client(hosts[0]) as host:  # counted as the rows count it: its subgraph takes no slot
        assert host.health().used == 1 == slots(db)["host-0"]
    # Not double-booked: host-0 takes two more graphs (3 slots), host-1 one more (2), then the
    # tier is full and the next waits in its queue.
    made = [provision(db, resources) for _ in range(4)]
    assert [m.get("host_id") for m in made[:3]] == ["host-0", "host-0", "host-1"]
    assert made[3]["status"] == "queued"
    assert slots(db) == {"host-0": 3, "host-1": 2}
    hosts.check()


# --- a host that hangs (SIGSTOP) past GRAPH_HOST_TIMEOUT_SECONDS, then SIGCONT -----------------


def test_a_create_hung_on_its_last_attempt_fails_and_what_the_host_makes_later_is_quarantined(
        make_hosts: Callable[..., Hosts]) -> None:
    hosts = make_hosts(2)
    quick = hung(hosts, PROVISIONING_MAX_ATTEMPTS=1)  # this attempt is the last
    user = new_customer(hosts.database)
    sub_id = paid_graph_subscription(hosts.database, user, plan_name=TIER,
                                     schema_extensions=EXTENSIONS)
    future = in_background(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id), quick)
    freeze_during(hosts[0], hosts[0].data_root / HOST_FOLDER / "templates", is_temp,
                  future.done)
    started = time.monotonic()
    with pytest.raises(HostUnavailable, match="graph host host-0 is unavailable"):
        future.result(timeout=60)
    assert time.monotonic() - started >= HANG_TIMEOUT
    failed = subscription(hosts.database, sub_id)
    assert (failed.status, failed.claim_token) == ("failed", None)
    assert failed.last_error is not None
    assert failed.last_error.startswith("graph host host-0 is unavailable: ")
    assert placed(hosts.database) == {} and slots(hosts.database) == {"host-0": 0}

    resume(hosts[0])
    finish_and_stop(hosts[0])  # the create it held goes on, and the calls queued behind it
    restart(hosts)
    assert "half-made" not in hosts[0].log.read_text()  # it finished all it had begun
    directory = hosts.resources["graph_engine"].hosts()
    with hosts.database.session() as session:
        report = housekeeping.SweepReport()
        housekeeping.sweep_host_servers(session, directory, report)
    graph_id = graphs.graph_id_for_subscription(sub_id)
    assert set(report.orphans_quarantined) <= {f"host-0:{graph_id}"}
    assert held(hosts.servers) == {"host-0": set()} and leftovers(hosts[0]) == []
    hosts.check()


def test_a_fork_hung_past_the_timeout_is_reported_unknown_and_finishes_on_the_host(
        make_hosts: Callable[..., Hosts]) -> None:
    hosts = make_hosts(2)
    parent = provision(hosts.database, hosts.resources)["graph_id"]
    fill_entities(hosts[0], parent)
    config = subgraph_config(hosts.database, parent, "analysis", fork=True)
    future = in_background(SUBGRAPH_FLOW, config, hung(hosts))
    workspace = freeze_during(hosts[0], hosts[0].data_root, is_workspace, future.done)
    result = future.result(timeout=60).result  # a fork is sent once: one timeout
    assert result["fork_status"] == "failed"
    assert "may still have finished" in result["fork_error"]

    resume(hosts[0])
    finish_and_stop(hosts[0])
    restart(hosts)
    assert not workspace.exists()
    assert count(hosts[0], result["graph_id"], "Entity") == FORK_ROWS  # it did finish
    hosts.check()


def test_a_backup_hung_past_the_timeout_fails_and_gives_the_graph_back(
        make_hosts: Callable[..., Hosts]) -> None:
    hosts = make_hosts(2)
    graph_id = provision(hosts.database, hosts.resources)["graph_id"]
    fill_documents(hosts[0], graph_id)
    future = in_background(BACKUP_FLOW, BackupConfig(graph_id=graph_id, backup_id="bk_hung"),
                           hung(hosts))
    freeze_during(hosts[0], backups_folder(hosts[0], graph_id), is_temp, future.done)
    with pytest.raises(HostUnavailable, match="graph host host-0 is unavailable"):
        future.result(timeout=60)
    row = graph_row(hosts.database, graph_id)
    assert row is not None and (row.status, row.lifecycle_token) == ("active", None)
    assert backup_ids(hosts.database) == set()

    resume(hosts[0])
    finish_and_stop(hosts[0])
    restart(hosts)
    # The copy it took in was finished after the timeout: the host keeps it, and no row
    # names it (nothing prunes it; see docs/reliability.md).
    assert backups_on(hosts[0], graph_id) == {"bk_hung"}
    again = run_direct(BACKUP_FLOW, BackupConfig(graph_id=graph_id, backup_id="bk_again"),
                       hosts.resources).result
    assert again["backup_id"] == "bk_again" and backup_ids(hosts.database) == {"bk_again"}
    assert leftovers(hosts[0]) == []
    hosts.check()


def test_a_deletion_hung_past_the_timeout_stays_deleting_and_its_rerun_finishes(
        make_hosts: Callable[..., Hosts]) -> None:
    hosts = make_hosts(2)
    graph_id = provision(hosts.database, hosts.resources)["graph_id"]
    fill_documents(hosts[0], graph_id)
    future = in_background(DELETION_FLOW, deletion(graph_id), hung(hosts))
    freeze_during(hosts[0], backups_folder(hosts[0], graph_id), is_temp, future.done)
    with pytest.raises(HostUnavailable, match="graph host host-0 is unavailable"):
        future.result(timeout=60)
    row = graph_row(hosts.database, graph_id)
    assert row is not None and (row.status, row.lifecycle_token) == ("deleting", None)

    resume(hosts[0])
    finish_and_stop(hosts[0])  # the final backup it held is finished: the rerun finds it
    restart(hosts)
    done = run_direct(DELETION_FLOW, deletion(graph_id), hosts.resources).result
    assert done["status"] == "deleted"
    assert held(hosts.servers) == {"host-0": set()} and slots(hosts.database) == {"host-0": 0}
    assert backups_on(hosts[0], graph_id) == backup_ids(hosts.database) == \
        {f"bk_final_{graph_id}"}
    assert leftovers(hosts[0]) == []
    hosts.check()


def test_a_subgraph_deletion_hung_past_the_timeout_never_shows_a_subgraph_without_its_file(
        make_hosts: Callable[..., Hosts]) -> None:
    hosts = make_hosts(2)
    parent = provision(hosts.database, hosts.resources)["graph_id"]
    child = run_direct(SUBGRAPH_FLOW, subgraph_config(hosts.database, parent, "scratch"),
                       hosts.resources).result["graph_id"]
    config = subgraph_deletion(hosts.database, parent, "scratch")
    pause(hosts[0])
    with pytest.raises(HostUnavailable, match="graph host host-0 is unavailable"):
        run_direct(SUBGRAPH_DELETION_FLOW, config, hung(hosts))

    resume(hosts[0])
    finish_and_stop(hosts[0])  # the deletes it took in while it hung have run
    restart(hosts)
    row = graph_row(hosts.database, child)
    assert row is not None and row.status == "deleting"  # not shown active without its file
    assert held(hosts.servers) == {"host-0": {parent}}
    hosts.check()
    run_direct(SUBGRAPH_DELETION_FLOW, config, hosts.resources)
    assert graph_row(hosts.database, child) is None
    assert held(hosts.servers) == {"host-0": {parent}}
    hosts.check()


# --- two API workers racing on one paid subscription -----------------------------------------


def test_two_workers_racing_on_each_paid_subscription_make_one_graph_on_one_host(
        make_hosts: Callable[..., Hosts]) -> None:
    hosts = make_hosts(3, 3, 3)
    db = hosts.database
    # Two API workers, each with the resources it builds for itself (its own host clients).
    workers = [control_plane(db, hosts.tmp_path / f"worker-{i}") for i in range(2)]
    assert workers[0]["graph_engine"].hosts() is not workers[1]["graph_engine"].hosts()

    def race(sub_id: str) -> list[dict[str, Any] | Exception]:
        gate = threading.Barrier(2)

        def work(resources: dict[str, Any]) -> dict[str, Any] | Exception:
            gate.wait()
            try:
                return run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                                  resources).result
            except claims.ClaimHeld as held_by_the_other:
                return held_by_the_other

        with ThreadPoolExecutor(2) as pool:
            return list(pool.map(work, workers))

    made: dict[str, str] = {}
    for round_ in range(6):
        if round_ == 3:  # the host with the most free slots dies; its probes have not noticed
            hosts[0].kill()
        user = new_customer(db)
        sub_id = paid_graph_subscription(db, user, plan_name=TIER)
        outcomes = race(sub_id)
        makers = [o for o in outcomes if isinstance(o, dict) and not o["already_active"]]
        others = [o for o in outcomes if o not in makers]
        assert len(makers) == 1 and len(others) == 1, outcomes
        other = others[0]
        assert isinstance(other, claims.ClaimHeld) or other["resource_id"] == \
            makers[0]["graph_id"], other
        with db.session() as session:
            rows = session.scalars(select(Graph).where(Graph.subscription_id == sub_id)).all()
            assert [(g.id, g.host_id) for g in rows] == \
                [(makers[0]["graph_id"], makers[0]["host_id"])]
        assert subscription(db, sub_id).status == "active"
        made[makers[0]["graph_id"]] = makers[0]["host_id"]
    assert list(made.values()) == ["host-0", "host-1", "host-2",  # most free slots, ties by id
                                   "host-1", "host-2", "host-1"]  # host-0 dead: never placed

    restart(hosts)
    assert held(hosts.servers) == {host_id: {g for g, h in made.items() if h == host_id}
                                   for host_id in ("host-0", "host-1", "host-2")}
    assert slots(db) == {"host-0": 1, "host-1": 3, "host-2": 2}
    hosts.check()
