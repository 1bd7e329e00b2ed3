"""``serve --workers 3``: several API processes on one port, sharing PostgreSQL and Redis.

Payments delivered at once land on whichever worker accepts them; each subscription still gets
exactly one graph, and every operation a client was given ends completed, whichever worker
provisioned it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import Graph, GraphHost
from tests.api.test_crashes import operation, statuses
from tests.conftest import REDIS_URL
from tests.factories import new_customer, paid_graph_subscription
from tests.serving import CLI, api_process, server_env

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

WORKERS = 3


def children_of(pid: int) -> list[int]:
    """The live worker processes ``serve`` spawned (not multiprocessing's resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and b"spawn_main" in command:
            found.append(int(stat.parent.name))
    return found


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_workers_racing_on_payments_make_one_graph_each_and_end_every_operation(
    postgres_database: Database, postgres_app_url: str, redis_prefix: str, tmp_path: Path,
) -> None:
    database = postgres_database
    user = new_customer(database)
    contested = paid_graph_subscription(database, user, paid=False)
    others = [paid_graph_subscription(database, user, paid=False) for _ in range(20)]
    env = server_env(tmp_path, DATABASE_URL=postgres_app_url, REDIS_URL=REDIS_URL,
                     REDIS_KEY_PREFIX=redis_prefix)

    with api_process(env, tmp_path / "serve.log", workers=WORKERS) as server:
        wait_for(lambda: len(children_of(server.process.pid)) >= WORKERS, 60,
                 "the workers did not start")
        workers = children_of(server.process.pid)
        # One subscription paid by 16 different events at once (each a genuine delivery, so no
        # event-id dedupe helps), and 20 more each delivered twice at once.
        deliveries = [(contested, f"evt_race_{i}") for i in range(16)]
        deliveries += [(sub, f"evt_{sub}") for sub in others for _ in range(2)]
        with ThreadPoolExecutor(len(deliveries)) as pool:
            answers = list(pool.map(lambda d: server.pay(d[0], event_id=d[1]), deliveries))
        assert [a.status_code for a in answers] == [200] * len(deliveries)
        operations = {a.json()["operation_id"] for a in answers} - {None}

        everyone = [contested, *others]
        wait_for(lambda: statuses(database, everyone) == {"active": len(everyone)}, 90,
                 f"not all active: {statuses(database, everyone)}")
        wait_for(lambda: all(operation(server.url, user.api_key, op)["status"] == "completed"
                             for op in operations), 60, "an operation did not complete")
        assert sorted(children_of(server.process.pid)) == sorted(workers)  # none died

        server.signal(signal.SIGTERM)
        assert server.wait(60) == 0
    assert children_of(server.process.pid) == []

    with database.session() as session:
        graphs = session.scalar(select(func.count()).select_from(Graph))
        per_subscription = session.execute(
            select(Graph.subscription_id, func.count()).group_by(Graph.subscription_id)).all()
        used = sum(session.scalars(select(GraphHost.slots_used)))
    assert graphs == len(everyone) == used
    assert {count for _sub, count in per_subscription} == {1}
    files = [p for p in Path(env["GRAPH_DATA_DIR"]).rglob("*.lbug")
             if ".templates" not in p.parts]
    assert len(files) == len(everyone)
    # At least one of the contested deliveries answered with the operation that made it.
    assert len(operations) >= len(everyone)


def test_several_workers_need_postgres_and_redis(tmp_path: Path) -> None:
    import subprocess

    done = subprocess.run([CLI, "serve", "--workers", "2"], env=server_env(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "DATABASE_URL and REDIS_URL" in done.stderr
    assert "Traceback" not in done.stderr



def test_a_worker_killed_is_replaced_and_the_port_keeps_answering(
    postgres_database: Database, postgres_app_url: str, redis_prefix: str, tmp_path: Path,
) -> None:
    env = server_env(tmp_path, DATABASE_URL=postgres_app_url, REDIS_URL=REDIS_URL,
                     REDIS_KEY_PREFIX=redis_prefix)
    with api_process(env, tmp_path / "serve.log", workers=2) as server:
        wait_for(lambda: len(children_of(server.process.pid)) >= 2, 60,
                 "the workers did not start")
        first = children_of(server.process.pid)
        os.kill(first[0], signal.SIGKILL)
        wait_for(lambda: len(set(children_of(server.process.pid)) - set(first)) == 1, 60,
                 "the dead worker was not replaced")
        assert len(children_of(server.process.pid)) == 2
        for _ in range(10):  # whichever worker takes it, the port answers
            health = httpx.get(f"{server.url}/healthz", timeout=30)
            assert health.status_code == 200, health.text
        assert "starting another" in server.output()
        server.signal(signal.SIGTERM)
        assert server.wait(60) == 0


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One scrape of ``/metrics``, on a connection of its own (so any worker may answer)."""
    answer = httpx.get(f"{url}/metrics", timeout=30)
    assert answer.status_code == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text)
            for sample in family.samples}


REFUSED = ("provisioning_webhooks_total", (("outcome", "refused"),))


@pytest.mark.parametrize("configured", [True, False], ids=["folder-set", "folder-unset"])
def test_every_scrape_of_metrics_shows_the_whole_server_whichever_worker_answers(
    postgres_database: Database, postgres_app_url: str, redis_prefix: str, tmp_path: Path,
    configured: bool,
) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    # What an earlier server left in the folder: a count, and a gauge of a worker now gone.
    subprocess.run([sys.executable, "-c", "from provisioning_pipelines import metrics; "
                    "metrics.WEBHOOKS.labels('refused').inc(1000); metrics.RUNNING.inc()"],
                   env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}, check=True)
    temporary = tmp_path / "tmp"  # where serve makes its own folder when none is set
    temporary.mkdir()
    env = server_env(tmp_path, DATABASE_URL=postgres_app_url, REDIS_URL=REDIS_URL,
                     REDIS_KEY_PREFIX=redis_prefix, TMPDIR=temporary,
                     **({"PROMETHEUS_MULTIPROC_DIR": folder} if configured else {}))
    forged = 20
    with api_process(env, tmp_path / "serve.log", workers=2) as server:
        wait_for(lambda: len(children_of(server.process.pid)) >= 2, 60,
                 "the workers did not start")
        for _ in range(forged):  # a connection each: the kernel spreads them over the workers
            answer = httpx.post(f"{server.url}/v1/webhooks/billing", content=b"{}", timeout=30,
                                headers={"Stripe-Signature": "t=1,v1=forged"})
            assert answer.status_code == 400
        scrapes = [scrape(server.url) for _ in range(10)]
        if not configured:
            [folder] = temporary.glob("provisioning-metrics-*")

        dead = children_of(server.process.pid)[0]
        os.kill(dead, signal.SIGKILL)
        wait_for(lambda: dead not in children_of(server.process.pid)
                 and len(children_of(server.process.pid)) == 2, 60,
                 "the dead worker was not replaced")
        after_the_kill = [scrape(server.url) for _ in range(10)]
        gone = not list(folder.glob(f"gauge_livesum_{dead}.db"))
        server.signal(signal.SIGTERM)
        assert server.wait(60) == 0

    assert [one[REFUSED] for one in scrapes] == [forged] * 10
    assert [one[("provisioning_running", ())] for one in scrapes] == [0] * 10
    assert all(("provisioning_open_streams", ()) in one for one in scrapes)  # no pid label
    assert [one[REFUSED] for one in after_the_kill] == [forged] * 10  # the dead one's count stays
    assert gone  # its gauges no longer count
    assert list(temporary.glob("provisioning-metrics-*")) == []  # serve removed its own folder
