"""The graph flow on an in-process host and on a host server over loopback, side by side in one
run, on PostgreSQL with events in Redis.

    python -m benchmarks.bench_host_flow [--runs 100] [--postgres URL] [--redis URL]

Two app databases made for the run (dropped after): one whose graphs go to the in-process local
hosts (the embedded default), one with ``LOCAL_GRAPH_HOSTS=false`` and one ``host serve``
registered with ``hosts add``'s service, so that its graphs go over HTTP. Each call is the graph
flow's three steps through the step runner (claim, create, activate) for a fresh paid
subscription; calls alternate between the two, so a busy moment of the machine falls on both.
Printed: medians and p90 of each, and what the host server adds at the median (goal: at most
3 ms), and whether every graph is active with exactly one file on its host.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from benchmarks.bench_host import TOKEN, _free_port, _start
from benchmarks.scratch import ScratchDatabases, delete_redis_prefix
from provisioning_pipelines.flows import GRAPH_FLOW, SubscriptionConfig, execute_flow
from provisioning_pipelines.runtime.resources import build_resources, step_context
from provisioning_pipelines.services import requests as subscriptions
from provisioning_pipelines.services.access import accounts
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.services.capacity import remote
from provisioning_pipelines.settings import load_settings
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.hosts.client import HostClient
from provisioning_pipelines.storage.migrate import upgrade
from provisioning_pipelines.storage.models import Graph, Subscription


def paid(database: Database, user_id: str) -> SubscriptionConfig:
    with database.session() as session:
        subscription = subscriptions.request_graph(
            session, user_id=user_id, plan_name="ladybug-standard",
            graph={"name": "bench", "schema_extensions": ["accounting", "crm"]})
        billing.mark_paid(session, subscription.id)
    return SubscriptionConfig(subscription_id=subscription.id)


def setup(scratch: ScratchDatabases, folder: Path, redis_url: str, name: str,
          **settings: Any) -> tuple[dict[str, Any], Database, str]:
    url = scratch.create(f"pp_bench_hostflow_{name}_{uuid.uuid4().hex[:6]}")
    upgrade(url)
    prefix = f"bench-hostflow-{uuid.uuid4().hex[:8]}:"
    resources = build_resources(load_settings(
        DATABASE_URL=url, GRAPH_DATA_DIR=str(folder / name / "graphs"),
        BACKUP_DIR=str(folder / name / "backups"), REDIS_URL=redis_url,
        REDIS_KEY_PREFIX=prefix, LOCAL_HOST_CAPACITY=100_000, **settings))
    database = resources["database"].get()
    with database.session() as session:
        user = accounts.create_user(session, email=f"{name}-{uuid.uuid4().hex[:6]}@x.io")
    return resources, database, user.user_id


def check(database: Database, runs: int) -> bool:
    with database.session() as session:
        active = session.scalar(select(func.count()).select_from(Subscription)
                                .where(Subscription.status == "active"))
        graphs = session.scalar(select(func.count()).select_from(Graph))
    return active == graphs == runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--postgres", default="postgresql+psycopg2://postgres@127.0.0.1:5432/"
                        "postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    log = logging.getLogger("bench")
    with tempfile.TemporaryDirectory() as tmp, ScratchDatabases(args.postgres) as scratch:
        folder = Path(tmp)
        port = _free_port()
        server = _start(folder / "host-server", port)
        prefixes: list[str] = []
        try:
            local, local_db, local_user = setup(scratch, folder, args.redis, "local")
            served, served_db, served_user = setup(
                scratch, folder, args.redis, "served", LOCAL_GRAPH_HOSTS="false",
                GRAPH_HOST_TOKEN=TOKEN)
            prefixes = [r["operation_events"].key_prefix for r in (local, served)]
            with served_db.session() as session:
                remote.add_remote_host(session, host_id="bench-host",
                                       url=f"http://127.0.0.1:{port}", token=TOKEN,
                                       graph_data_dir=folder / "served" / "graphs")
            sides = {"in-process host": (local, local_db, local_user),
                     "host server": (served, served_db, served_user)}
            times: dict[str, list[float]] = {side: [] for side in sides}
            for resources, database, user_id in sides.values():  # warm up
                execute_flow(GRAPH_FLOW, paid(database, user_id),
                             step_context(resources, method="direct", log=log,
                                          operation_id=None))
            for _ in range(args.runs):
                for side, (resources, database, user_id) in sides.items():
                    config = paid(database, user_id)
                    ctx = step_context(resources, method="direct", log=log, operation_id=None)
                    started = time.perf_counter()
                    execute_flow(GRAPH_FLOW, config, ctx)
                    times[side].append((time.perf_counter() - started) * 1000)
            print(f"graph flow (claim, create, activate), {args.runs} runs each, alternating; "
                  "PostgreSQL, events in Redis")
            for side, values in times.items():
                p90 = statistics.quantiles(values, n=10)[-1]
                print(f"  {side:<16} median {statistics.median(values):6.2f} ms   "
                      f"p90 {p90:6.2f} ms")
            added = statistics.median(times["host server"]) - statistics.median(
                times["in-process host"])
            print(f"  the host server adds {added:+.2f} ms at the median (goal: at most 3 ms)")
            with HostClient("bench-host", f"http://127.0.0.1:{port}", TOKEN) as host:
                files = len(host.list().graphs)
            exact = check(local_db, args.runs + 1) and check(served_db, args.runs + 1) \
                and files == args.runs + 1
            print(f"  every graph active, one file each on the host server: {exact}")
        finally:
            server.terminate()
            server.wait(60)
            for prefix in prefixes:
                delete_redis_prefix(args.redis, prefix)


if __name__ == "__main__":
    main()
