"""``POST /v1/graphs/{id}/query`` over real HTTP: what a writer writes a reader reads back as the
engine holds it, a reader's write is refused by the engine, each limit is a 4xx naming it, and
who may ask of which graph in which state (404, 409, 503); on the embedded default's in-process
host and through a real host server process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance
from sqlalchemy import update

from provisioning_pipelines.flows import GRAPH_FLOW, SubscriptionConfig
from provisioning_pipelines.services.capacity.hosts import graph_host
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import Graph, GraphHost, GraphUser
from tests.api.helpers import Api, make_api, serve
from tests.api.test_lifecycle_api import active_graph, finished
from tests.factories import NewUser, new_customer, paid_graph_subscription
from tests.flows.helpers import run_direct
from tests.flows.host_servers import control_plane, register, start_hosts, stop_hosts

MATCH_ONE = "MATCH (e:Entity {identifier: $id}) RETURN e.name AS name"
#: Minutes of work over 1,500 entities (3.4e9 rows filtered), unless interrupted.
SLOW = ("MATCH (a:Entity), (b:Entity), (c:Entity) WHERE a.name + b.name + c.name = 'never' "
        "RETURN count(*) AS n")


def member(api: Api, graph_id: str, role: str) -> NewUser:
    user = new_customer(api.database)
    with api.database.session() as session:
        session.add(GraphUser(graph_id=graph_id, user_id=user.user_id, role=role))
    return user


def ask(api: Api, api_key: str, graph_id: str, query: str, **parameters: Any) -> Any:
    with api.client(api_key) as client:
        return client.post(f"/v1/graphs/{graph_id}/query",
                           json={"query": query, "parameters": parameters})


def engine_holds(api: Api, graph_id: str) -> list[dict[str, Any]]:
    """The rows as the engine holds them, read by the control plane's own query."""
    hosts = api.executor.resources["graph_engine"].hosts()
    with api.database.session() as session:
        host = graph_host(session, hosts, session.get(Graph, graph_id).host_id)
    return host.query(graph_id, "MATCH (e:Entity) RETURN e.identifier AS id, e.name AS name, "
                      "e.aliases AS aliases ORDER BY e.identifier")


def test_a_writers_rows_are_read_back_by_a_reader_whose_writes_are_refused(api: Api) -> None:
    owner = new_customer(api.database)
    graph_id = active_graph(api, owner.api_key)
    writer, reader = member(api, graph_id, "writer"), member(api, graph_id, "reader")
    stranger = new_customer(api.database)

    wrote = ask(api, writer.api_key, graph_id,
                "CREATE (:Entity {identifier: $id, name: $name, aliases: $aliases, "
                "created_at: timestamp('2024-05-06 07:08:09')})",
                id="e1", name="Acme", aliases=["ACME", "Acme Inc."])
    assert wrote.status_code == 200, wrote.text
    assert wrote.json() == {"columns": [], "rows": [], "row_count": 0, "truncated": False,
                            "elapsed_ms": wrote.json()["elapsed_ms"]}

    read = ask(api, reader.api_key, graph_id, "MATCH (e:Entity) RETURN e, e.name AS name, "
               "e.created_at AS at ORDER BY e.identifier")
    assert read.status_code == 200, read.text
    answer = read.json()
    assert answer["columns"] == ["e", "name", "at"] and answer["row_count"] == 1
    [[entity, name, at]] = answer["rows"]
    assert (entity["_kind"], entity["_label"], entity["identifier"], entity["aliases"]) == \
        ("node", "Entity", "e1", ["ACME", "Acme Inc."])
    assert (name, at) == ("Acme", "2024-05-06T07:08:09")
    assert engine_holds(api, graph_id) == [{"id": "e1", "name": "Acme",
                                            "aliases": ["ACME", "Acme Inc."]}]

    for write in ("CREATE (:Entity {identifier: 'e2'})", "MATCH (e:Entity) DETACH DELETE e",
                  "MATCH (e:Entity) SET e.name = 'Evil'"):
        refused = ask(api, reader.api_key, graph_id, write)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == "forbidden" and refused.json()["field"] == "query"
    assert engine_holds(api, graph_id) == [{"id": "e1", "name": "Acme",
                                            "aliases": ["ACME", "Acme Inc."]}]
    assert ask(api, owner.api_key, graph_id, MATCH_ONE, id="e1").json()["rows"] == [["Acme"]]

    for who, which in ((stranger, graph_id), (owner, "kg" + "0" * 16), (owner, "nonsense")):
        missing = ask(api, who.api_key, which, MATCH_ONE, id="e1")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    theirs = ask(api, stranger.api_key, graph_id, "MATCH (").json()
    nobodys = ask(api, stranger.api_key, "kg" + "1" * 16, "MATCH (").json()
    assert theirs == nobodys | {"message": f"graph_id: no graph {graph_id!r}"}

    broken = ask(api, reader.api_key, graph_id, "MATCH (n:Nowhere) RETURN n")
    assert broken.status_code == 422 and broken.json()["error"] == "invalid_request"
    assert "Nowhere" in broken.json()["message"] and "/" not in broken.json()["message"]
    with api.client(reader.api_key) as client:
        for body, field in (({"query": 5}, "query"), ({"query": ""}, "query"),
                            ({"query": "RETURN 1", "parameters": []}, "parameters"),
                            ({"query": "RETURN 1", "other": 1}, "other")):
            bad = client.post(f"/v1/graphs/{graph_id}/query", json=body)
            assert bad.status_code == 422 and bad.json()["field"] == field, (body, bad.text)
        files = client.post(f"/v1/graphs/{graph_id}/query",
                            json={"query": "LOAD FROM '/etc/hostname' RETURN *"})
        assert files.status_code == 403


def test_a_query_is_all_of_its_statements_or_none_and_leaves_no_transaction_open(
        api: Api) -> None:
    owner = new_customer(api.database)
    graph_id = active_graph(api, owner.api_key)
    reader, other_reader = member(api, graph_id, "reader"), member(api, graph_id, "reader")

    # its second statement fails: the first one's write is not kept
    half = ask(api, owner.api_key, graph_id,
               "CREATE (:Entity {identifier: 'half', name: 'half'}); MATCH (n:Nowhere) RETURN n")
    assert half.status_code == 422 and "Nowhere" in half.json()["message"], half.text
    assert engine_holds(api, graph_id) == []
    whole = ask(api, owner.api_key, graph_id, "CREATE (:Entity {identifier: 'a', name: 'A'}); "
                "CREATE (:Entity {identifier: 'b', name: 'B'}); MATCH (e:Entity) RETURN count(e)")
    assert whole.status_code == 200 and whole.json()["rows"] == [[2]], whole.text

    # a query's own transaction statements are refused, named, before anything runs
    for query in ("BEGIN TRANSACTION; CREATE (:Entity {identifier: 'r'}); COMMIT",
                  "begin transaction read only; MATCH (e:Entity) RETURN count(e)",
                  "MATCH (e:Entity) RETURN count(e); ROLLBACK"):
        refused = ask(api, reader.api_key, graph_id, query)
        assert refused.status_code == 422, (query, refused.text)
        assert refused.json()["field"] == "query"
        assert "run as one transaction" in refused.json()["message"]
    assert [row["id"] for row in engine_holds(api, graph_id)] == ["a", "b"]
    # a name is still a name
    named = ask(api, reader.api_key, graph_id, "MATCH (e:Entity) WITH e.name AS commit "
                "RETURN commit ORDER BY commit")
    assert named.status_code == 200 and named.json()["columns"] == ["commit"], named.text

    # a reader's write refused half-way through a query leaves the kept reader's connection
    # as it was for the next caller
    for _ in range(3):
        refused = ask(api, reader.api_key, graph_id,
                      "MATCH (e:Entity) RETURN count(e); CREATE (:Entity {identifier: 'r'})")
        assert refused.status_code == 403, refused.text
        after = ask(api, other_reader.api_key, graph_id,
                    "MATCH (e:Entity) RETURN count(e) AS n")
        assert after.status_code == 200 and after.json()["columns"] == ["n"], after.text
    assert [row["id"] for row in engine_holds(api, graph_id)] == ["a", "b"]


@pytest.fixture
def limited_api(database: Database, resources: dict[str, Any],
                dagster_instance: DagsterInstance) -> Iterator[Api]:
    """The app with small limits for the large tier (the test graphs' tier), default ones for
    the others."""
    app, executor = make_api(
        database, resources, dagster_instance,
        QUERY_TIMEOUT_SECONDS="ladybug-standard=30,ladybug-large=0.5,ladybug-xlarge=30,"
                              "ladybug-shared=30",
        QUERY_MAX_ROWS="ladybug-standard=10000,ladybug-large=20,ladybug-xlarge=10000,"
                       "ladybug-shared=10000",
        QUERY_MAX_ANSWER_BYTES="4000", QUERY_MAX_LENGTH="300")
    with serve(app) as url:
        yield Api(url, database, executor)
    executor.close()


def test_each_limit_is_a_4xx_naming_it_and_the_next_query_answers(limited_api: Api) -> None:
    api = limited_api
    owner = new_customer(api.database)
    graph_id = active_graph(api, owner.api_key)
    made = ask(api, owner.api_key, graph_id, "UNWIND range(1, 1500) AS i CREATE (:Entity "
               "{identifier: 'e' + string(i), name: string(i)})")
    assert made.status_code == 200, made.text

    started = time.monotonic()
    stopped = ask(api, owner.api_key, graph_id, SLOW)
    took = time.monotonic() - started
    assert stopped.status_code == 408, stopped.text
    assert stopped.json()["error"] == "query_timeout" and "timeout" in stopped.json()["message"]
    assert 0.5 <= took < 0.5 + 1.5, took  # interrupted at its limit, not run to its end
    assert ask(api, owner.api_key, graph_id, "MATCH (e:Entity) RETURN count(*)").json()[
        "rows"] == [[1500]]

    cut = ask(api, owner.api_key, graph_id, "MATCH (e:Entity) RETURN e.identifier").json()
    assert cut["row_count"] == 20 and len(cut["rows"]) == 20 and cut["truncated"] is True

    large = ask(api, owner.api_key, graph_id, "UNWIND range(1, 10) AS i RETURN $text",
                text="x" * 1000)
    assert large.status_code == 422 and large.json()["error"] == "answer_too_large"

    long = ask(api, owner.api_key, graph_id, "RETURN 1 AS one" + " " * 300)
    assert long.status_code == 413 and long.json()["error"] == "query_too_long"
    assert "max_query_length" in long.json()["message"]
    assert ask(api, owner.api_key, graph_id, "RETURN 1 AS one").json()["rows"] == [[1]]


def test_a_subgraph_by_its_id_then_suspended_409_deleted_404_and_a_silent_host_503(
        api: Api) -> None:
    owner = new_customer(api.database)
    graph_id = active_graph(api, owner.api_key)
    reader = member(api, graph_id, "reader")  # a subgraph's members are its parent's
    child = f"{graph_id}_child"
    with api.client(owner.api_key) as client:
        made = client.post(f"/v1/graphs/{graph_id}/subgraphs", json={"name": "child"})
        assert finished(api, owner.api_key, made.json()["operation_id"])[0] == \
            "operation_completed"
    assert ask(api, owner.api_key, child, "CREATE (:Entity {identifier: 'only-here'})"
               ).status_code == 200
    count = "MATCH (e:Entity) RETURN count(*) AS n"
    assert ask(api, reader.api_key, child, count).json()["rows"] == [[1]]
    assert ask(api, reader.api_key, graph_id, count).json()["rows"] == [[0]]
    assert ask(api, reader.api_key, child, "CREATE (:Entity {identifier: 'x'})"
               ).status_code == 403

    with api.database.session() as session:  # its host stops answering its probes
        host_id = session.get(Graph, graph_id).host_id
        session.execute(update(GraphHost).where(GraphHost.id == host_id)
                        .values(health="unhealthy"))
    for which in (graph_id, child):
        silent = ask(api, owner.api_key, which, count)
        assert silent.status_code == 503 and silent.headers["Retry-After"], silent.text
    with api.database.session() as session:
        session.execute(update(GraphHost).where(GraphHost.id == host_id)
                        .values(health="healthy"))

    with api.client(owner.api_key) as client:
        suspended = client.delete(f"/v1/graphs/{graph_id}")
        assert finished(api, owner.api_key, suspended.json()["operation_id"])[0] == \
            "operation_completed"
    for which in (graph_id, child):
        refused = ask(api, owner.api_key, which, count)
        assert refused.status_code == 409 and refused.json()["error"] == "suspended"
    with api.client(owner.api_key) as client:
        restored = client.post(f"/v1/graphs/{graph_id}/restore")
        assert finished(api, owner.api_key, restored.json()["operation_id"])[0] == \
            "operation_completed"
        assert ask(api, reader.api_key, child, count).json()["rows"] == [[1]]
        gone = client.delete(f"/v1/graphs/{graph_id}/subgraphs/child")
        assert finished(api, owner.api_key, gone.json()["operation_id"])[0] == \
            "operation_completed"
    deleted = ask(api, owner.api_key, child, count)
    assert deleted.status_code == 404 and deleted.json()["error"] == "not_found"
    assert ask(api, owner.api_key, graph_id, count).status_code == 200


def test_queries_through_a_host_server_process(postgres_database: Database, tmp_path: Path,
                                               dagster_instance: DagsterInstance) -> None:
    servers = start_hosts(tmp_path, (3,))
    try:
        register(postgres_database, servers, tmp_path)
        resources = control_plane(postgres_database, tmp_path)
        app, executor = make_api(postgres_database, resources, dagster_instance)
        with serve(app) as url:
            api = Api(url, postgres_database, executor)
            owner = new_customer(postgres_database)
            subscription = paid_graph_subscription(postgres_database, owner,
                                                   plan_name="ladybug-large")
            run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=subscription), resources)
            graph_id = api.wait_status(owner.api_key, subscription, "active")["resource_id"]
            reader = member(api, graph_id, "reader")
            assert ask(api, owner.api_key, graph_id, "CREATE (:Entity {identifier: $id, "
                       "name: 'Acme'})", id="e1").status_code == 200
            assert ask(api, reader.api_key, graph_id, MATCH_ONE, id="e1").json()["rows"] == \
                [["Acme"]]
            refused = ask(api, reader.api_key, graph_id, "CREATE (:Entity {identifier: 'x'})")
            assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
            broken = ask(api, reader.api_key, graph_id, "MATCH (n:Nowhere) RETURN n")
            assert broken.status_code == 422 and "Nowhere" in broken.json()["message"]
            assert engine_holds(api, graph_id) == [{"id": "e1", "name": "Acme",
                                                    "aliases": None}]
            assert not list(tmp_path.glob("control-plane/graphs/**/*.lbug"))  # all remote
        executor.close()
    finally:
        stop_hosts(servers)
