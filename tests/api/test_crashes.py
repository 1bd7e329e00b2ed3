"""Crashes and shutdowns of a real ``serve`` process: kill -9 mid-burst, SIGTERM mid-work.

Each test runs the API as its own process on PostgreSQL and Redis, so a kill is a real kill:
no ``finally`` runs, no claim is given back, temp files stay where they were.
"""

from __future__ import annotations

import fcntl
import json
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from provisioning_pipelines.services.graphs.schemas import schema_ddl
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.ladybug import ddl_fingerprint
from provisioning_pipelines.storage.models import Graph, GraphHost, Subscription, utcnow
from tests.conftest import REDIS_URL
from tests.factories import new_customer, paid_graph_subscription
from tests.serving import api_process, server_env

FAST_RECOVERY = {"PROVISIONING_CLAIM_LEASE_SECONDS": 2, "PROVISIONING_RESUME_INTERVAL_SECONDS": 0.5,
                 "PROVISIONING_SENSOR_GRACE_SECONDS": 1, "HOUSEKEEPING_INTERVAL_SECONDS": 1,
                 "HOUSEKEEPING_STRAY_AGE_SECONDS": 1}


def statuses(database: Database, subscription_ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    with database.session() as session:
        for row in session.scalars(select(Subscription)
                                   .where(Subscription.id.in_(subscription_ids))):
            counts[row.status] = counts.get(row.status, 0) + 1
    return counts


def operation(url: str, api_key: str, operation_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/v1/operations/{operation_id}", timeout=10,
                       headers={"Authorization": f"Bearer {api_key}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def stray_files(graph_dir: Path) -> list[Path]:
    return [p for p in graph_dir.rglob("*") if p.is_file() and ".templates" not in p.parts
            and (p.name.startswith(".") or ".quarantine" in p.parts)]


def test_after_kill_9_the_next_server_finishes_every_paid_subscription(
    postgres_database: Database, postgres_app_url: str, redis_prefix: str, tmp_path: Path,
) -> None:
    database = postgres_database
    user = new_customer(database)
    subs = [paid_graph_subscription(database, user, paid=False) for _ in range(24)]
    env = server_env(tmp_path, DATABASE_URL=postgres_app_url, REDIS_URL=REDIS_URL,
                     REDIS_KEY_PREFIX=redis_prefix, DIRECT_MAX_CONCURRENCY=8, **FAST_RECOVERY)

    with api_process(env, tmp_path / "first.log") as first:
        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(first.pay, subs))
        first.signal(signal.SIGKILL)
        first.wait(10)
    killed_at = time.monotonic()
    assert [a.status_code for a in answers] == [200] * 24
    operations = [a.json()["operation_id"] for a in answers]
    assert all(operations)
    at_kill = statuses(database, subs)

    with api_process(env, tmp_path / "second.log") as second:
        while statuses(database, subs).get("active", 0) < 24:
            assert time.monotonic() - killed_at < 90, (at_kill, statuses(database, subs),
                                                       second.output()[-3000:])
            time.sleep(0.2)
        # Every operation a client was given ends: completed, by whichever worker did it.
        ended = [operation(second.url, user.api_key, op)["status"] for op in operations]
        while set(ended) != {"completed"}:
            assert time.monotonic() - killed_at < 120, ended
            time.sleep(0.2)
            ended = [operation(second.url, user.api_key, op)["status"] for op in operations]
        time.sleep(1.5)  # a sweep runs every second; strays must be older than 1 s

        with database.session() as session:
            paths = set(session.scalars(select(Graph.database_path)))
            used = sum(session.scalars(select(GraphHost.slots_used)))
        assert len(paths) == 24 and used == 24
        graph_dir = Path(env["GRAPH_DATA_DIR"])
        files = {str(p) for p in graph_dir.rglob("*.lbug")
                 if ".templates" not in p.parts and ".quarantine" not in p.parts}
        assert files == paths
        assert stray_files(graph_dir) == []


def test_sigterm_lets_work_in_flight_finish_and_ends_streams_with_a_final_event(
    postgres_database: Database, postgres_app_url: str, redis_prefix: str, tmp_path: Path,
) -> None:
    database = postgres_database
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user, paid=False)
    env = server_env(tmp_path, DATABASE_URL=postgres_app_url, REDIS_URL=REDIS_URL,
                     REDIS_KEY_PREFIX=redis_prefix, SHUTDOWN_GRACE_SECONDS=20,
                     PROVISIONING_RESUME_INTERVAL_SECONDS=0)

    with api_process(env, tmp_path / "server.log") as server, \
            template_build_held(Path(env["GRAPH_DATA_DIR"])) as release:
        # The provisioning claims, then waits to build its schema's template.
        operation_id = server.pay(sub_id).json()["operation_id"]
        events: list[tuple[str, dict[str, Any]]] = []

        def follow() -> None:
            with httpx.stream("GET", f"{server.url}/v1/operations/{operation_id}/events",
                              headers={"Authorization": f"Bearer {user.api_key}"},
                              timeout=30) as response:
                kind = ""
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        kind = line.split(":", 1)[1].strip()
                    elif line.startswith("data:"):
                        events.append((kind, json.loads(line.split(":", 1)[1])))

        with ThreadPoolExecutor(1) as pool:
            stream = pool.submit(follow)
            _wait_for(lambda: any(kind == "operation_progress" for kind, _ in events))
            server.signal(signal.SIGTERM)
            stream.result(timeout=30)  # the stream ends by itself, properly
            assert events[-1][0] == "stream_error"
            assert "restarting" in events[-1][1]["message"]
            time.sleep(0.5)
            assert server.process.poll() is None  # still finishing its provisioning
            release()  # the provisioning can go on, and finish within the grace
            # uvicorn re-raises the SIGTERM it handled once it is done: the usual exit.
            assert server.wait(30) in (0, -signal.SIGTERM)
    with database.session() as session:
        assert session.get(Subscription, sub_id).status == "active"


def test_the_grace_running_out_gives_the_claim_back(
    postgres_database: Database, postgres_app_url: str, redis_prefix: str, tmp_path: Path,
) -> None:
    database = postgres_database
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user, paid=False)
    env = server_env(tmp_path, DATABASE_URL=postgres_app_url, REDIS_URL=REDIS_URL,
                     REDIS_KEY_PREFIX=redis_prefix, SHUTDOWN_GRACE_SECONDS=2,
                     PROVISIONING_RESUME_INTERVAL_SECONDS=0)

    with api_process(env, tmp_path / "server.log") as server, \
            template_build_held(Path(env["GRAPH_DATA_DIR"])):
        server.pay(sub_id)
        _wait_for(lambda: _claimed(database, sub_id))
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait(30) in (0, -signal.SIGTERM)
        took = time.monotonic() - signalled
        with database.session() as session:
            row = session.get(Subscription, sub_id)
            assert row is not None and row.status == "provisioning"
            assert row.lease_expires_at is not None and row.lease_expires_at <= utcnow()
    assert took < 15, took  # the 2 s grace, not the lease or a hang


@contextmanager
def template_build_held(graph_dir: Path) -> Iterator[Callable[[], None]]:
    """Hold the lock a process takes to build the base schema's template: a provisioning
    needing it waits there, claim held, outside any database transaction."""
    templates = graph_dir / ".templates"
    templates.mkdir(parents=True, exist_ok=True)
    lock = open(templates / f"{ddl_fingerprint(schema_ddl([]))}.lock", "w")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield lock.close  # closing releases the lock
    finally:
        lock.close()


def _claimed(database: Database, sub_id: str) -> bool:
    with database.session() as session:
        row = session.get(Subscription, sub_id)
        return row is not None and row.claim_token is not None


def _wait_for(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_second_sigterm_exits_at_once(
    postgres_database: Database, postgres_app_url: str, redis_prefix: str, tmp_path: Path,
) -> None:
    database = postgres_database
    sub_id = paid_graph_subscription(database, new_customer(database), paid=False)
    env = server_env(tmp_path, DATABASE_URL=postgres_app_url, REDIS_URL=REDIS_URL,
                     REDIS_KEY_PREFIX=redis_prefix, SHUTDOWN_GRACE_SECONDS=60,
                     PROVISIONING_RESUME_INTERVAL_SECONDS=0)

    with api_process(env, tmp_path / "server.log") as server, \
            template_build_held(Path(env["GRAPH_DATA_DIR"])):
        server.pay(sub_id)
        _wait_for(lambda: _claimed(database, sub_id))
        server.signal(signal.SIGTERM)
        _wait_for(lambda: "shutdown: waiting up to 60 s" in server.output())
        signalled = time.monotonic()
        server.signal(signal.SIGTERM)
        server.wait(30)
        took = time.monotonic() - signalled
        with database.session() as session:
            row = session.get(Subscription, sub_id)
            assert row is not None and row.lease_expires_at is not None
            assert row.lease_expires_at <= utcnow()  # given back on the way out
    assert took < 10, took  # not the 60 s grace
