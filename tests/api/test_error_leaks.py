"""What an unauthenticated caller reads about an outage says what is down, never where: no
host, port or socket of the database or Redis (the log keeps them)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from dagster import DagsterInstance
from sqlalchemy.engine import make_url

from provisioning_pipelines.storage.db import Database
from tests.api.helpers import make_api, serve
from tests.conftest import make_resources
from tests.tcp_proxy import TcpProxy


def test_healthz_without_a_key_says_what_is_down_never_where(
    cut_off_database: tuple[Database, TcpProxy], graph_dir: Path,
    dagster_instance: DagsterInstance, own_redis: tuple[str, subprocess.Popen[bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    database, proxy = cut_off_database
    redis_url, redis_server = own_redis
    resources = make_resources(database.url, graph_dir, REDIS_URL=redis_url)
    app, executor = make_api(database, resources, dagster_instance, REDIS_URL=redis_url)
    with serve(app) as url:
        proxy.stop()
        redis_server.kill()
        redis_server.wait()
        answer = httpx.get(f"{url}/healthz", timeout=30)
    executor.close()

    assert answer.status_code == 503
    body = answer.json()
    assert body["database"] == {"ok": False, "detail": "database unreachable"}
    assert body["redis"] == {"ok": False, "detail": "event store unreachable"}
    for where in ("127.0.0.1", "localhost", str(proxy.port), str(make_url(redis_url).port),
                  "port", "socket"):
        assert where not in answer.text, where
    # The log keeps the driver's own words (which ones depends on whether a pooled connection
    # was cut or a new one refused, so only the driver is asserted).
    assert "psycopg2.OperationalError" in caplog.text
