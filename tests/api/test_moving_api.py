"""A graph being moved, as its customer meets it over real HTTP: while the move's last copy is
made a write is ``503 graph_moving`` with ``Retry-After``, a read answers, a backup or a
subgraph asked for is the same 503; once it has moved, writes go to its new host. Two real
``host serve`` processes, PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import DagsterInstance

from provisioning_pipelines.flows import GRAPH_FLOW, MOVE_FLOW, MoveConfig, SubscriptionConfig
from provisioning_pipelines.flows.runner import run_step
from provisioning_pipelines.storage.db import Database
from tests.api.helpers import Api, make_api, serve
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import direct_context, run_direct
from tests.flows.host_servers import control_plane, placed, register, start_hosts, stop_hosts

WRITE = "CREATE (:Entity {identifier: $id, name: $id})"
READ = "MATCH (e:Entity) RETURN e.identifier AS id ORDER BY id"


def ask(api: Api, api_key: str, graph_id: str, query: str, **parameters: Any) -> Any:
    with api.client(api_key) as client:
        return client.post(f"/v1/graphs/{graph_id}/query",
                           json={"query": query, "parameters": parameters})


def test_writes_and_lifecycle_changes_wait_while_a_graph_moves_and_reads_go_on(
        postgres_database: Database, tmp_path: Path,
        dagster_instance: DagsterInstance) -> None:
    servers = start_hosts(tmp_path, (2, 2))
    try:
        register(postgres_database, servers, tmp_path)
        resources = control_plane(postgres_database, tmp_path)
        app, executor = make_api(postgres_database, resources, dagster_instance)
        with serve(app) as url:
            api = Api(url, postgres_database, executor)
            owner = new_customer(postgres_database)
            subscription = paid_graph_subscription(postgres_database, owner,
                                                   plan_name="ladybug-large")
            made = run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=subscription),
                              resources).result
            graph_id, old = made["graph_id"], made["host_id"]
            new = next(p.host_id for p in servers if p.host_id != old)
            assert ask(api, owner.api_key, graph_id, WRITE, id="before").status_code == 200

            ctx = direct_context(resources)
            value: Any = MoveConfig(graph_id=graph_id, to_host_id=new)
            for step in MOVE_FLOW.steps[:3]:  # claimed, copied, frozen
                value = run_step(step, ctx, value)
            refused = ask(api, owner.api_key, graph_id, WRITE, id="during")
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "graph_moving"
            assert "moving to another host" in refused.json()["message"]
            assert int(refused.headers["Retry-After"]) > 0
            read = ask(api, owner.api_key, graph_id, READ)
            assert read.status_code == 200 and read.json()["rows"] == [["before"]]
            with api.client(owner.api_key) as client:
                backup = client.post(f"/v1/graphs/{graph_id}/backups")
                subgraph = client.post(f"/v1/graphs/{graph_id}/subgraphs",
                                       json={"name": "analysis"})
            for answer in (backup, subgraph):
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"] == "graph_moving"
                assert "Retry-After" in answer.headers

            for step in MOVE_FLOW.steps[3:]:  # switched, old copy removed
                value = run_step(step, ctx, value)
            assert placed(postgres_database)[graph_id] == new
            assert ask(api, owner.api_key, graph_id, WRITE, id="after").status_code == 200
            assert ask(api, owner.api_key, graph_id, READ).json()["rows"] == \
                [["after"], ["before"]]
        executor.close()
    finally:
        stop_hosts(servers)
