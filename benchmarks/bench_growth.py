"""Provisioning latency on an empty install and on one holding ``--graphs`` graphs, side by side.

    python -m benchmarks.bench_growth [--graphs 10000] [--runs 40] [--postgres URL] [--redis URL]

Two installs in one run, each its own PostgreSQL database, Redis key prefix and graph folder:
one stays empty, the other is first grown to ``--graphs`` graphs through the real graph flow
(so their rows, operation events and LadybugDB files are all there). Then graph provisionings
through the direct executor take turns between the two (empty, grown, empty, ...), so a noisy
neighbour slows both alike, and the medians and their ratio are printed. Last, every statement
one provisioning sends to the grown install is shown with PostgreSQL's ``EXPLAIN``: each
SELECT, UPDATE, DELETE and WITH (rows written in one statement) with the plan's scan lines, so a
sequential scan would stand out.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select

from benchmarks.bench_flows import Workload
from benchmarks.scratch import ScratchDatabases, delete_redis_prefix
from provisioning_pipelines.direct import DirectExecutor
from provisioning_pipelines.flows import GRAPH_FLOW
from provisioning_pipelines.runtime.resources import build_resources
from provisioning_pipelines.settings import load_settings
from provisioning_pipelines.storage.migrate import upgrade
from provisioning_pipelines.storage.models import Graph


class Install:
    """A PostgreSQL database, Redis prefix and graph folder of its own, with an executor."""

    def __init__(self, label: str, postgres: str, redis_url: str, folder: Path) -> None:
        self.label = label
        self.name = f"pp_bench_growth_{label}_{uuid.uuid4().hex[:6]}"
        self.scratch = ScratchDatabases(postgres)
        self.url = self.scratch.create(self.name)
        self.prefix = f"{self.name}:"
        self.redis_url = redis_url
        upgrade(self.url)
        self.resources = build_resources(load_settings(
            DATABASE_URL=self.url, GRAPH_DATA_DIR=str(folder / self.name),
            REDIS_URL=redis_url, REDIS_KEY_PREFIX=self.prefix, LOCAL_HOST_CAPACITY=1_000_000))
        self.database = self.resources["database"].get()
        self.executor = DirectExecutor(self.resources, max_concurrency=8)
        self.workload = Workload(self.database, self.resources)

    def provision(self, config: Any = None) -> float:
        config = config or self.workload.graph()
        started = time.perf_counter()
        self.executor.run(GRAPH_FLOW, config)
        return (time.perf_counter() - started) * 1000

    def graphs(self) -> int:
        with self.database.session() as session:
            return int(session.scalar(select(func.count()).select_from(Graph)) or 0)

    def close(self) -> None:
        self.executor.close()
        self.scratch.drop_all()
        delete_redis_prefix(self.redis_url, self.prefix)


def grow(install: Install, graphs: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        for done, _ in enumerate(pool.map(lambda _: install.provision(), range(graphs)), 1):
            if done % 1000 == 0:
                print(f"  grown to {done} graphs ({time.perf_counter() - started:.0f} s)",
                      flush=True)
    return time.perf_counter() - started


def explain_path(install: Install) -> list[tuple[str, list[str]]]:
    """Every statement one provisioning sends, with its plan's scan lines."""
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.lstrip().split(" ", 1)[0].upper() in ("SELECT", "UPDATE", "DELETE", "WITH"):
            sent.append((statement, parameters))

    engine = install.database.engine
    config = install.workload.graph()  # the customer's paid subscription, made beforehand
    event.listen(engine, "before_cursor_execute", capture)
    try:
        install.provision(config)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    plans = []
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for statement, parameters in sent:
            cursor.execute("EXPLAIN " + statement, parameters)
            lines = [row[0].strip() for row in cursor.fetchall()]
            scans = [line.split("  (")[0] for line in lines if "Scan" in line or "Result" in line]
            plans.append((" ".join(statement.split()), scans or [lines[0].split("  (")[0]]))
        raw.rollback()
    finally:
        raw.close()
    return plans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graphs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--postgres", default="postgresql+psycopg2://postgres@127.0.0.1:5432/"
                        "postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    folder = Path(tempfile.mkdtemp(prefix="bench-growth-"))
    empty = grown = None
    try:
        empty = Install("empty", args.postgres, args.redis, folder)
        grown = Install("grown", args.postgres, args.redis, folder)
        print(f"growing one install to {args.graphs} graphs through the graph flow")
        took = grow(grown, args.graphs)
        files = sum(1 for _ in (folder / grown.name).rglob("*.lbug"))
        print(f"  {grown.graphs()} graphs, {files} files in {took:.0f} s")
        for install in (empty, grown):  # warm both the same way
            for _ in range(3):
                install.provision()
        times: dict[str, list[float]] = {"empty": [], "grown": []}
        for _ in range(args.runs):
            times["empty"].append(empty.provision())
            times["grown"].append(grown.provision())
        base = statistics.median(times["empty"])
        print(f"graph flow, direct executor, PostgreSQL + Redis, {args.runs} runs each, "
              "taking turns")
        for label, values in times.items():
            values.sort()
            median = statistics.median(values)
            print(f"  {label:<6} ({(empty if label == 'empty' else grown).graphs():>6} graphs) "
                  f"median {median:6.2f} ms  p95 {values[int(len(values) * 0.95) - 1]:6.2f} ms"
                  f"  x empty {median / base:.3f}")
        print("every statement of one provisioning on the grown install, with EXPLAIN:")
        for statement, scans in explain_path(grown):
            print(f"  {statement[:110]}")
            for scan in scans:
                print(f"      {scan}")
    finally:
        for install in (empty, grown):
            if install is not None:
                install.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
