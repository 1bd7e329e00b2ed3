"""The graph host contract, held by both implementations: ``LocalHost`` in this process, and
``HostClient`` talking to a real ``host serve`` process on a loopback port. Then what only the
server has: its token, its open ``/healthz``, its edge against ids that are paths, and a host
killed and started again on its disk."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioning_pipelines.errors import (
    AnswerTooLarge,
    BackupDamaged,
    Conflict,
    Forbidden,
    HostUnavailable,
    InvalidRequest,
    NotFound,
    QueryTimeout,
    QueryTooLong,
)
from provisioning_pipelines.storage.graph_ids import ANY_GRAPH_ID, GRAPH_ID
from provisioning_pipelines.storage.hosts import GraphHost, LocalHost
from provisioning_pipelines.storage.hosts.client import CircuitBreaker, HostClient
from provisioning_pipelines.storage.ladybug import sidecars
from provisioning_pipelines.storage.ladybug.queries import QueryLimits
from tests.host_serving import PREVIOUS_TOKEN, TOKEN, HostProcess

DDL = [
    "CREATE NODE TABLE Person(id INT64, name STRING, PRIMARY KEY(id))",
    "CREATE REL TABLE Knows(FROM Person TO Person, since INT64)",
]
OTHER_DDL = ["CREATE NODE TABLE Company(id INT64, PRIMARY KEY(id))"]
TIER, CAPACITY = "ladybug-standard", 10


def new_id() -> str:
    return "kg" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostProcess]:
    folder = tmp_path_factory.mktemp("host-server")
    process = HostProcess(folder / "data", folder / "host.log", capacity=CAPACITY)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def local_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-host") / "data"


@pytest.fixture(params=["local", "http"])
def host(request: pytest.FixtureRequest, local_root: Path) -> Iterator[tuple[GraphHost, Path]]:
    """A host and its data root on this machine's disk."""
    if request.param == "local":
        yield LocalHost("host-local", local_root, tier=TIER, capacity=CAPACITY), local_root
        return
    server: HostProcess = request.getfixturevalue("server")
    with HostClient(server.host_id, server.url, TOKEN) as client:
        yield client, server.data_root


def person_rows(host: GraphHost, graph_id: str) -> list[dict]:
    return host.query(graph_id, "MATCH (p:Person) RETURN p.id AS id, p.name AS name "
                      "ORDER BY p.id")


# --- the contract -------------------------------------------------------------------------


def test_create_is_idempotent_on_the_id_and_another_schema_is_refused(host) -> None:
    host, _ = host
    graph_id = new_id()
    made = host.create(graph_id, DDL)
    assert made.created and made.graph_id == graph_id and made.size_bytes > 0
    again = host.create(graph_id, DDL)
    assert not again.created and again.schema == made.schema
    with pytest.raises(Conflict) as refused:
        host.create(graph_id, OTHER_DDL)
    assert graph_id in refused.value.message and "another schema" in refused.value.message
    assert person_rows(host, graph_id) == []  # the refused create touched nothing


def test_a_create_over_a_file_put_there_by_hand_compares_its_tables(host) -> None:
    host, root = host
    source, placed = new_id(), new_id()
    host.create(source, DDL)
    host.checkpoint(source)
    shutil.copyfile(root / f"{source}.lbug", root / f"{placed}.lbug")
    assert not host.create(placed, DDL).created
    other = new_id()
    shutil.copyfile(root / f"{source}.lbug", root / f"{other}.lbug")
    with pytest.raises(Conflict, match="another schema"):
        host.create(other, OTHER_DDL)


def test_fork_copies_the_parents_rows(host) -> None:
    host, _ = host
    parent, child = new_id(), new_id()
    host.create(parent, DDL)
    host.query(parent, "UNWIND [1, 2, 3] AS i CREATE (:Person {id: i, name: 'p' + "
               "CAST(i AS STRING)})", read_only=False)
    host.query(parent, "MATCH (a:Person {id: 1}), (b:Person {id: 2}) "
               "CREATE (a)-[:Knows {since: 2020}]->(b)", read_only=False)
    host.create(child, DDL)
    assert host.fork(child, parent) == {"Person": 3, "Knows": 1}
    assert person_rows(host, child) == person_rows(host, parent)
    assert host.fork(child, parent, tables=["Person"], exclude=["*"]) == {}
    with pytest.raises(NotFound) as missing:
        host.fork(child, new_id())
    assert missing.value.field == "parent_id"


def test_back_up_is_idempotent_and_says_its_sha256(host) -> None:
    host, root = host
    graph_id = new_id()
    host.create(graph_id, DDL)
    host.query(graph_id, "CREATE (:Person {id: 7, name: 'seven'})", read_only=False)
    host.checkpoint(graph_id)
    first = host.back_up(graph_id, "daily-1")
    file = root / ".host" / "backups" / graph_id / "daily-1.lbug"
    assert first.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    assert first.size_bytes == file.stat().st_size
    host.query(graph_id, "CREATE (:Person {id: 8, name: 'eight'})", read_only=False)
    assert host.back_up(graph_id, "daily-1") == first  # a retry: the same backup, kept
    with pytest.raises(NotFound):
        host.back_up(graph_id, "../escape")


def test_a_backup_past_its_retention_is_removed_once_and_the_others_kept(host) -> None:
    host, root = host
    graph_id = new_id()
    host.create(graph_id, DDL)
    for name in ("daily-1", "daily-2"):
        host.back_up(graph_id, name)
    folder = root / ".host" / "backups" / graph_id
    assert host.delete_backup(graph_id, "daily-1") is True
    assert host.delete_backup(graph_id, "daily-1") is False  # a retry removes nothing more
    assert sorted(p.name for p in folder.iterdir()) == ["daily-2.lbug",
                                                        "daily-2.lbug.manifest.json"]
    host.delete(graph_id)  # a final backup outlives its graph and is removed all the same
    assert host.delete_backup(graph_id, "daily-2") is True
    assert not folder.exists()
    with pytest.raises(NotFound):
        host.delete_backup(graph_id, "../escape")


def test_a_restore_swaps_the_backup_in_whole_and_a_damaged_one_touches_nothing(host) -> None:
    host, root = host
    graph_id, other_id = new_id(), new_id()
    for made in (graph_id, other_id):
        host.create(made, DDL)
    host.query(graph_id, "CREATE (:Person {id: 1, name: 'one'})", read_only=False)
    kept = host.back_up(graph_id, "on-demand-1")
    assert kept.location.endswith(f"{graph_id}/on-demand-1.lbug")
    host.query(graph_id, "CREATE (:Person {id: 2, name: 'two'})", read_only=False)
    host.restore(graph_id, graph_id, "on-demand-1", kept.sha256)
    assert person_rows(host, graph_id) == [{"id": 1, "name": "one"}]
    assert host.checksum(graph_id) == kept.sha256
    host.restore(other_id, graph_id, "on-demand-1", kept.sha256)  # into another graph
    assert person_rows(host, other_id) == [{"id": 1, "name": "one"}]
    host.restore(other_id, graph_id, "on-demand-1", kept.sha256)  # again: the same data
    assert person_rows(host, other_id) == [{"id": 1, "name": "one"}]

    host.query(graph_id, "CREATE (:Person {id: 3, name: 'three'})", read_only=False)
    backup = root / ".host" / "backups" / graph_id / "on-demand-1.lbug"
    data = bytearray(backup.read_bytes())
    data[len(data) // 2] ^= 0x01
    backup.write_bytes(bytes(data))
    before = sorted(path.name for path in root.iterdir())
    with pytest.raises(BackupDamaged, match="damaged"):
        host.restore(graph_id, graph_id, "on-demand-1", kept.sha256)
    assert [row["id"] for row in person_rows(host, graph_id)] == [1, 3]  # untouched
    assert sorted(path.name for path in root.iterdir()) == before  # nothing staged is left
    with pytest.raises(NotFound):
        host.restore(graph_id, graph_id, "never-taken", kept.sha256)
    with pytest.raises(NotFound):
        host.restore(new_id(), graph_id, "on-demand-1", kept.sha256)


def test_delete_is_idempotent(host) -> None:
    host, root = host
    graph_id = new_id()
    host.create(graph_id, DDL)
    assert host.delete(graph_id) is True
    assert host.delete(graph_id) is False
    assert not (root / f"{graph_id}.lbug").exists()
    assert graph_id not in host.list().graphs
    with pytest.raises(NotFound):
        host.size(graph_id)
    assert host.create(graph_id, OTHER_DDL).created  # its schema record went with it


def test_list_is_exactly_what_the_disk_holds(host) -> None:
    host, root = host
    made = [new_id(), new_id()]
    for graph_id in made:
        host.create(graph_id, DDL)
    by_hand = new_id()
    shutil.copyfile(root / f"{made[0]}.lbug", root / f"{by_hand}.lbug")
    (root / "notes.txt").write_text("left here by an operator")
    held = host.list()
    assert set(made) | {by_hand} <= set(held.graphs)
    assert "notes.txt" in held.unknown
    on_disk = {name for name in os.listdir(root) if name not in (".host", ".quarantine")}
    graph_files = {f"{graph_id}.lbug" for graph_id in held.graphs}
    beside = {extra.name for name in graph_files for extra in sidecars(root / name)}
    assert graph_files | beside | set(held.unknown) == on_disk
    assert not graph_files & set(held.unknown)
    (root / "notes.txt").unlink()


def test_tables_are_the_schemas_in_creation_order(host) -> None:
    host, _ = host
    graph_id = new_id()
    host.create(graph_id, DDL)
    assert host.tables(graph_id) == [("Person", "NODE"), ("Knows", "REL")]
    with pytest.raises(NotFound, match="graph_id"):
        host.tables(new_id())


def test_quarantine_moves_a_graph_aside_and_out_of_the_listing(host) -> None:
    host, root = host
    graph_id = new_id()
    host.create(graph_id, DDL)
    host.query(graph_id, "CREATE (:Person {id: 1, name: 'kept'})", read_only=False)
    assert host.quarantine(graph_id) is True
    assert graph_id not in host.list().graphs
    assert not (root / f"{graph_id}.lbug").exists()
    aside = [entry.name for entry in (root / ".quarantine").iterdir()]
    assert any(name.startswith(f"{graph_id}.lbug.") for name in aside)  # kept, not deleted
    assert host.quarantine(graph_id) is False
    host.create(graph_id, OTHER_DDL)  # the id is free again, for another schema too
    assert host.tables(graph_id) == [("Company", "NODE")]


def test_a_read_only_query_refuses_a_write(host) -> None:
    host, _ = host
    graph_id = new_id()
    host.create(graph_id, DDL)
    with pytest.raises(InvalidRequest) as refused:
        host.query(graph_id, "CREATE (:Person {id: 1, name: 'x'})")
    assert refused.value.field == "cypher" and "read-only" in refused.value.message
    assert person_rows(host, graph_id) == []
    with pytest.raises(InvalidRequest) as broken:
        host.query(graph_id, "MATCH (n:Nowhere) RETURN n")
    assert broken.value.field == "cypher"
    assert host.query(graph_id, "RETURN $x + 1 AS y", {"x": 41}) == [{"y": 42}]


def test_size_is_the_files_bytes(host) -> None:
    host, root = host
    graph_id = new_id()
    host.create(graph_id, DDL)
    host.checkpoint(graph_id)
    path = root / f"{graph_id}.lbug"
    assert host.size(graph_id) == path.stat().st_size + sum(
        extra.stat().st_size for extra in sidecars(path))
    with pytest.raises(NotFound):
        host.size(new_id())


def test_health_says_tier_capacity_and_what_is_held(host) -> None:
    host, _ = host
    parent = new_id()
    host.create(parent, DDL)
    host.create(f"{parent}_child", DDL)  # a subgraph lives in its parent's slot
    health = host.health()
    assert (health.tier, health.capacity) == (TIER, CAPACITY)
    held = host.list().graphs
    assert f"{parent}_child" in held
    assert health.used == len([g for g in held if GRAPH_ID.fullmatch(g)]) >= 1


@pytest.mark.parametrize("bad", ["../kg0123456789abcdef", "/etc/passwd", "kg0123\x00",
                                 "KG0123456789ABCDEF", "kg0123456789abcdef/..", ""])
def test_an_id_that_is_not_a_graph_id_is_refused_before_any_file(host, bad: str) -> None:
    host, root = host
    before = set(os.listdir(root.parent))
    for call in (lambda: host.create(bad, DDL), lambda: host.size(bad),
                 lambda: host.delete(bad), lambda: host.fork(bad, bad)):
        with pytest.raises(NotFound) as refused:
            call()
        assert refused.value.field == "graph_id"
    assert set(os.listdir(root.parent)) == before


# --- customers' queries (run_query) ---------------------------------------------------------

#: A query that runs for minutes over 1,500 people (3.4e9 rows filtered), unless interrupted.
SLOW = ("MATCH (a:Person), (b:Person), (c:Person) WHERE a.id + b.id + c.id = -1 "
        "RETURN count(*) AS n")


def limits(**changed: float) -> QueryLimits:
    return replace(QueryLimits(), **changed)


def test_a_writers_rows_are_read_back_as_the_engine_holds_them(host) -> None:
    host, _ = host
    graph_id = new_id()
    host.create(graph_id, DDL)
    wrote = host.run_query(graph_id, "CREATE (:Person {id: 1, name: 'Ada'})-[:Knows {since: "
                           "1843}]->(:Person {id: 2, name: $name})", {"name": "Charles"},
                           read_only=False)
    assert wrote.rows == [] and not wrote.truncated
    found = host.run_query(graph_id, "MATCH (a:Person)-[k:Knows]->(b:Person) RETURN a, k, "
                           "b.name AS name, date('2024-02-29') AS day, timestamp("
                           "'2024-02-29 10:11:12') AS at")
    assert found.columns == ["a", "k", "name", "day", "at"]
    assert found.row_count == 1 and found.elapsed_ms >= 0
    [[person, knows, name, day, at]] = found.rows
    assert person == {"_kind": "node", "_label": "Person", "_id": person["_id"], "id": 1,
                      "name": "Ada"}
    assert knows == {"_kind": "rel", "_label": "Knows", "_id": knows["_id"],
                     "_src": person["_id"], "_dst": knows["_dst"], "since": 1843}
    assert (name, day, at) == ("Charles", "2024-02-29", "2024-02-29T10:11:12")
    # What the engine holds, read through the control plane's own query.
    assert person_rows(host, graph_id) == [{"id": 1, "name": "Ada"},
                                           {"id": 2, "name": "Charles"}]
    assert json.loads(json.dumps(found.to_dict())) == found.to_dict()


def test_a_readers_write_is_refused_by_the_engine_and_changes_nothing(host) -> None:
    host, _ = host
    graph_id = new_id()
    host.create(graph_id, DDL)
    host.run_query(graph_id, "CREATE (:Person {id: 1, name: 'Ada'})", read_only=False)
    for write in ("CREATE (:Person {id: 2, name: 'Eve'})",
                  "MATCH (p:Person) SET p.name = 'Eve'", "MATCH (p:Person) DELETE p",
                  "RETURN 1 AS x; CREATE (:Person {id: 3, name: 'Eve'})",
                  "CREATE NODE TABLE Other(id INT64, PRIMARY KEY(id))"):
        with pytest.raises(Forbidden) as refused:
            host.run_query(graph_id, write)
        assert refused.value.field == "query"
    assert person_rows(host, graph_id) == [{"id": 1, "name": "Ada"}]
    assert host.tables(graph_id) == [("Person", "NODE"), ("Knows", "REL")]
    host.run_query(graph_id, "MATCH (p:Person) DETACH DELETE p", read_only=False)  # a writer's
    assert person_rows(host, graph_id) == []


def test_a_read_sees_every_write_made_since_the_last_one(host) -> None:
    host, _ = host
    graph_id = new_id()
    host.create(graph_id, DDL)
    count = "MATCH (p:Person) RETURN count(*) AS n"
    assert host.run_query(graph_id, count).rows == [[0]]  # the reader is open now
    host.query(graph_id, "CREATE (:Person {id: 1, name: 'a'})", read_only=False)
    assert host.run_query(graph_id, count).rows == [[1]]
    host.run_query(graph_id, "CREATE (:Person {id: 2, name: 'b'})", read_only=False)
    assert host.run_query(graph_id, count).rows == [[2]]
    host.delete(graph_id)
    with pytest.raises(NotFound):
        host.run_query(graph_id, count)


def test_a_query_past_its_timeout_is_interrupted_and_the_next_one_answers(host) -> None:
    host, _ = host
    graph_id = new_id()
    host.create(graph_id, DDL)
    host.run_query(graph_id, "UNWIND range(1, 1500) AS i CREATE (:Person {id: i, name: 'p'})",
                   read_only=False)
    started = time.monotonic()
    with pytest.raises(QueryTimeout) as stopped:
        host.run_query(graph_id, SLOW, limits=limits(timeout_seconds=0.3))
    took = time.monotonic() - started
    assert 0.3 <= took < 0.3 + 1.5, took  # ran until the limit, and no longer
    assert stopped.value.status_code == 408 and "timeout_seconds" in stopped.value.message
    assert host.run_query(graph_id, "MATCH (p:Person) RETURN count(*)").rows == [[1500]]
    with pytest.raises(Forbidden, match="settings"):  # a query cannot lift its own limit
        host.run_query(graph_id, f"CALL timeout=60000; {SLOW}",
                       limits=limits(timeout_seconds=0.3))


def test_rows_past_the_cap_are_cut_and_said_to_be(host) -> None:
    host, _ = host
    graph_id = new_id()
    host.create(graph_id, DDL)
    cut = host.run_query(graph_id, "UNWIND range(1, 25) AS i RETURN i",
                         limits=limits(max_rows=10))
    assert cut.rows == [[i] for i in range(1, 11)] and cut.row_count == 10 and cut.truncated
    whole = host.run_query(graph_id, "UNWIND range(1, 10) AS i RETURN i",
                           limits=limits(max_rows=10))
    assert whole.row_count == 10 and not whole.truncated
    assert QueryLimits().max_rows == 10_000


def test_the_answers_size_and_the_querys_length_are_bounded(host) -> None:
    host, _ = host
    graph_id = new_id()
    host.create(graph_id, DDL)
    with pytest.raises(AnswerTooLarge) as large:
        host.run_query(graph_id, "UNWIND range(1, 100) AS i RETURN i, $text AS text",
                       {"text": "x" * 100}, limits=limits(max_answer_bytes=1000))
    assert large.value.status_code == 422 and "max_answer_bytes" in large.value.message
    query = "RETURN 1 AS one"
    assert host.run_query(graph_id, query, limits=limits(max_query_length=len(query))).rows \
        == [[1]]
    with pytest.raises(QueryTooLong) as long:
        host.run_query(graph_id, query + " ", limits=limits(max_query_length=len(query)))
    assert long.value.status_code == 413 and "max_query_length" in long.value.message


def test_a_cypher_error_is_the_engines_message_without_a_path(host) -> None:
    host, root = host
    graph_id = new_id()
    host.create(graph_id, DDL)
    for query, said in (("MATCH (n:Nowhere) RETURN n", "Nowhere"),
                        ("MATCH (n:Person RETURN n", "Parser exception")):
        with pytest.raises(InvalidRequest) as broken:
            host.run_query(graph_id, query)
        assert type(broken.value) is InvalidRequest and broken.value.status_code == 422
        assert said in broken.value.message and str(root) not in broken.value.message


@pytest.mark.parametrize("query", [
    "LOAD FROM '/etc/hostname' (file_format='csv', header=false) RETURN *",
    "COPY (MATCH (p:Person) RETURN p.id) TO '/tmp/out.csv'",
    "COPY Person FROM '/tmp/people.csv'", "EXPORT DATABASE '/tmp/everything'",
    "INSTALL json", "load  extension json", "ATTACH '/tmp/x.lbug' AS x (dbtype lbug)"])
def test_a_query_cannot_reach_the_servers_files(host, query: str) -> None:
    host, _ = host
    graph_id = new_id()
    host.create(graph_id, DDL)
    for read_only in (True, False):
        with pytest.raises(Forbidden):
            host.run_query(graph_id, query, read_only=read_only)
    # Words of the same name elsewhere are only words.
    assert host.run_query(graph_id, "WITH 'LOAD FROM x' AS copy RETURN copy AS load").rows \
        == [["LOAD FROM x"]]


#: JSON values the engine takes as parameters: its refusals (an empty list, a list of nulls,
#: a struct with a null field) are 422s, shown in docs/api.md.
SCALARS = (st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=20) | st.booleans())
VALUES = (SCALARS | st.none()
          | st.lists(st.integers(-2**63, 2**63 - 1), min_size=1, max_size=5)
          | st.lists(st.text(max_size=5), min_size=1, max_size=5)
          | st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), SCALARS,
                            max_size=4))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), VALUES,
                              min_size=1, max_size=4))
def test_parameters_come_back_as_the_json_they_were(host, values: dict) -> None:
    host, _ = host
    graph_id = shared_graph(host)
    names = sorted(values)
    found = host.run_query(graph_id, "RETURN " + ", ".join(f"${name} AS {name}"
                                                           for name in names), values)
    assert found.columns == names
    assert found.rows == [[values[name] for name in names]]
    assert json.loads(json.dumps(found.rows)) == found.rows


_SHARED: dict[str, str] = {}


def shared_graph(host: GraphHost) -> str:
    """One graph per host for the hypothesis examples (a create per example is slow)."""
    if host.host_id not in _SHARED:
        _SHARED[host.host_id] = new_id()
        host.create(_SHARED[host.host_id], DDL)
    return _SHARED[host.host_id]


def test_a_local_reader_sees_a_write_made_by_another_process(tmp_path: Path) -> None:
    host = LocalHost("host-local", tmp_path, tier=TIER, capacity=CAPACITY)
    graph_id = new_id()
    host.create(graph_id, DDL)
    count = "MATCH (p:Person) RETURN count(*) AS n"
    assert host.run_query(graph_id, count).rows == [[0]]
    writer = ("import ladybug, sys; db = ladybug.Database(sys.argv[1]); "
              "ladybug.Connection(db).execute(\"CREATE (:Person {id: 7, name: 'x'})\")")
    subprocess.run([sys.executable, "-c", writer, str(tmp_path / f"{graph_id}.lbug")],
                   check=True, timeout=60)
    assert host.run_query(graph_id, count).rows == [[1]]
    assert len(host.engine.readers) >= 1
    host.delete(graph_id)  # its reader is closed first
    assert host.engine.readers.evict(tmp_path / f"{graph_id}.lbug") is False


# --- the server only ----------------------------------------------------------------------


def test_every_path_but_healthz_needs_the_token_and_the_previous_one_is_accepted(server
                                                                                ) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-of-enough-length"},
                    {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        for method, path in (("GET", "/v1/graphs"), ("GET", "/nowhere"),
                             ("PUT", f"/v1/graphs/{new_id()}")):
            answer = httpx.request(method, f"{server.url}{path}", headers=headers, timeout=30)
            assert answer.status_code == 401, (headers, path)
            assert answer.json()["error"] == "unauthorized"
    for token in (TOKEN, PREVIOUS_TOKEN):
        answer = httpx.get(f"{server.url}/v1/graphs", timeout=30,
                           headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200 and "graphs" in answer.json()
    health = httpx.get(f"{server.url}/healthz", timeout=30)
    assert health.status_code == 200
    assert set(health.json()) == {"ok", "tier", "capacity", "used"}


def test_a_clients_mistake_is_never_a_5xx(server) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    graph = f"{server.url}/v1/graphs/{new_id()}"
    cases = [
        ("PUT", graph, b"not json", 422), ("PUT", graph, b"[1, 2]", 422),
        ("PUT", graph, b'{"ddl": "CREATE"}', 422), ("PUT", graph, b"{}", 422),
        ("PUT", graph, b'{"ddl": ["CREATE NODE TABLE"]}', 422),
        ("PUT", graph, b"x" * (1024 * 1024 + 1), 413),
        ("POST", f"{graph}/query", b'{"cypher": "RETURN 1"}', 404),
        ("POST", f"{graph}/fork", b"{}", 422),
        ("DELETE", f"{server.url}/v1/graphs", b"", 405),
    ]
    for method, url, body, status in cases:
        answer = httpx.request(method, url, content=body, headers=auth, timeout=30)
        assert answer.status_code == status, (method, url, body[:40], answer.text)
        assert set(answer.json()) == {"error", "message", "field"}


PATHS = st.one_of(
    st.sampled_from(["..", "../..", "../etc/passwd", "/etc/passwd", "kg0123456789abcdef/../x",
                     "kg0123456789abcdef\x00", "\x00", "%2e%2e", ".host", "kg" + "0" * 65,
                     "kg0123456789abcdef_" + "a" * 21, "kg0123456789abcdef.lbug"]),
    st.text(min_size=1, max_size=40),
    st.builds(lambda a, b: a + b, st.sampled_from(["kg0123456789abcdef", "../", "/"]),
              st.text(max_size=10)),
)


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(graph_id=PATHS)
def test_an_id_at_the_server_edge_never_reaches_a_path(server, graph_id: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    outside = set(os.listdir(server.data_root.parent))
    held = set(os.listdir(server.data_root))
    segment = quote(graph_id, safe="")
    for method, suffix, body in (("PUT", "", {"ddl": OTHER_DDL}), ("GET", "/size", None),
                                 ("DELETE", "", None), ("PUT", "/backups/b1", None)):
        answer = httpx.request(method, f"{server.url}/v1/graphs/{segment}{suffix}", json=body,
                               headers=auth, timeout=30)
        assert answer.status_code < 500, (graph_id, method, answer.text)
        if not ANY_GRAPH_ID.fullmatch(graph_id):
            assert answer.status_code in (404, 405, 422), (graph_id, method, answer.text)
    assert set(os.listdir(server.data_root.parent)) == outside
    made = set(os.listdir(server.data_root)) - held
    assert all(ANY_GRAPH_ID.fullmatch(name.removesuffix(".lbug")) for name in made), made


def test_host_serve_without_a_token_stops_with_one_line(tmp_path: Path) -> None:
    import subprocess

    process = HostProcess(tmp_path / "data", tmp_path / "host.log")
    env = {key: value for key, value in process.env.items() if key != "GRAPH_HOST_TOKEN"}
    done = subprocess.run(process.command(), env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: GRAPH_HOST_TOKEN: required, at least 16 characters (the bearer token every "
        "caller of the host sends)"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_killed_host_fails_fast_by_its_id_then_serves_its_disk_again(tmp_path: Path) -> None:
    process = HostProcess(tmp_path / "data", tmp_path / "host.log", host_id="host-b").start()
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=3, cool_down=30, clock=clock)
    timeout = 5.0
    try:
        with HostClient("host-b", process.url, TOKEN, timeout=timeout, connect_timeout=timeout,
                        attempts=3, backoff=0.01, breaker=breaker) as client:
            graphs = [new_id(), new_id()]
            for graph_id in graphs:
                client.create(graph_id, DDL)
            before = client.list()
            process.kill()

            started = time.monotonic()
            with pytest.raises(HostUnavailable) as down:
                client.list()
            assert time.monotonic() - started < 3 * timeout + 1
            message = down.value.message
            assert "graph host host-b is unavailable" in message
            assert "127.0.0.1" not in message and str(process.port) not in message
            assert down.value.status_code == 503
            assert down.value.reached is False  # refused connections: nothing was sent
            assert breaker.state == "open"

            with pytest.raises(HostUnavailable, match="3 calls in a row failed") as held:
                client.size(graphs[0])  # fails at once: the host is not called
            assert held.value.reached is False

            process.start()
            with pytest.raises(HostUnavailable):  # still cooling down, though it is back
                client.list()
            clock.now += 31
            assert breaker.state == "half-open"
            assert client.list() == before  # its disk, as it was
            assert breaker.state == "closed"
            assert set(graphs) <= set(client.list().graphs)
            assert client.create(graphs[0], DDL).created is False
    finally:
        process.stop()


def test_a_fork_is_not_retried_and_a_read_is(tmp_path: Path) -> None:
    """Only repeatable calls are tried again: a fork that met a dead host is not sent twice."""
    calls: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        raise httpx.ConnectError("refused", request=request)

    breaker = CircuitBreaker(threshold=100)
    with HostClient("host-c", "http://127.0.0.1:9", TOKEN, attempts=3, backoff=0,
                    breaker=breaker, transport=httpx.MockTransport(refuse)) as client:
        graph_id = new_id()
        with pytest.raises(HostUnavailable):
            client.fork(graph_id, new_id())
        assert len(calls) == 1
        with pytest.raises(HostUnavailable):
            client.query(graph_id, "RETURN 1")
        assert len(calls) == 4
        with pytest.raises(HostUnavailable):
            client.query(graph_id, "CREATE (:P {id: 1})", read_only=False)
        assert len(calls) == 5


def test_sigterm_lets_a_request_in_flight_finish(tmp_path: Path) -> None:
    """A create whose body is half sent when SIGTERM arrives is answered, then the server ends.
    ``Expect: 100-continue`` tells the test when the server is inside the request: it answers
    ``100 Continue`` when the endpoint starts reading the body."""
    import json
    import signal
    import socket

    process = HostProcess(tmp_path / "data", tmp_path / "host.log").start()
    try:
        graph_id = new_id()
        body = json.dumps({"ddl": DDL}).encode()
        with socket.create_connection(("127.0.0.1", process.port), timeout=60) as conn:
            conn.sendall(
                f"PUT /v1/graphs/{graph_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode())
            assert conn.recv(1024).startswith(b"HTTP/1.1 100")
            conn.sendall(body[:10])
            assert process.process is not None
            process.process.send_signal(signal.SIGTERM)
            with pytest.raises(OSError):  # stops accepting new connections...
                for _ in range(600):  # ...once the signal is handled (bounded polling)
                    socket.create_connection(("127.0.0.1", process.port), timeout=5).close()
                    time.sleep(0.05)
            conn.sendall(body[10:])  # ...and still finishes the one in flight
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                answer += chunk
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), answer
        assert json.loads(payload)["created"] is True
        assert process.process.wait(timeout=60) in (0, -signal.SIGTERM)
        assert (process.data_root / f"{graph_id}.lbug").is_file()
    finally:
        process.stop()


def test_a_body_that_stalls_is_answered_408_and_the_connection_closed(tmp_path: Path) -> None:
    """The server's own bound on a body's time (0.5 s here), not the test's timing: the test
    only waits for the answer."""
    import socket

    process = HostProcess(tmp_path / "data", tmp_path / "host.log")
    process.env["GRAPH_HOST_BODY_TIMEOUT_SECONDS"] = "0.5"
    process.start()
    try:
        graph_id = new_id()
        with socket.create_connection(("127.0.0.1", process.port), timeout=60) as conn:
            conn.sendall(f"PUT /v1/graphs/{graph_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n"
                         '{"ddl": ['.encode())
            answer = b""
            while chunk := conn.recv(65536):  # the server closes the connection after it
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b'"error":"request_timeout"' in answer and b'"field":"body"' in answer
        assert not (process.data_root / f"{graph_id}.lbug").exists()
    finally:
        process.stop()
