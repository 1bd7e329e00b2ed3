"""The queue as a customer sees it over HTTP: paid while the tier is full, the operation says
where the subscription waits and stays open; capacity is added and the same operation ends with
the graph."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance

from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.storage.db import Database
from tests.api.helpers import Api, make_api, serve
from tests.api.test_app import checkout_event
from tests.conftest import make_resources
from tests.factories import graph_request, new_customer


@pytest.fixture
def tiny_api(database: Database, graph_dir: Path, dagster_instance: DagsterInstance
             ) -> Iterator[Api]:
    """The app with one slot per local host, resuming every 0.2 s."""
    resources = make_resources(database.url, graph_dir, LOCAL_HOST_CAPACITY=1)
    app, executor = make_api(database, resources, dagster_instance,
                             PROVISIONING_RESUME_INTERVAL_SECONDS=0.2)
    with serve(app) as url:
        yield Api(url, database, executor)
    executor.close()


def subscribe(api: Api, api_key: str) -> str:
    with api.client(api_key) as client:
        answer = client.post("/v1/subscriptions", json={
            "resource_type": "graph", "plan_name": "ladybug-standard",
            "graph": graph_request()})
    assert answer.status_code == 201, answer.text
    return answer.json()["subscription_id"]


def test_a_queued_customer_watches_one_operation_until_capacity_arrives(
        tiny_api: Api, graph_dir: Path) -> None:
    api = tiny_api
    user = new_customer(api.database)
    first = subscribe(api, user.api_key)
    api.deliver(checkout_event(first))
    api.wait_status(user.api_key, first, "active")

    waiting = subscribe(api, user.api_key)
    operation_id = api.deliver(checkout_event(waiting)).json()["operation_id"]
    shown = api.wait_status(user.api_key, waiting, "queued")
    assert shown["queue_position"] == 1 and shown["resource_id"] is None

    seen: list[Any] = []
    stream = threading.Thread(target=lambda: seen.extend(api.events(user.api_key,
                                                                    operation_id)))
    stream.start()  # a customer watching while the subscription waits
    with api.client(user.api_key) as client:
        operation = client.get(f"/v1/operations/{operation_id}").json()
    assert operation["status"] == "running", operation
    assert "Queued at position 1" in operation["message"]

    with api.database.session() as session:
        hosts.add_host(session, tier="ladybug-standard", capacity=1, data_root=None,
                       graph_data_dir=graph_dir)
    done = api.wait_status(user.api_key, waiting, "active")
    stream.join(60)

    assert not stream.is_alive()
    types = [kind for _, kind, _ in seen]
    assert types[-1] == "operation_completed" and types.count("operation_completed") == 1
    assert seen[-1][2]["result"]["resource_id"] == done["resource_id"]
    assert any("Queued at position 1" in data.get("message", "") for _, _, data in seen)
    assert done["queue_position"] is None
