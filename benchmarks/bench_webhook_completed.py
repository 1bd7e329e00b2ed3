"""A paid webhook to its operation's completed event over HTTP, against a bare provisioning.

    python -m benchmarks.bench_webhook_completed [--runs 30] [--postgres URL] [--redis URL]

One ``serve`` (PostgreSQL app database and dagster-postgres instance made for the run, events
in Redis under a prefix of its own, direct provisioning on). Each round, taking turns so that a
busy moment falls on both:

- **webhook → completed**: a signed payment webhook sent, then the operation it answers with
  read on ``GET /v1/operations/{id}/events`` until its ``completed`` event: what a customer who
  just paid waits for, the exactly-once claim, the graph's rows, its file, the events and the
  HTTP on both sides included;
- **bare file and rows**: what a provisioning would cost written plainly, in this process: a
  new LadybugDB file made with five DDL statements, and three SQL inserts in one transaction.

Printed: medians and p90 of both and their ratio (goal: at most 0.5).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import ladybug
from sqlalchemy import create_engine, text

from benchmarks.bench_burst import CLI, SECRET, body, free_port
from benchmarks.scratch import ScratchDatabases, delete_redis_prefix
from provisioning_pipelines.services import requests as subscriptions
from provisioning_pipelines.services.access import accounts
from provisioning_pipelines.storage.db import get_database
from provisioning_pipelines.storage.events.contract import EVENT_COMPLETED, TERMINAL_EVENT_TYPES
from provisioning_pipelines.storage.migrate import upgrade

DDL = (
    "CREATE NODE TABLE Entity(identifier STRING, name STRING, PRIMARY KEY(identifier))",
    "CREATE NODE TABLE Document(identifier STRING, title STRING, PRIMARY KEY(identifier))",
    "CREATE NODE TABLE Person(identifier STRING, name STRING, PRIMARY KEY(identifier))",
    "CREATE REL TABLE MENTIONS(FROM Document TO Entity)",
    "CREATE REL TABLE WORKS_FOR(FROM Person TO Entity)",
)


class Bare:
    """A graph provisioned plainly: its file with its schema, three rows."""

    def __init__(self, database_url: str, folder: Path) -> None:
        self.engine = create_engine(database_url)
        with self.engine.begin() as connection:
            for table in ("bare_graphs", "bare_grants", "bare_events"):
                connection.execute(text(f"CREATE TABLE {table} (id text PRIMARY KEY, "
                                        "at timestamptz NOT NULL DEFAULT now())"))
        self.folder = folder
        folder.mkdir(parents=True)

    def __call__(self) -> None:
        graph_id = uuid.uuid4().hex
        database = ladybug.Database(str(self.folder / f"{graph_id}.lbug"))
        connection = ladybug.Connection(database)
        for statement in DDL:
            connection.execute(statement)
        connection.close()
        database.close()
        with self.engine.begin() as sql:
            for table in ("bare_graphs", "bare_grants", "bare_events"):
                sql.execute(text(f"INSERT INTO {table} (id) VALUES (:id)"), {"id": graph_id})

    def close(self) -> None:
        self.engine.dispose()


def completed_after_webhook(url: str, api_key: str, subscription_id: str,
                            client: httpx.Client) -> float:
    """Seconds from sending the payment to reading its operation's completed event."""
    payload, headers = body(subscription_id)
    started = time.perf_counter()
    answer = client.post(f"{url}/v1/webhooks/billing", content=payload, headers=headers)
    operation_id = answer.json()["operation_id"]
    with client.stream("GET", f"{url}/v1/operations/{operation_id}/events",
                       headers={"Authorization": f"Bearer {api_key}"}) as stream:
        seen = []
        for line in stream.iter_lines():
            seen.append(line)
            if line == f"event: {EVENT_COMPLETED}":
                return time.perf_counter() - started
            if line.removeprefix("event: ") in TERMINAL_EVENT_TYPES:
                raise RuntimeError(f"operation {operation_id} ended {line}")
    raise RuntimeError(f"operation {operation_id}: the stream ended without completing: {seen}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--postgres", default="postgresql+psycopg2://postgres@127.0.0.1:5432/"
                        "postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    name = f"pp_bench_completed_{uuid.uuid4().hex[:8]}"
    folder = Path(tempfile.mkdtemp(prefix="bench-completed-"))
    scratch = ScratchDatabases(args.postgres)
    prefix = f"{name}:"
    process = None
    try:
        database_url = scratch.create(name)
        dagster_url = scratch.create(f"{name}_dagster")
        upgrade(database_url)
        with get_database(database_url).session() as session:
            user = accounts.create_user(session, email=f"{name}@example.com")
            ids = [subscriptions.request_graph(session, user_id=user.user_id,
                                               plan_name="ladybug-standard",
                                               graph={"name": f"g{i}"}).id
                   for i in range(args.runs + 1)]
        (folder / "dagster").mkdir()
        (folder / "dagster" / "dagster.yaml").write_text(
            "storage:\n  postgres:\n    postgres_url:\n      env: DAGSTER_PG_URL\n"
            "telemetry:\n  enabled: false\n")
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(folder),
               "DATA_DIR": str(folder / "data"), "GRAPH_DATA_DIR": str(folder / "graphs"),
               "DATABASE_URL": database_url, "REDIS_URL": args.redis,
               "REDIS_KEY_PREFIX": prefix, "BILLING_WEBHOOK_SECRET": SECRET,
               "SESSION_SECRET": "session secret of the benchmark",
               "DAGSTER_HOME": str(folder / "dagster"), "DAGSTER_PG_URL": dagster_url}
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = subprocess.Popen([CLI, "serve", "--port", str(port)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with httpx.Client(timeout=30) as client:
            while True:
                try:
                    client.get(f"{url}/healthz")
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            bare = Bare(scratch.create(f"{name}_bare"), folder / "bare")
            completed_after_webhook(url, user.api_key, ids[0], client)  # warm: template, pools
            bare()
            times: dict[str, list[float]] = {"webhook → completed": [], "bare file and rows": []}
            for subscription_id in ids[1:]:
                times["webhook → completed"].append(
                    completed_after_webhook(url, user.api_key, subscription_id, client) * 1000)
                started = time.perf_counter()
                bare()
                times["bare file and rows"].append((time.perf_counter() - started) * 1000)
            bare.close()
        print(f"a paid webhook to its completed event over HTTP ({args.runs} runs, taking turns "
              "with a bare provisioning), PostgreSQL + Redis + dagster-postgres")
        for method, values in times.items():
            print(f"  {method:<22} median {statistics.median(values):7.2f} ms   p90 "
                  f"{statistics.quantiles(values, n=10)[-1]:7.2f} ms")
        ratio = (statistics.median(times["webhook → completed"])
                 / statistics.median(times["bare file and rows"]))
        print(f"  webhook → completed ÷ bare file and rows: {ratio:.2f} (goal: at most 0.5)")
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        scratch.drop_all()
        delete_redis_prefix(args.redis, prefix)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
