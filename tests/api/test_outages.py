"""Outages told truthfully and healed without a restart: Redis stopped (a private redis-server,
killed by its PID) and PostgreSQL cut off (a TCP proxy in front of the shared server)."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from dagster import DagsterInstance
from sqlalchemy.engine import make_url

from provisioning_pipelines.services.billing.events import billing_event
from provisioning_pipelines.storage.db import Database
from tests.api.helpers import Api, make_api, serve
from tests.conftest import make_resources
from tests.factories import new_customer, paid_graph_subscription
from tests.tcp_proxy import TcpProxy


def checkout(subscription_id: str, event_id: str | None = None) -> dict[str, Any]:
    return billing_event(subscription_id, event_id=event_id or f"evt_{subscription_id}")


def restart(binary_args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(binary_args, stdout=subprocess.DEVNULL)


def wait_until(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_with_redis_down_reads_answer_503_streams_end_cleanly_and_provisioning_goes_on(
    database: Database, graph_dir: Path, dagster_instance: DagsterInstance,
    own_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, server = own_redis
    resources = make_resources(database.url, graph_dir, REDIS_URL=url)
    app, executor = make_api(database, resources, dagster_instance, REDIS_URL=url)
    user = new_customer(database)
    with serve(app) as base:
        api = Api(base, database, executor)
        waiting = executor.open_operation("graph_provisioning", user.user_id)  # never runs
        events: list[tuple[str, str]] = []
        open_and_idle = threading.Event()

        def follow() -> None:
            with api.client(user.api_key) as client, client.stream(
                    "GET", f"/v1/operations/{waiting}/events") as response:
                kind = ""
                for line in response.iter_lines():
                    if line.startswith(":"):  # a keepalive: the stream is open and idle
                        open_and_idle.set()
                    if line.startswith(("event:", "retry:")):
                        kind = line
                    elif line.startswith("data:"):
                        events.append((kind, line))

        stream = threading.Thread(target=follow)
        stream.start()
        assert open_and_idle.wait(30)
        server.kill()
        server.wait()

        stream.join(30)
        assert not stream.is_alive()
        assert events and events[-1][0] == "event: stream_error"  # a final event, not a cut
        with api.client(user.api_key) as client:
            read = client.get(f"/v1/operations/{waiting}")
            opened = client.get(f"/v1/operations/{waiting}/events")
            health = client.get("/healthz")
        assert read.status_code == 503 and read.json()["error"] == "unavailable"
        assert "Redis" in read.json()["message"] and read.headers["retry-after"] == "5"
        assert opened.status_code == 503 and opened.json()["error"] == "unavailable"
        assert health.status_code == 503 and health.json()["redis"]["ok"] is False

        sub_id = paid_graph_subscription(database, user, paid=False)
        assert api.deliver(checkout(sub_id)).status_code == 200
        api.wait_status(user.api_key, sub_id, "active")  # provisioning goes on without events

        port = make_url(url).port
        revived = restart([str(server.args[0]), "--port", str(port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no"])
        try:
            with api.client(user.api_key) as client:
                wait_until(lambda: client.get("/healthz").status_code == 200)
            again = paid_graph_subscription(database, user, paid=False)
            operation_id = api.deliver(checkout(again)).json()["operation_id"]
            kinds = [kind for _, kind, _ in api.events(user.api_key, operation_id)]
            assert kinds[-1] == "operation_completed"  # streams work again, no restart
        finally:
            revived.kill()
            revived.wait()
    executor.close()


def test_with_the_database_cut_off_a_webhook_answers_503_and_its_redelivery_applies(
    cut_off_database: tuple[Database, TcpProxy], graph_dir: Path,
    dagster_instance: DagsterInstance,
) -> None:
    database, proxy = cut_off_database
    resources = make_resources(database.url, graph_dir)
    app, executor = make_api(database, resources, dagster_instance)
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user, paid=False)
    with serve(app) as base:
        api = Api(base, database, executor)
        proxy.stop()

        refused = api.deliver(checkout(sub_id))
        with api.client(user.api_key) as client:
            asked = client.post("/v1/subscriptions", json={
                "resource_type": "graph", "plan_name": "ladybug-standard",
                "graph": {"name": "g"}})
            health = client.get("/healthz")
        assert refused.status_code == 503, refused.text
        assert refused.json() == {"error": "unavailable", "field": None,
                                  "message": "database unavailable; try again shortly"}
        assert asked.status_code == 503 and asked.json()["error"] == "unavailable"
        assert health.status_code == 503 and health.json()["database"]["ok"] is False

        proxy.start()
        redelivered = api.deliver(checkout(sub_id))  # the sender retries the same event
        assert redelivered.status_code == 200, redelivered.text
        assert redelivered.json()["duplicate"] is False  # the first was never recorded
        api.wait_status(user.api_key, sub_id, "active")
    executor.close()
