"""``PROVISIONING_PROCESSES=1``: the API answers and hands the flow over; a provisioning process
beside it, at a lower priority, runs it. A provisioner stopped with work taken and then killed
is started again by ``serve`` and runs that work, once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import Graph, Subscription, utcnow
from provisioning_pipelines.storage.work_queue import WorkItem, WorkQueue
from tests.api.test_crashes import _claimed as claimed
from tests.api.test_crashes import operation, statuses, template_build_held
from tests.api.test_workers import children_of, wait_for
from tests.conftest import REDIS_URL
from tests.factories import new_customer, paid_graph_subscription
from tests.serving import CLI, api_process, server_env

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def provisioners_of(pid: int) -> list[int]:
    return [child for child in children_of(pid) if niceness(child) > 0]


def test_an_item_taken_and_not_finished_goes_back_to_the_head_of_the_queue() -> None:
    queue = WorkQueue(REDIS_URL, prefix=f"pp-test-{uuid.uuid4().hex[:8]}:")
    try:
        first, second = (WorkItem("graph", {"subscription_id": f"sub_{n}"}, f"op_{n}")
                         for n in (1, 2))
        queue.push(first)
        queue.push(second)
        raw, taken = queue.take("a")  # type: ignore[misc]
        assert taken == first and queue.waiting() == 1

        assert queue.give_back("a") == 1  # "a" died with it: the next one takes it first

        raw, again = queue.take("b")  # type: ignore[misc]
        assert again == first
        queue.done("b", raw)
        assert queue.give_back("b") == 0 and queue.waiting() == 1
        assert queue.take("b", timeout=0.1)[1] == second  # type: ignore[index]
        assert queue.take("b", timeout=0.1) is None
    finally:
        queue.close()


def test_flows_run_in_a_provisioning_process_and_survive_its_death(
    postgres_database: Database, postgres_app_url: str, redis_prefix: str, tmp_path: Path,
) -> None:
    database = postgres_database
    user = new_customer(database)
    first, second = (paid_graph_subscription(database, user, paid=False) for _ in range(2))
    env = server_env(tmp_path, DATABASE_URL=postgres_app_url, REDIS_URL=REDIS_URL,
                     REDIS_KEY_PREFIX=redis_prefix, PROVISIONING_PROCESSES="1")

    with api_process(env, tmp_path / "serve.log") as server:
        wait_for(lambda: len(provisioners_of(server.process.pid)) == 1, 60,
                 "the provisioning process did not start")
        [provisioner] = provisioners_of(server.process.pid)
        assert len(children_of(server.process.pid)) == 2  # and one API worker, not niced
        answer = server.pay(first)
        assert answer.status_code == 200
        wait_for(lambda: operation(server.url, user.api_key, answer.json()["operation_id"])
                 ["status"] == "completed", 60, "the first graph was not provisioned")

        os.kill(provisioner, signal.SIGSTOP)  # it may take the next item, but not run it
        answer = server.pay(second)
        assert answer.status_code == 200  # the answer waits for nobody
        watched = answer.json()["operation_id"]
        time.sleep(1)  # had the API run it itself, it would be active by now
        assert statuses(database, [second]) == {"provisioning": 1}
        os.kill(provisioner, signal.SIGKILL)

        wait_for(lambda: provisioners_of(server.process.pid) not in ([], [provisioner]), 60,
                 "the provisioning process was not started again")
        wait_for(lambda: operation(server.url, user.api_key, watched)["status"] == "completed",
                 60, "the work the dead provisioner had was not run")
        assert statuses(database, [first, second]) == {"active": 2}

        server.signal(signal.SIGTERM)
        assert server.wait(60) == 0
    assert children_of(server.process.pid) == []
    with database.session() as session:
        per_subscription = dict(session.execute(
            select(Graph.subscription_id, func.count()).group_by(Graph.subscription_id)).all())
    assert per_subscription == {first: 1, second: 1}


def test_provisioning_processes_need_postgres_and_redis(tmp_path: Path) -> None:
    done = subprocess.run([CLI, "serve"], env=server_env(tmp_path, PROVISIONING_PROCESSES="2"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "PROVISIONING_PROCESSES" in done.stderr and "REDIS_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_provisioner_stopped_mid_flow_gives_its_claim_and_item_back(
    postgres_database: Database, postgres_app_url: str, redis_prefix: str, tmp_path: Path,
) -> None:
    """SIGTERM while a flow waits (on the schema template's build, held here): after the 2 s
    grace the claim is given back and the item put back on the queue; the next ``serve`` runs
    it."""
    database = postgres_database
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user, paid=False)
    env = server_env(tmp_path, DATABASE_URL=postgres_app_url, REDIS_URL=REDIS_URL,
                     REDIS_KEY_PREFIX=redis_prefix, PROVISIONING_PROCESSES="1",
                     SHUTDOWN_GRACE_SECONDS=2, PROVISIONING_RESUME_INTERVAL_SECONDS=0)
    queue = WorkQueue(REDIS_URL, prefix=redis_prefix)
    try:
        with template_build_held(Path(env["GRAPH_DATA_DIR"])) as release:
            with api_process(env, tmp_path / "first.log") as server:
                watched = server.pay(sub_id).json()["operation_id"]
                wait_for(lambda: claimed(database, sub_id), 60, "the flow was not claimed")
                signalled = time.monotonic()
                server.signal(signal.SIGTERM)
                assert server.wait(60) == 0
            assert time.monotonic() - signalled < 15  # the grace, not the lease or a hang
            with database.session() as session:
                row = session.get(Subscription, sub_id)
                assert row is not None and row.status == "provisioning"
                assert row.lease_expires_at is not None and row.lease_expires_at <= utcnow()
            assert queue.waiting() == 1
            release()

        with api_process(env, tmp_path / "second.log") as server:
            wait_for(lambda: operation(server.url, user.api_key, watched)["status"]
                     == "completed", 60, "the item put back was not run")
            server.signal(signal.SIGTERM)
            assert server.wait(60) == 0
        assert statuses(database, [sub_id]) == {"active": 1}
    finally:
        queue.close()
