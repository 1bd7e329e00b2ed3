"""A subgraph's status is its parent's, over real HTTP and in ``graphs show``: a suspended
graph's subgraphs are shown and refused as suspended, and come back with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from provisioning_pipelines.flows import DELETION_FLOW, DeletionConfig
from provisioning_pipelines.services.graphs import lifecycle
from provisioning_pipelines.storage.models import Graph
from tests.api.helpers import Api
from tests.api.test_lifecycle_api import active_graph, finished
from tests.cli.test_commands import cli
from tests.factories import new_customer
from tests.flows.helpers import run_direct


def shown_by_the_cli(api: Api, graph_id: str, tmp_path: Path) -> dict[str, Any]:
    answer = cli("graphs", "show", graph_id, env={"DATABASE_URL": api.database.url,
                                                  "DATA_DIR": str(tmp_path / "cli")})
    assert answer.returncode == 0, answer.stderr
    return json.loads(answer.stdout)


def test_a_suspended_graphs_subgraph_is_shown_and_refused_as_suspended_and_comes_back(
        api: Api, tmp_path: Path) -> None:
    user = new_customer(api.database)
    graph_id = active_graph(api, user.api_key)
    child = f"{graph_id}_child"
    with api.client(user.api_key) as client:
        made = client.post(f"/v1/graphs/{graph_id}/subgraphs", json={"name": "child"})
        assert finished(api, user.api_key, made.json()["operation_id"])[0] == \
            "operation_completed"

        deleted = client.delete(f"/v1/graphs/{graph_id}")  # the customer cancels
        assert finished(api, user.api_key, deleted.json()["operation_id"])[0] == \
            "operation_completed"

        parent = client.get(f"/v1/graphs/{graph_id}").json()
        assert parent["status"] == "suspended"
        assert [(s["graph_id"], s["status"]) for s in parent["subgraphs"]] == [
            (child, "suspended")]
        own = client.get(f"/v1/graphs/{child}").json()
        assert (own["status"], own["delete_after"]) == ("suspended", parent["delete_after"])
        for refused in (client.post(f"/v1/graphs/{graph_id}/subgraphs", json={"name": "x"}),
                        client.post(f"/v1/graphs/{child}/subgraphs", json={"name": "x"})):
            assert refused.status_code == 409, refused.text
            assert "is suspended" in refused.json()["message"]
        assert [s["status"] for s in shown_by_the_cli(api, graph_id, tmp_path)[
            "subgraphs"]] == ["suspended"]

        restored = client.post(f"/v1/graphs/{graph_id}/restore")
        assert finished(api, user.api_key, restored.json()["operation_id"])[0] == \
            "operation_completed"

        assert [s["status"] for s in client.get(f"/v1/graphs/{graph_id}").json()[
            "subgraphs"]] == ["active"]
        assert client.get(f"/v1/graphs/{child}").json()["delete_after"] is None
    assert [s["status"] for s in shown_by_the_cli(api, graph_id, tmp_path)[
        "subgraphs"]] == ["active"]


def test_a_deletion_marks_the_subgraphs_and_then_removes_them(
        api: Api, resources: dict[str, Any]) -> None:
    user = new_customer(api.database)
    graph_id = active_graph(api, user.api_key)
    with api.client(user.api_key) as client:
        made = client.post(f"/v1/graphs/{graph_id}/subgraphs", json={"name": "child"})
        finished(api, user.api_key, made.json()["operation_id"])
    with api.database.session() as session:  # the deletion's first step, as a crash leaves it
        claim = lifecycle.claim_graph(session, graph_id, lease_seconds=60,
                                      statuses=("active",))
        lifecycle.begin_deletion(session, claim, now_too=True, actor="operator", reason="now")
        lifecycle.release_graph(session, claim)
    with api.client(user.api_key) as client:
        assert [s["status"] for s in client.get(f"/v1/graphs/{graph_id}").json()[
            "subgraphs"]] == ["deleting"]

    run_direct(DELETION_FLOW, DeletionConfig(graph_id=graph_id, at_once=True), resources)

    with api.database.session() as session:
        assert session.get(Graph, f"{graph_id}_child") is None
    with api.client(user.api_key) as client:
        gone = client.get(f"/v1/graphs/{graph_id}").json()
        assert (gone["status"], gone["subgraphs"]) == ("deleted", [])
