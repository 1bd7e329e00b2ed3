"""A graph whose host does not answer its probes says so over HTTP (``available: false``),
and work on it is refused with a 503 and ``Retry-After`` before any operation is opened; the
others, and the same graph once its host answers again, say ``true``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance

from provisioning_pipelines.direct.recovery import Recovery
from provisioning_pipelines.services.capacity import remote
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import Graph
from tests.api.helpers import Api, make_api, serve
from tests.api.test_app import checkout_event, subscribe_graph
from tests.conftest import make_resources
from tests.factories import new_customer
from tests.host_serving import TOKEN, HostProcess

MISSES = 2


@pytest.fixture
def resources(database_url: str, graph_dir: Path) -> dict[str, Any]:
    """One slot on the tier's local host and one on the host server: the first graph placed
    goes to the host server (a tie goes to the first id), the second to the local host."""
    return make_resources(database_url, graph_dir, GRAPH_HOST_TOKEN=TOKEN,
                          LOCAL_HOST_CAPACITY=1)


@pytest.fixture
def probing_api(database: Database, resources: dict[str, Any],
                dagster_instance: DagsterInstance) -> Iterator[tuple[Api, Recovery]]:
    """The app with its probe settings; its probe rounds are driven by the test, not timed."""
    app, executor = make_api(database, resources, dagster_instance, GRAPH_HOST_TOKEN=TOKEN,
                             GRAPH_HOST_PROBE_SECONDS=0, GRAPH_HOST_PROBE_MISSES=MISSES)
    with serve(app) as url:
        yield Api(url, database, executor), app.state.recovery
    executor.close()


@pytest.fixture
def host(tmp_path: Path) -> Iterator[HostProcess]:
    process = HostProcess(tmp_path / "host-data", tmp_path / "host.log", host_id="large-r",
                          tier="ladybug-large", capacity=1).start()
    yield process
    process.stop()


def test_a_graph_on_an_unhealthy_host_is_not_available_over_http(
        probing_api: tuple[Api, Recovery], host: HostProcess, graph_dir: Path) -> None:
    api, recovery = probing_api
    with api.database.session() as session:
        remote.add_remote_host(session, host_id=host.host_id, url=host.url, token=TOKEN,
                               graph_data_dir=graph_dir)
    user = new_customer(api.database)

    def provisioned() -> str:
        sub_id = subscribe_graph(api, user.api_key)
        api.deliver(checkout_event(sub_id))
        return api.wait_status(user.api_key, sub_id, "active")["resource_id"]

    remote_graph = provisioned()
    local_graph = provisioned()
    with api.database.session() as session:
        assert session.get(Graph, remote_graph).host_id == host.host_id
        assert session.get(Graph, local_graph).host_id == "local-ladybug-large"

    def shown() -> dict[str, bool]:
        with api.client(user.api_key) as client:
            one = {graph_id: client.get(f"/v1/graphs/{graph_id}") for graph_id in
                   (local_graph, remote_graph)}
            listed = client.get("/v1/graphs")
        assert {answer.status_code for answer in one.values()} == {200}
        assert listed.status_code == 200
        in_list = {g["graph_id"]: g["available"] for g in listed.json()["graphs"]}
        assert in_list == {graph_id: answer.json()["available"]
                           for graph_id, answer in one.items()}
        assert one[remote_graph].json()["host_id"] == host.host_id
        # Sizes: the local graph's file read here, the other's asked of its host server while
        # it answers its probes (never waited for once it does not).
        assert one[local_graph].json()["size_bytes"] > 0
        remote_size = one[remote_graph].json()["size_bytes"]
        assert remote_size > 0 if in_list[remote_graph] else remote_size is None
        return in_list

    assert shown() == {local_graph: True, remote_graph: True}
    host.kill()
    for _ in range(MISSES):
        recovery.probe_hosts()
    assert shown() == {local_graph: True, remote_graph: False}
    with api.client(user.api_key) as client:
        work = {"backup": client.post(f"/v1/graphs/{remote_graph}/backups"),
                "subgraph": client.post(f"/v1/graphs/{remote_graph}/subgraphs",
                                        json={"name": "analysis"})}
        for answer in work.values():  # refused before any operation is opened
            assert answer.status_code == 503
            assert answer.headers["Retry-After"]
            assert answer.json()["error"] == "host_unavailable"
            assert "operation_id" not in answer.json()
            assert answer.json()["message"] == (
                f"graph_id: graph {remote_graph} is on graph host {host.host_id}, which is not "
                "answering; try again shortly")
        assert client.post(f"/v1/graphs/{local_graph}/backups").status_code == 202
    host.start()
    recovery.probe_hosts()
    assert shown() == {local_graph: True, remote_graph: True}
    with api.client(user.api_key) as client:
        taken = client.post(f"/v1/graphs/{remote_graph}/backups")
        assert taken.status_code == 202
        ended = api.events(user.api_key, taken.json()["operation_id"])[-1]
        assert ended[1] == "operation_completed"
        restore = client.post(f"/v1/graphs/{remote_graph}/backups/"
                              f"{taken.json()['backup_id']}/restore")
        # The backup is kept on the disk of the host server that took it, and restored there.
        assert restore.status_code == 202
        ended = api.events(user.api_key, restore.json()["operation_id"])[-1]
        assert ended[1] == "operation_completed"
