"""Redis that forgets: a Redis that may evict is refused by ``serve``, one without persistence is
warned about (refused when persistence is required), and an operation lost anyway is rebuilt
from its subscription instead of answering 404. Each on a private ``redis-server``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from dagster import DagsterInstance

from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.events.durability import check_durability
from tests.api.helpers import Api, make_api, serve
from tests.api.test_app import checkout_event, subscribe_graph
from tests.api.test_lifecycle_api import finished
from tests.conftest import free_port, make_resources, require
from tests.factories import new_customer


@contextmanager
def redis_server(tmp_path: Path, *args: str, port: int | None = None) -> Iterator[str]:
    binary = shutil.which("redis-server")
    require("redis-server", None if binary else "no redis-server binary")
    assert binary is not None
    port = port or free_port()
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                               "--dir", str(tmp_path), *args], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        server.kill()
        server.wait()


NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


def test_serve_refuses_a_redis_that_may_evict_open_operations(tmp_path: Path) -> None:
    with redis_server(tmp_path, *NO_PERSISTENCE, "--maxmemory", "64mb",
                      "--maxmemory-policy", "allkeys-lru") as url:
        env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "REDIS_URL": url}
        done = subprocess.run([sys.executable, "-m", "provisioning_pipelines.cli", "serve",
                               "--port", str(free_port())], env=env, capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "maxmemory-policy is 'allkeys-lru'" in errors[0]
    assert "noeviction" in errors[0]


def test_a_redis_without_persistence_is_a_warning_or_refused_when_required(
        tmp_path: Path) -> None:
    with redis_server(tmp_path, *NO_PERSISTENCE) as url:
        lenient = check_durability(url, require_persistence=False)
        strict = check_durability(url, require_persistence=True)
    assert lenient.refused == [] and "persistence is off" in lenient.warnings[0]
    assert "persistence is off" in strict.refused[0]
    with redis_server(tmp_path, "--appendonly", "yes") as url:
        assert check_durability(url, require_persistence=True) == check_durability(
            url, require_persistence=False) == type(lenient)()


def test_an_operation_redis_forgot_is_rebuilt_from_its_subscription(
        database: Database, graph_dir: Path, dagster_instance: DagsterInstance,
        tmp_path: Path) -> None:
    port = free_port()
    with redis_server(tmp_path, *NO_PERSISTENCE, port=port) as url:
        resources = make_resources(database.url, graph_dir, REDIS_URL=url)
        app, executor = make_api(database, resources, dagster_instance, REDIS_URL=url)
        user = new_customer(database)
        with serve(app) as base:
            api = Api(base, database, executor)
            sub_id = subscribe_graph(api, user.api_key)
            operation_id = api.deliver(checkout_event(sub_id)).json()["operation_id"]
            assert finished(api, user.api_key, operation_id)[0] == "operation_completed"
            graph_id = api.wait_status(user.api_key, sub_id, "active")["resource_id"]
            redis.Redis.from_url(url).shutdown(nosave=True)  # a restart without persistence
            with redis_server(tmp_path, *NO_PERSISTENCE, port=port), \
                    api.client(user.api_key) as client:
                shown = client.get(f"/v1/operations/{operation_id}")
                assert shown.status_code == 200, shown.text
                assert shown.json()["status"] == "completed"
                assert shown.json()["result"]["graph_id"] == graph_id
                kind, data = finished(api, user.api_key, operation_id)
                assert kind == "operation_completed" and data["result"]["graph_id"] == graph_id
                stranger = new_customer(database)
                with api.client(stranger.api_key) as other:
                    assert other.get(f"/v1/operations/{operation_id}").status_code == 404
                unknown = client.get("/v1/operations/op_000000000000000000000000")
                assert unknown.status_code == 404
