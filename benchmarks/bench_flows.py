"""Each flow's cost, measured side by side in one run: bare step bodies, the direct executor, and
the Dagster job through ``execute_in_process``; for the graph flow also a run launched through the
webserver's GraphQL API and started by the daemon (submit to success, as a caller waits for it).

    python -m benchmarks.bench_flows [--runs 15] [--launched-runs 5] [--postgres URL] [--redis URL]

Methods take turns within every round (bare, direct, job, bare, ...), so a noisy neighbour slows
all three alike; the table gives medians, p95 and each method's ratio to the bare bodies.
By default the app database is SQLite and the Dagster instance a SQLite one in a temporary folder;
``--postgres`` puts both the app database and the Dagster instance (dagster-postgres) on a
PostgreSQL server, in databases made for the run and dropped after; ``--redis`` keeps the
direct executor's operation events in Redis (under a prefix of the run's own) instead of memory.
The graph flow's launched runs end with the ratio of a launched run to the direct executor.

With ``--postgres`` and ``--redis`` the graph flow is also set against a **floor** measured in
the same rounds: one PostgreSQL write transaction with its commit, a copy of the graph's schema
template synced with its folder, and one Redis ``XADD``: what any provisioning must at least
do. And it is called **back to back** through the helper API (``run_graph_provisioning_sync``),
as a script would, each call's report to Dagster running beside the next call.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from dagster import DagsterInstance, RunConfig, instance_for_test
from sqlalchemy import text

from benchmarks.scratch import ScratchDatabases, delete_redis_prefix
from provisioning_pipelines.cli.dev import dagster_servers
from provisioning_pipelines.direct import DirectExecutor, helper_api
from provisioning_pipelines.direct.launcher import GraphQLJobLauncher
from provisioning_pipelines.flows import (
    GRAPH_FLOW,
    REPOSITORY_FLOW,
    SUBGRAPH_FLOW,
    Flow,
    StepContext,
    SubgraphConfig,
    SubscriptionConfig,
    execute_flow,
)
from provisioning_pipelines.orchestration.jobs import JOBS
from provisioning_pipelines.runtime.reporting import MaterializationReporter
from provisioning_pipelines.runtime.resources import build_resources, step_context
from provisioning_pipelines.services import requests as subscriptions
from provisioning_pipelines.services.access import accounts
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.settings import load_settings
from provisioning_pipelines.storage.db import Database, dispose_database
from provisioning_pipelines.storage.ladybug.files import fsync_dir, fsync_file
from provisioning_pipelines.storage.migrate import upgrade

METHODS = ("bare bodies", "direct executor", "execute_in_process")


def direct_context(resources: dict[str, Any]) -> StepContext:
    return step_context(resources, method="direct", log=logging.getLogger("bench"),
                        operation_id=None)


def bare(flow: Flow, config: Any, ctx: Any) -> Any:
    """The step functions called one after the other: the work and nothing else."""
    value = config
    for step in flow.steps:
        value = step.fn(ctx, value)
    return value


class Workload:
    """Fresh input for every call: a paid subscription, or a subgraph name under a parent."""

    def __init__(self, database: Database, resources: dict[str, Any]) -> None:
        self.database = database
        self.resources = resources
        with database.session() as session:
            self.user = accounts.create_user(session, email=f"bench-{uuid.uuid4().hex[:8]}@x.io")
        self.parent: str | None = None
        self.children = 0

    def _paid(self, make: Callable[[Any], Any]) -> SubscriptionConfig:
        with self.database.session() as session:
            subscription = make(session)
            billing.mark_paid(session, subscription.id)
        return SubscriptionConfig(subscription_id=subscription.id)

    def graph(self, plan_name: str = "ladybug-standard") -> SubscriptionConfig:
        return self._paid(lambda s: subscriptions.request_graph(
            s, user_id=self.user.user_id, plan_name=plan_name,
            graph={"name": "bench", "schema_extensions": ["accounting", "crm"]}))

    def repository(self) -> SubscriptionConfig:
        user = self.user
        with self.database.session() as session:  # a new user each time: a new grant
            user = accounts.create_user(session, email=f"bench-{uuid.uuid4().hex[:8]}@x.io")
        return self._paid(lambda s: subscriptions.request_repository(
            s, user_id=user.user_id, plan_name="sec-advanced"))

    def subgraph(self) -> SubgraphConfig:
        if self.parent is None or self.children == 25:
            config = self.graph("ladybug-xlarge")
            outcome = execute_flow(GRAPH_FLOW, config, direct_context(self.resources))
            self.parent, self.children = outcome.result["graph_id"], 0
        self.children += 1
        return SubgraphConfig(user_id=self.user.user_id, parent_graph_id=self.parent,
                              name=f"s{self.children}")


@contextmanager
def environment(postgres: str | None, redis_url: str | None = None
                ) -> Iterator[tuple[dict[str, Any], Database, DagsterInstance, Path, str | None]]:
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        made: list[str] = []
        if postgres:
            scratch = stack.enter_context(ScratchDatabases(postgres))
            made = [scratch.create(f"pp_bench_{uuid.uuid4().hex[:8]}") for _ in range(3)]
            app_url, overrides = made[0], {"storage": {"postgres": {"postgres_url": made[1]}}}
        else:
            app_url, overrides = f"sqlite:///{folder}/app.db", None
        upgrade(app_url)
        events: dict[str, str] = {}
        if redis_url:
            events = {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}:"}
            stack.callback(delete_redis_prefix, redis_url, events["REDIS_KEY_PREFIX"])
        resources = build_resources(load_settings(DATABASE_URL=app_url,
                                                  GRAPH_DATA_DIR=f"{folder}/graphs", **events))
        Path(folder, "graphs").mkdir()
        Path(folder, "dagster").mkdir()
        try:
            with instance_for_test(overrides=overrides, temp_dir=f"{folder}/dagster") as inst:
                yield (resources, resources["database"].get(), inst, Path(folder),
                       made[2] if postgres else None)
        finally:
            dispose_database(app_url)


def measure(flow: Flow, make_config: Callable[[], Any], resources: dict[str, Any],
            instance: DagsterInstance, runs: int, floor: Callable[[Any], Floor] | None = None
            ) -> dict[str, list[float]]:
    job = JOBS[flow.name]
    first_op = flow.steps[0].name
    ctx = direct_context(resources)
    reporter = MaterializationReporter(instance, resources["operation_events"].get(), timeout=15)
    executor = DirectExecutor(resources, reporter=reporter)
    calls: dict[str, Callable[[Any], Any]] = {
        "bare bodies": lambda config: bare(flow, config, ctx),
        # with the operation's record and events (in memory) and the background report
        "direct executor": lambda config: executor.run(flow, config),
        "execute_in_process": lambda config: job.execute_in_process(
            run_config=RunConfig(ops={first_op: config}), instance=instance,
            resources=resources),
    }
    for call in calls.values():  # warm up imports, templates and pools
        call(make_config())
    floored = floor(resources) if floor is not None else None
    if floored is not None:
        calls["floor"] = floored
    methods = [*METHODS, *(["floor"] if floored is not None else [])]
    times: dict[str, list[float]] = {method: [] for method in methods}
    for _ in range(runs):
        for method in methods:
            config = make_config()
            started = time.perf_counter()
            calls[method](config)
            times[method].append((time.perf_counter() - started) * 1000)
    executor.close()
    if floored is not None:
        floored.close()
    return times


LAUNCHED_DAGSTER_YAML = """\
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
telemetry:
  enabled: false
"""


def measure_launched(workload: Workload, resources: dict[str, Any], runs: int,
                     postgres_url: str | None, folder: Path) -> list[float]:
    """Graph provisioning through a launched run: webserver + daemon + run process."""
    home = folder / "launched_home"
    home.mkdir()
    config = LAUNCHED_DAGSTER_YAML
    if postgres_url:
        config += f"storage:\n  postgres:\n    postgres_url: {postgres_url}\n"
    (home / "dagster.yaml").write_text(config)
    env = {"DATABASE_URL": resources["database"].url,
           "GRAPH_DATA_DIR": resources["graph_engine"].data_dir}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    times = []
    with dagster_servers(home, port=port, env=env) as url:
        launcher = GraphQLJobLauncher(url, resources, poll_seconds=0.05)
        launcher.run(GRAPH_FLOW, workload.graph(), operation_id="op_warmup")
        for index in range(runs):
            config_ = workload.graph()
            started = time.perf_counter()
            launcher.run(GRAPH_FLOW, config_, operation_id=f"op_bench_{index}")
            times.append((time.perf_counter() - started) * 1000)
    return times


class Floor:
    """What a provisioning must at least do, timed as one: a write transaction and its commit,
    the schema template copied and synced with its folder, one ``XADD``."""

    def __init__(self, database: Database, folder: Path, redis_url: str, prefix: str) -> None:
        self.database = database
        with database.engine.begin() as connection:
            connection.execute(text("CREATE TABLE bench_floor (id serial PRIMARY KEY, "
                                    "at timestamptz NOT NULL DEFAULT now())"))
        self.template = next(folder.rglob(".templates/*.lbug"))
        self.target = folder / "graphs" / "floor"
        self.target.mkdir()
        self.redis = redis.Redis.from_url(redis_url)
        self.stream = f"{prefix}floor"
        self.count = 0

    def __call__(self, _config: Any) -> None:
        self.count += 1
        with self.database.engine.begin() as connection:
            connection.execute(text("INSERT INTO bench_floor DEFAULT VALUES"))
        copy = self.target / f"g{self.count}.lbug"
        shutil.copyfile(self.template, copy)
        fsync_file(copy)
        fsync_dir(self.target)
        self.redis.xadd(self.stream, {"event": "completed"})
        os.unlink(copy)

    def close(self) -> None:
        self.redis.delete(self.stream)
        self.redis.close()


def back_to_back(workload: Workload, resources: dict[str, Any], instance: DagsterInstance,
                 runs: int) -> list[float]:
    """The graph flow through the helper API, one call right after another (the previous
    call's report to Dagster still running), as a script provisioning a list would."""
    reporter = MaterializationReporter(instance, resources["operation_events"].get(), timeout=15)
    previous = helper_api.configure(DirectExecutor(resources, reporter=reporter))
    try:
        configs = [workload.graph() for _ in range(runs + 1)]
        helper_api.run_graph_provisioning_sync(configs[0].subscription_id)  # warm
        times = []
        for config in configs[1:]:
            started = time.perf_counter()
            helper_api.run_graph_provisioning_sync(config.subscription_id)
            times.append((time.perf_counter() - started) * 1000)
        return times
    finally:
        executor = helper_api.configure(previous)
        if executor is not None:
            executor.close()


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--launched-runs", type=int, default=5,
                        help="launched runs of the graph flow (0 to skip; ~3 s each)")
    parser.add_argument("--postgres", help="e.g. postgresql+psycopg2://postgres@127.0.0.1/postgres")
    parser.add_argument("--redis", help="operation events in Redis, e.g. redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    backend = "PostgreSQL + dagster-postgres" if args.postgres else "SQLite + SQLite instance"
    backend += ", events in Redis" if args.redis else ", events in memory"
    print(f"flows, {args.runs} runs per method, interleaved; {backend}")
    print(f"{'flow':<18}{'method':<21}{'median ms':>10}{'p95 ms':>10}{'x bare':>9}")
    with environment(args.postgres, args.redis) as (resources, database, instance, folder,
                                                    extra_postgres):
        workload = Workload(database, resources)
        floored = args.postgres and args.redis
        for flow, make_config in ((GRAPH_FLOW, workload.graph),
                                  (REPOSITORY_FLOW, workload.repository),
                                  (SUBGRAPH_FLOW, workload.subgraph)):
            floor = (lambda _resources: Floor(database, folder, args.redis, "bench-floor-"
                                              f"{uuid.uuid4().hex[:8]}:")) \
                if floored and flow is GRAPH_FLOW else None
            times = measure(flow, make_config, resources, instance, args.runs, floor)
            if flow is GRAPH_FLOW and floored:
                times["back to back"] = back_to_back(workload, resources, instance, args.runs)
            if flow is GRAPH_FLOW and args.launched_runs:
                times["launched run"] = measure_launched(
                    workload, resources, args.launched_runs, extra_postgres, folder)
            base = statistics.median(times["bare bodies"])
            for method in times:
                median = statistics.median(times[method])
                print(f"{flow.name:<18}{method:<21}{median:>10.2f}{p95(times[method]):>10.2f}"
                      f"{median / base:>9.2f}")
            if "floor" in times:
                floor_ms = statistics.median(times["floor"])
                for method in ("direct executor", "back to back"):
                    print(f"{flow.name:<18}{method} / floor: "
                          f"{statistics.median(times[method]) / floor_ms:.2f}x (goal: at most 2)")
            if "launched run" in times:
                ratio = (statistics.median(times["launched run"])
                         / statistics.median(times["direct executor"]))
                print(f"{flow.name:<18}launched run / direct executor: {ratio:.0f}x")


if __name__ == "__main__":
    main()
