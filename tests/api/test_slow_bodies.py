"""Request bodies bounded in time and in number, over real sockets against a real uvicorn server.

Each slow client is a raw socket that announces a ``Content-Length``, sends part of the body and
stalls; the server's bounds are small through its settings, so nothing here sleeps for them.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from dagster import DagsterInstance

from provisioning_pipelines.services.billing.events import billing_event
from provisioning_pipelines.storage.db import Database, dispose_database, get_database
from tests.api.helpers import Api, make_api, serve
from tests.conftest import make_resources
from tests.factories import new_customer

WEBHOOK = "/v1/webhooks/billing"


@pytest.fixture
def sqlite_app_database(sqlite_template: Path, tmp_path: Path) -> Iterator[Database]:
    """The bounds are the HTTP edge's: one database is enough."""
    path = tmp_path / "app.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    yield get_database(url)
    dispose_database(url)


@pytest.fixture
def bounded_api(sqlite_app_database: Database, graph_dir: Path,
                dagster_instance: DagsterInstance
                ) -> Iterator[Callable[..., Any]]:
    """Serve the app with the given body settings: ``with bounded_api(**settings) as (api,
    app)``."""
    executors = []

    @contextmanager
    def started(**settings: Any) -> Iterator[tuple[Api, Any]]:
        resources = make_resources(sqlite_app_database.url, graph_dir)
        app, executor = make_api(sqlite_app_database, resources, dagster_instance, **settings)
        executors.append(executor)
        with serve(app) as url:
            yield Api(url, sqlite_app_database, executor), app

    yield started
    for executor in executors:
        executor.close()


def stalled_body(url: str, path: str = WEBHOOK, *, announced: int = 1000, sent: int = 500,
                 headers: dict[str, str] | None = None) -> socket.socket:
    """A connection that announced ``announced`` bytes of body, sent ``sent`` and stalls."""
    where = urlsplit(url)
    sock = socket.create_connection((where.hostname, where.port), timeout=30)
    lines = [f"POST {path} HTTP/1.1", f"Host: {where.netloc}",
             "Content-Type: application/json", f"Content-Length: {announced}",
             *(f"{name}: {value}" for name, value in (headers or {}).items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b" " * sent)
    return sock


def answer_then_close(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, Any]]:
    """The response the server sends before it closes the connection: status, headers, body.
    Fails with a socket timeout when the server answers nothing."""
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    sock.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in
               (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.mark.parametrize("path", [WEBHOOK, "/v1/subscriptions"])
def test_a_body_that_stalls_is_answered_408_and_its_connection_closed(
    bounded_api: Callable[..., Any], path: str,
) -> None:
    with bounded_api(BODY_READ_TIMEOUT_SECONDS=0.5) as (api, app):
        user = new_customer(api.database)
        sock = stalled_body(api.url, path, announced=1024 * 1024 - 100, sent=512 * 1024,
                            headers={"Authorization": f"Bearer {user.api_key}"})
        started = time.monotonic()
        status, headers, body = answer_then_close(sock)
        took = time.monotonic() - started
        assert status == 408, body
        assert body == {"error": "request_timeout", "field": "body",
                        "message": "body: not received within 0.5 s "
                                   "(BODY_READ_TIMEOUT_SECONDS)"}
        assert headers["connection"] == "close"
        assert took < 25  # answered by the timeout, not by the test's socket giving up
        assert app.state.api.bodies.reading == 0  # what it had sent is dropped


def test_one_body_over_the_bound_is_refused_503_while_the_server_answers_others(
    bounded_api: Callable[..., Any],
) -> None:
    with bounded_api(BODY_READ_TIMEOUT_SECONDS=120, BODY_READ_MAX_CONCURRENCY=3) as (api, app):
        bodies = app.state.api.bodies
        held = [stalled_body(api.url) for _ in range(3)]
        wait_until(lambda: bodies.reading == 3)

        status, headers, body = answer_then_close(stalled_body(api.url))
        assert status == 503, body
        assert body["error"] == "busy" and body["field"] == "body"
        assert "3 request bodies are being read already" in body["message"]
        assert headers["retry-after"] == "5" and headers["connection"] == "close"
        assert httpx.get(f"{api.url}/healthz", timeout=30).status_code == 200

        for sock in held:  # the stalled senders give up: their slots are free again
            sock.close()
        wait_until(lambda: bodies.reading == 0)
        delivered = api.deliver(billing_event("sub_unknown", event_id="evt_after_the_stall"))
        assert delivered.status_code == 200, delivered.text
