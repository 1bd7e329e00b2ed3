"""Backups in an S3 store through the API (the embedded default's local hosts, a private real
SeaweedFS): a backup goes up and comes back on restore; with the store killed, a restore is a
503 ``backup_store_unavailable`` with ``Retry-After`` before any operation is opened, and a
backup's operation fails naming the store with nothing kept; with the store back, both work."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance

from provisioning_pipelines.storage.backup_store.s3 import S3Store
from provisioning_pipelines.storage.db import Database
from tests.api.helpers import Api, make_api, serve
from tests.api.test_app import checkout_event, subscribe_graph
from tests.conftest import make_resources
from tests.factories import new_customer
from tests.seaweed import SeaweedServer


@pytest.fixture
def store_server(tmp_path: Path, seaweed: SeaweedServer) -> Iterator[SeaweedServer]:
    """A private server, to kill (the session's serves the other tests)."""
    server = SeaweedServer(tmp_path / "seaweed").start()
    yield server
    server.stop()


@pytest.fixture
def store_api(database: Database, database_url: str, graph_dir: Path,
              dagster_instance: DagsterInstance, store_server: SeaweedServer,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Api, S3Store]]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "test")
    bucket = store_server.bucket(f"api-{uuid.uuid4().hex[:10]}")
    settings = {"BACKUP_STORE_URL": f"s3://{bucket}/backups",
                "BACKUP_STORE_ENDPOINT_URL": store_server.endpoint_url}
    resources: dict[str, Any] = make_resources(database_url, graph_dir, **settings)
    app, executor = make_api(database, resources, dagster_instance, **settings)
    store = S3Store(bucket, "backups", endpoint_url=store_server.endpoint_url, attempts=1,
                    timeout_seconds=5)
    with serve(app) as url:
        yield Api(url, database, executor), store
    executor.close()
    store.close()


def _ended(api: Api, key: str, answer: Any) -> tuple[str, dict[str, Any]]:
    assert answer.status_code == 202, answer.text
    event, data = api.events(key, answer.json()["operation_id"])[-1][1:3]
    return event, data


def test_a_restore_with_the_store_down_is_a_503_and_works_once_it_is_back(
        store_api: tuple[Api, S3Store], store_server: SeaweedServer) -> None:
    api, store = store_api
    user = new_customer(api.database)
    sub_id = subscribe_graph(api, user.api_key)
    api.deliver(checkout_event(sub_id))
    graph_id = api.wait_status(user.api_key, sub_id, "active")["resource_id"]
    with api.client(user.api_key) as client:
        taken = client.post(f"/v1/graphs/{graph_id}/backups")
        assert _ended(api, user.api_key, taken)[0] == "operation_completed"
        backup_id = taken.json()["backup_id"]
        assert store.head(f"{graph_id}/{backup_id}.lbug") is not None

        store_server.kill()
        refused = client.post(f"/v1/graphs/{graph_id}/backups/{backup_id}/restore")
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "backup_store_unavailable"
        assert refused.headers["Retry-After"] and "operation_id" not in refused.json()
        failed = client.post(f"/v1/graphs/{graph_id}/backups")
        event, data = _ended(api, user.api_key, failed)
        assert event == "operation_error" and "backup store" in str(data), data
        listed = client.get(f"/v1/graphs/{graph_id}/backups").json()["backups"]
        assert [backup["backup_id"] for backup in listed] == [backup_id]  # nothing half-made

        store_server.start()
        restored = client.post(f"/v1/graphs/{graph_id}/backups/{backup_id}/restore")
        assert _ended(api, user.api_key, restored)[0] == "operation_completed"
        missing = client.post(f"/v1/graphs/{graph_id}/backups/{backup_id}/restore")
        assert missing.status_code == 202  # still there: a second restore is fine
        assert _ended(api, user.api_key, missing)[0] == "operation_completed"
        store.delete(f"{graph_id}/{backup_id}.lbug")  # gone from the store behind our back
        gone = client.post(f"/v1/graphs/{graph_id}/backups/{backup_id}/restore")
        assert gone.status_code == 404 and "not in the backup store" in gone.json()["message"]
