"""Graph host servers for the flow tests: real ``host serve`` processes on loopback, registered
by url in PostgreSQL, and a control plane (the test process, running the flows as the direct
path does) that holds no graph file of its own (``LOCAL_GRAPH_HOSTS=false``)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from provisioning_pipelines.flows import GRAPH_FLOW, SubscriptionConfig
from provisioning_pipelines.services.capacity import remote
from provisioning_pipelines.services.graphs.states import LIVE
from provisioning_pipelines.services.upkeep import integrity
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.hosts.client import HostClient
from provisioning_pipelines.storage.hosts.contract import HOST_FOLDER
from provisioning_pipelines.storage.models import Graph, GraphHost
from tests.conftest import make_resources
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import run_direct
from tests.host_serving import TOKEN, HostProcess

TIER = "ladybug-large"  # a tier with subgraphs


def start_hosts(tmp_path: Path, capacities: Sequence[int], *, tier: str = TIER
                ) -> list[HostProcess]:
    """Host servers ``host-0``, ``host-1`` ... with these capacities, each on its own disk,
    started side by side (each start is mostly the interpreter's imports)."""
    made = [HostProcess(tmp_path / f"host-{i}" / "data", tmp_path / f"host-{i}.log",
                        host_id=f"host-{i}", tier=tier, capacity=capacity)
            for i, capacity in enumerate(capacities)]
    try:
        with ThreadPoolExecutor(len(made)) as pool:
            list(pool.map(HostProcess.start, made))
    except BaseException:
        stop_hosts(made)
        raise
    return made


def stop_hosts(made: Sequence[HostProcess]) -> None:
    for process in made:
        resume(process)
        process.stop()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[HostProcess]]:
    """Three host servers of one tier with 2, 3 and 3 slots, each on its own disk."""
    made: list[HostProcess] = []
    try:
        made = start_hosts(tmp_path, (2, 3, 3))
        yield made
    finally:
        stop_hosts(made)


def register(database: Database, servers: Sequence[HostProcess], tmp_path: Path) -> None:
    """``hosts add --url`` for each server, as an operator registers them."""
    with database.session() as session:
        for process in servers:
            remote.add_remote_host(session, host_id=process.host_id, url=process.url,
                                   token=TOKEN, graph_data_dir=control_plane_dir(tmp_path))


def control_plane_dir(tmp_path: Path) -> Path:
    return tmp_path / "control-plane" / "graphs"


def control_plane(database: Database, tmp_path: Path, **settings: Any) -> dict[str, Any]:
    """The resources an API worker builds, with only the registered hosts and the hosts'
    token (each override by its environment name)."""
    values: dict[str, Any] = {"GRAPH_HOST_TOKEN": TOKEN, "LOCAL_GRAPH_HOSTS": "false",
                              "GRAPH_HOST_TIMEOUT_SECONDS": 2,
                              "GRAPH_HOST_WORK_TIMEOUT_SECONDS": 2, **settings}
    return make_resources(database.url, control_plane_dir(tmp_path), **values)


@pytest.fixture
def remote_resources(postgres_database: Database, servers: list[HostProcess],
                     tmp_path: Path) -> dict[str, Any]:
    register(postgres_database, servers, tmp_path)
    return control_plane(postgres_database, tmp_path)


def client(process: HostProcess, *, timeout: float = 30.0) -> HostClient:
    return HostClient(process.host_id, process.url, TOKEN, timeout=timeout)


def held(servers: Sequence[HostProcess]) -> dict[str, set[str]]:
    """What each host really holds, asked of the host."""
    found = {}
    for process in servers:
        with client(process) as host:
            found[process.host_id] = set(host.list().graphs)
    return found


def placed(database: Database) -> dict[str, str]:
    with database.session() as session:
        return dict(session.execute(select(Graph.id, Graph.host_id)
                                    .where(Graph.status != "deleted")).all())


def provision(database: Database, resources: dict[str, Any], **graph: Any) -> dict[str, Any]:
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user, plan_name=TIER, **graph)
    return run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id), resources).result


def owner(database: Database, graph_id: str) -> str:
    with database.session() as session:
        graph = session.get(Graph, graph_id)
        assert graph is not None
        return graph.owner_user_id


def fresh_clients(resources: dict[str, Any]) -> None:
    """Forget the control plane's host clients (and their open breakers), as a restarted
    worker would; the next call makes new ones."""
    resources["graph_engine"].hosts().close()


# --- faults ---------------------------------------------------------------------------------


def pause(process: HostProcess) -> None:
    """SIGSTOP: the kernel still accepts connections and takes requests in, nobody answers."""
    assert process.process is not None and process.process.poll() is None
    os.killpg(process.process.pid, signal.SIGSTOP)


def resume(process: HostProcess) -> None:
    if process.process is not None and process.process.poll() is None:
        os.killpg(process.process.pid, signal.SIGCONT)


def first_match(folder: Path, wanted: Callable[[str], bool], *, until: Callable[[], bool],
                deadline: float = 60.0) -> Path | None:
    """Poll ``folder`` for an entry whose name is ``wanted``; None once ``until()`` holds (the
    work ended before one was seen) or the deadline passes."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            for name in os.listdir(folder):
                if wanted(name):
                    return folder / name
        except FileNotFoundError:
            pass
        if until():
            return None
        time.sleep(0.0005)  # polling a folder, not waiting out a timing
    return None


def freeze_during(process: HostProcess, folder: Path, wanted: Callable[[str], bool],
                  work_done: Callable[[], bool]) -> Path:
    """Stop the host the moment its work shows in ``folder`` (a temp file or a workspace), and
    check the work is still there once it is stopped: the host is frozen mid-work."""
    seen = first_match(folder, wanted, until=work_done)
    assert seen is not None, f"the host's work never showed in {folder} before it ended"
    pause(process)
    assert seen.exists(), f"{seen.name} went before the host stopped: not caught mid-work"
    return seen


def _connections(process: HostProcess) -> list[tuple[str, int]]:
    """The host's side of each connection to it: its TCP state and unread bytes."""
    port = f":{process.port:04X}"
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[1].endswith(port) and fields[3] != "0A":  # not the listener
                    found.append((fields[3], int(fields[4].split(":")[1], 16)))
    return found


def request_waiting(process: HostProcess, *, until: Callable[[], bool],
                    deadline: float = 60.0) -> bool:
    """Whether a request sits unread in a connection to the (stopped) host: the kernel took
    its bytes in, the process has not read them (the socket's receive queue)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if any(unread for _, unread in _connections(process)):
            return True
        if until():
            return False
        time.sleep(0.001)
    return False


def finish_and_stop(process: HostProcess, *, deadline: float = 60.0) -> None:
    """Let the host, let go after a hang, finish every request it took in, then end it: once
    none of them is unread, SIGTERM, on which it accepts nothing new and lets every request in
    flight finish (their callers long gone) before it exits. Its disk is then what that work
    left; ``start`` it again to ask it."""
    assert process.process is not None
    end = time.monotonic() + deadline
    while any(unread for _, unread in _connections(process)):
        assert time.monotonic() < end, f"host {process.host_id} left requests unread"
        time.sleep(0.01)
    os.killpg(process.process.pid, signal.SIGTERM)
    # uvicorn ends on the signal once its shutdown is done: the requests in flight finished.
    assert process.process.wait(timeout=deadline) in (0, -signal.SIGTERM)
    assert process.log.read_text().rstrip().endswith(
        f"Finished server process [{process.process.pid}]")


# --- what a user (or an operator) would find ------------------------------------------------


def leftovers(process: HostProcess) -> list[str]:
    """What the host's disk holds that is neither a graph, its sidecars, a backup nor the
    host's own records: half-made temp files and fork workspaces."""
    with client(process) as host:
        found = [f"data root: {name}" for name in host.list().unknown]
    own = process.data_root / HOST_FOLDER
    for folder in (own / "templates", *sorted((own / "backups").glob("*"))):
        if folder.is_dir():
            found += [f"{folder.relative_to(process.data_root)}/{entry.name}"
                      for entry in folder.iterdir() if entry.name.endswith(".tmp")]
    return found


def backups_on(process: HostProcess, graph_id: str) -> set[str]:
    """The backups the host keeps of a graph, by name."""
    folder = process.data_root / HOST_FOLDER / "backups" / graph_id
    return {entry.stem for entry in folder.glob("*.lbug")} if folder.is_dir() else set()


def rows_match_hosts(database: Database, resources: dict[str, Any],
                     servers: Sequence[HostProcess]) -> None:
    """Every live graph on exactly the host its row names (one being deleted there or gone),
    no graph on a host without a row placing it there, each host's slots its top-level graphs,
    and the operator's checks clean."""
    on_hosts = held(servers)
    with database.session() as session:
        rows = {graph_id: (host_id, status, parent) for graph_id, host_id, status, parent in
                session.execute(select(Graph.id, Graph.host_id, Graph.status,
                                       Graph.parent_graph_id)
                                .where(Graph.status != "deleted"))}
        used = dict(session.execute(select(GraphHost.id, GraphHost.slots_used)).all())
    for graph_id, (host_id, status, _) in rows.items():
        where = [h for h, ids in on_hosts.items() if graph_id in ids]
        assert where == [host_id] or (status not in LIVE and where == []), (graph_id, where)
    for host_id, ids in on_hosts.items():
        assert all(rows.get(g, (None,))[0] == host_id for g in ids), (host_id, ids)
        top_level = [g for g in ids if rows[g][2] is None]
        assert used[host_id] == len(top_level), host_id
    directory = resources["graph_engine"].hosts()
    with database.session() as session:
        assert integrity.files_match_rows(session, directory) == []
        assert integrity.hosts_within_capacity(session) == []
