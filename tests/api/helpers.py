"""Serving the app for tests: uvicorn on a loopback port, and a client that speaks its API."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from dagster import DagsterInstance

from provisioning_pipelines.api.app import create_app
from provisioning_pipelines.direct import DirectExecutor
from provisioning_pipelines.runtime.reporting import MaterializationReporter
from provisioning_pipelines.services.billing.events import signed_delivery
from provisioning_pipelines.settings import load_settings
from provisioning_pipelines.storage.db import Database
from tests.conftest import free_port

SECRET = "whsec_test_secret"
SESSION_SECRET = "session secret of the API tests"


class Api:
    def __init__(self, url: str, database: Database, executor: DirectExecutor) -> None:
        self.url = url
        self.database = database
        self.executor = executor

    def client(self, api_key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def deliver(self, event: dict[str, Any], *, secret: str = SECRET,
                timestamp: int | None = None, body: bytes | None = None) -> httpx.Response:
        payload, headers = signed_delivery(event, secret, timestamp=timestamp)
        with self.client() as client:
            return client.post("/v1/webhooks/billing", content=body or payload,
                               headers=headers)

    def wait_status(self, api_key: str, subscription_id: str, status: str,
                    timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.client(api_key) as client:
            while True:
                answer = client.get(f"/v1/subscriptions/{subscription_id}").json()
                if answer["status"] == status:
                    return answer
                if time.monotonic() > deadline:
                    raise AssertionError(f"subscription stayed {answer['status']}: {answer}")
                time.sleep(0.05)

    def events(self, api_key: str, operation_id: str, *, last_event_id: str | None = None,
               stop_after: int | None = None) -> list[tuple[str, str, dict[str, Any]]]:
        """(id, type, data) of each event of the stream, in order."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        events: list[tuple[str, str, dict[str, Any]]] = []
        current: dict[str, str] = {}
        with self.client(api_key) as client, client.stream(
                "GET", f"/v1/operations/{operation_id}/events", headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if not line:
                    if "event" in current:
                        events.append((current["id"], current["event"],
                                       json.loads(current["data"])))
                        if stop_after and len(events) == stop_after:
                            break
                    current = {}
                    continue
                if line.startswith(":"):
                    continue
                field, _, value = line.partition(":")
                current[field] = value.removeprefix(" ")
        return events


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """The app under uvicorn on a free loopback port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def make_api(database: Database, resources: dict[str, Any], instance: DagsterInstance, *,
             direct: bool = True, **settings_: Any) -> tuple[Any, DirectExecutor]:
    """The app on these resources; it resumes and sweeps nothing unless a test asks."""
    values = {"BILLING_WEBHOOK_SECRET": SECRET, "SESSION_SECRET": SESSION_SECRET,
              "DIRECT_GRAPH_PROVISIONING_ENABLED": direct,
              "PROVISIONING_RESUME_INTERVAL_SECONDS": 0, "HOUSEKEEPING_INTERVAL_SECONDS": 0,
              **settings_}
    settings = load_settings(**values)
    store = resources["operation_events"].get()
    executor = DirectExecutor(resources, reporter=MaterializationReporter(
        instance, store, timeout=10))
    app = create_app(settings, executor, dagster_instance=lambda: instance,
                     keepalive_seconds=0.3)
    return app, executor
