"""What a move asks of two graph hosts, held by both implementations (two ``LocalHost``s, and
two real ``host serve`` processes copying from each other over HTTP): a frozen graph refuses
writes and answers reads, and keeps frozen across a restart; a copy is checked against the
sha256 it was asked for before it is swapped in, and a copy cut off half-way leaves the target
as it was."""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning_pipelines.errors import (
    BackupDamaged,
    GraphMoving,
    HostUnavailable,
    NotFound,
)
from provisioning_pipelines.storage.hosts import GraphHost, LocalHost
from provisioning_pipelines.storage.hosts.client import HostClient
from provisioning_pipelines.storage.hosts.contract import HostAddress
from provisioning_pipelines.storage.ladybug.queries import QueryLimits
from tests.host_serving import TOKEN, HostProcess
from tests.tcp_proxy import TcpProxy

DDL = ["CREATE NODE TABLE Person(id INT64, name STRING, PRIMARY KEY(id))"]
TIER = "ladybug-standard"


def new_id() -> str:
    return "kg" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[HostProcess]]:
    folder = tmp_path_factory.mktemp("move-hosts")
    made = [HostProcess(folder / name / "data", folder / f"{name}.log", host_id=name)
            for name in ("host-a", "host-b")]
    for process in made:
        process.data_root.parent.mkdir(parents=True, exist_ok=True)
        process.launch()
    for process in made:
        process.wait_ready()
    yield made
    for process in made:
        process.stop()


Pair = tuple[GraphHost, GraphHost, HostAddress, Path, Path]


@pytest.fixture(params=["local", "http"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    """A source host, a target host, the source's address and both data roots."""
    if request.param == "local":
        roots = tmp_path / "a", tmp_path / "b"
        source = LocalHost("host-a", roots[0], tier=TIER, capacity=5)
        target = LocalHost("host-b", roots[1], tier=TIER, capacity=5)
        yield source, target, HostAddress("host-a", None, str(roots[0])), *roots
        return
    servers: list[HostProcess] = request.getfixturevalue("servers")
    a, b = servers
    with HostClient(a.host_id, a.url, TOKEN) as source, \
            HostClient(b.host_id, b.url, TOKEN) as target:
        yield source, target, HostAddress(a.host_id, a.url, str(a.data_root)), \
            a.data_root, b.data_root


def names(host: GraphHost, graph_id: str) -> list[str]:
    found = host.query(graph_id, "MATCH (p:Person) RETURN p.name AS name ORDER BY p.id")
    return [row["name"] for row in found]


def write(host: GraphHost, graph_id: str, person: int) -> None:
    host.run_query(graph_id, "CREATE (:Person {id: $id, name: $name})",
                   {"id": person, "name": f"p{person}"}, read_only=False)


def test_a_frozen_graph_answers_reads_and_refuses_writes_until_thawed(pair: Pair) -> None:
    source, _, _, root, _ = pair
    graph_id = new_id()
    source.create(graph_id, DDL)
    write(source, graph_id, 1)
    sha256 = source.freeze(graph_id)
    file = root / f"{graph_id}.lbug"
    assert sha256 == hashlib.sha256(file.read_bytes()).hexdigest()  # checkpointed: it is all
    assert source.freeze(graph_id) == sha256  # repeatable, and nothing changed
    with pytest.raises(GraphMoving, match="moving to another host") as refused:
        write(source, graph_id, 2)
    assert refused.value.status_code == 503
    with pytest.raises(GraphMoving):
        source.query(graph_id, "CREATE (:Person {id: 3, name: 'p3'})", read_only=False)
    # A writer's read is not a write: it is answered.
    read = source.run_query(graph_id, "MATCH (p:Person) RETURN count(p) AS n", read_only=False,
                            limits=QueryLimits())
    assert read.rows == [[1]]
    assert names(source, graph_id) == ["p1"]
    assert source.checksum(graph_id) == sha256  # nothing reached the file
    assert source.thaw(graph_id) is True
    assert source.thaw(graph_id) is False
    write(source, graph_id, 2)
    assert names(source, graph_id) == ["p1", "p2"]


def test_a_copy_is_the_sources_graph_and_a_changed_source_is_refused(pair: Pair) -> None:
    source, target, address, _, target_root = pair
    graph_id = new_id()
    source.create(graph_id, DDL)
    for person in (1, 2, 3):
        write(source, graph_id, person)
    source.checkpoint(graph_id)
    sha256 = source.checksum(graph_id)
    target.create(graph_id, DDL)
    target.copy_from(graph_id, address, sha256)
    assert names(target, graph_id) == ["p1", "p2", "p3"]
    assert target.checksum(graph_id) == sha256
    target.copy_from(graph_id, address, sha256)  # repeatable: the same bytes again
    assert names(target, graph_id) == ["p1", "p2", "p3"]

    write(source, graph_id, 4)  # the source moves on: the sha256 asked for is not its own
    source.checkpoint(graph_id)
    before = sorted(path.name for path in target_root.iterdir())
    with pytest.raises(BackupDamaged, match="changed while it was copied"):
        target.copy_from(graph_id, address, sha256)
    assert names(target, graph_id) == ["p1", "p2", "p3"]  # untouched
    assert sorted(path.name for path in target_root.iterdir()) == before  # no temp file left
    with pytest.raises(NotFound):
        target.copy_from(new_id(), address, sha256)  # not made on the target
    missing = new_id()
    target.create(missing, DDL)
    with pytest.raises(NotFound, match="not on host host-a"):
        target.copy_from(missing, address, sha256)  # not on the source


def test_deleting_a_frozen_graph_ends_its_freeze(pair: Pair) -> None:
    source, _, _, _, _ = pair
    graph_id = new_id()
    source.create(graph_id, DDL)
    source.freeze(graph_id)
    assert source.delete(graph_id) is True
    source.create(graph_id, DDL)  # the same id made again takes writes
    write(source, graph_id, 1)
    assert names(source, graph_id) == ["p1"]


def test_a_freeze_outlives_the_host_servers_restart(servers: list[HostProcess]) -> None:
    a = servers[0]
    graph_id = new_id()
    with HostClient(a.host_id, a.url, TOKEN) as client:
        client.create(graph_id, DDL)
        write(client, graph_id, 1)
        client.freeze(graph_id)
    a.kill()
    a.start()
    with HostClient(a.host_id, a.url, TOKEN) as client:
        with pytest.raises(GraphMoving):
            write(client, graph_id, 2)
        assert names(client, graph_id) == ["p1"]
        client.thaw(graph_id)
        write(client, graph_id, 2)


def test_a_copy_cut_off_half_way_leaves_the_target_as_it_was(servers: list[HostProcess]
                                                             ) -> None:
    a, b = servers
    graph_id = new_id()
    with HostClient(a.host_id, a.url, TOKEN) as source, \
            HostClient(b.host_id, b.url, TOKEN, attempts=1) as target:
        source.create(graph_id, DDL)
        source.run_query(graph_id, "UNWIND range(1, 20000) AS i CREATE (:Person {id: i, "
                         "name: 'someone with a long name ' + string(i)})", read_only=False)
        sha256 = source.freeze(graph_id)
        target.create(graph_id, DDL)
        # The target reaches the source through a proxy that is slow, then gone.
        proxy = TcpProxy("127.0.0.1", a.port).start()
        proxy.delay(0.05, "answers")
        outcome: list[BaseException] = []

        def copy() -> None:
            try:
                target.copy_from(graph_id, HostAddress(a.host_id, proxy.url,
                                                       str(a.data_root)), sha256)
            except BaseException as exc:  # the test looks at it
                outcome.append(exc)

        worker = threading.Thread(target=copy)
        worker.start()
        proxy.wait_for(lambda p: p.forwarded["answers"] > 0)
        proxy.stop()
        worker.join(timeout=60)
        assert len(outcome) == 1 and isinstance(outcome[0], HostUnavailable), outcome
        assert "host-a" in outcome[0].message
        assert names(target, graph_id) == []  # as it was made: empty
        assert [path.name for path in b.data_root.iterdir() if ".tmp" in path.name] == []
        target.copy_from(graph_id, HostAddress(a.host_id, a.url, str(a.data_root)), sha256)
        assert len(names(target, graph_id)) == 20000
