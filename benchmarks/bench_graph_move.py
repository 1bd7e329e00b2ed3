"""A graph of at least 1 GiB backed up to the S3 store, restored onto another host, and moved
between two host servers, side by side with ``cp`` of its file and a plain upload and download
with the same client, in one run.

    python -m benchmarks.bench_graph_move [--gib 1] [--postgres URL]

Started for the run: a real SeaweedFS server and two ``host serve`` processes on loopback that
keep backups in it, and an app database (dropped after) where both are registered. One paid
graph is provisioned by the graph flow and filled on its host (``COPY`` of random text) until
its checkpointed file is past ``--gib``. Then, one after another: ``cp`` of its file; a plain
``upload_file`` and ``download_file`` of it with the store's boto3 client and transfer
settings; the backup flow (the host checkpoints, copies, uploads with its manifest); a restore
of that backup onto the other host (download, sha256 checked, swapped in); and two moves by the
move flow: one of the graph at rest, one while a writer writes to it every 20 ms (so that its
first copy is stale and the frozen copy is whole). For each move the write window is printed as
the flow measured it (freeze to switch) and as the writer saw it (its first refused write to
its first accepted one after). Goal: at most 5 s for 1 GiB.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.scratch import ScratchDatabases
from provisioning_pipelines.errors import GraphMoving
from provisioning_pipelines.flows import (
    GRAPH_FLOW,
    MOVE_FLOW,
    MoveConfig,
    SubscriptionConfig,
    execute_flow,
)
from provisioning_pipelines.flows.backup import BACKUP_FLOW, BackupConfig
from provisioning_pipelines.runtime.resources import build_resources, step_context
from provisioning_pipelines.services import requests as subscriptions
from provisioning_pipelines.services.access import accounts
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.services.capacity import remote
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.settings import load_settings
from provisioning_pipelines.storage.backup_store.s3 import S3Store
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.hosts.client import HostClient
from provisioning_pipelines.storage.ladybug import LadybugEngine
from provisioning_pipelines.storage.migrate import upgrade
from tests.flows.host_servers import start_hosts, stop_hosts  # the tests' own launchers
from tests.host_serving import TOKEN
from tests.seaweed import SeaweedServer

TIER = "ladybug-large"
ROW_TEXT = 1000  # characters of random text per row


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _csv(path: Path, first: int, rows: int) -> None:
    with path.open("w") as out:
        for row in range(first, first + rows):
            out.write(f"{row},{secrets.token_hex(ROW_TEXT // 2)}\n")


def _fill(path: Path, folder: Path, size: int) -> int:
    """COPY random text into the graph's file, its host stopped, until the checkpointed file is
    past ``size`` bytes. In this process, with a pool of 2 GiB: a host's own 256 MiB pool fails
    the checkpoint after a COPY of this size into a graph already past a few hundred MiB."""
    engine = LadybugEngine(data_buffer_pool_bytes=2 * 1024 ** 3)
    batch, first = 100_000, 0
    with engine.writing(path, pool=engine.data_buffer_pool_bytes) as conn:
        conn.execute("CREATE NODE TABLE Blob(id INT64, data STRING, PRIMARY KEY(id))")
        while path.stat().st_size < size:
            csv = folder / f"rows-{first}.csv"
            _csv(csv, first, batch)
            conn.execute(f"COPY Blob FROM '{csv}' (HEADER=false)")
            conn.execute("CHECKPOINT")
            csv.unlink()
            first += batch
    return path.stat().st_size


class Writer:
    """Writes a row every ``interval`` seconds to the graph, on the host its row names now (as
    the API does per request), and keeps when each write was refused or accepted."""

    def __init__(self, database: Database, clients: dict[str, HostClient], graph_id: str,
                 interval: float = 0.02) -> None:
        self.database, self.clients, self.graph_id = database, clients, graph_id
        self.interval = interval
        self.outcomes: list[tuple[float, bool]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._next = 10_000_000

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.database.session() as session:
                host_id = graphs.top_level_graph(session, self.graph_id).host_id
            self._next += 1
            try:
                self.clients[host_id].run_query(
                    self.graph_id, "CREATE (:Blob {id: $id, data: 'written during a move'})",
                    {"id": self._next}, read_only=False)
                self.outcomes.append((time.perf_counter(), True))
            except GraphMoving:
                self.outcomes.append((time.perf_counter(), False))
            except Exception as exc:  # a benchmark reports what went wrong, and goes on
                self.failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(self.interval)

    def window(self) -> float | None:
        """From the first refused write to the first accepted one after it."""
        refused = [at for at, ok in self.outcomes if not ok]
        if not refused:
            return None
        after = [at for at, ok in self.outcomes if ok and at > refused[0]]
        return (after[0] if after else refused[-1]) - refused[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--postgres", default="postgresql+psycopg2://postgres@127.0.0.1:5432/"
                        "postgres")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    log = logging.getLogger("bench")
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    with tempfile.TemporaryDirectory() as tmp, ScratchDatabases(args.postgres) as scratch:
        folder = Path(tmp)
        seaweed = SeaweedServer(folder / "seaweed").start()
        servers: list[Any] = []
        try:
            bucket = seaweed.bucket(f"bench-move-{uuid.uuid4().hex[:8]}")
            store_settings = {"BACKUP_STORE_URL": f"s3://{bucket}/backups",
                              "BACKUP_STORE_ENDPOINT_URL": seaweed.endpoint_url}
            servers = _hosts(folder, store_settings)
            url = scratch.create(f"pp_bench_move_{uuid.uuid4().hex[:6]}")
            upgrade(url)
            resources = build_resources(load_settings(
                DATABASE_URL=url, GRAPH_DATA_DIR=str(folder / "control-plane"),
                LOCAL_GRAPH_HOSTS="false", GRAPH_HOST_TOKEN=TOKEN,
                GRAPH_HOST_WORK_TIMEOUT_SECONDS=900, **store_settings))
            database = resources["database"].get()
            with database.session() as session:
                for process in servers:
                    remote.add_remote_host(session, host_id=process.host_id, url=process.url,
                                           token=TOKEN, graph_data_dir=folder / "control-plane")
                user = accounts.create_user(session, email=f"move-{uuid.uuid4().hex[:6]}@x.io")
                subscription = subscriptions.request_graph(
                    session, user_id=user.user_id, plan_name=TIER, graph={"name": "big"})
                billing.mark_paid(session, subscription.id)
                subscription_id = subscription.id
            def run(flow: Any, config: Any) -> Any:
                ctx = step_context(resources, method="direct", log=log, operation_id=None)
                return execute_flow(flow, config, ctx)

            made = run(GRAPH_FLOW, SubscriptionConfig(subscription_id=subscription_id)).result
            graph_id, first = made["graph_id"], made["host_id"]
            clients = {p.host_id: HostClient(p.host_id, p.url, TOKEN, timeout=600,
                                             work_timeout=900) for p in servers}
            other = next(host_id for host_id in clients if host_id != first)
            started = time.perf_counter()
            holder = next(p for p in servers if p.host_id == first)
            holder.stop()
            size = _fill(holder.data_root / f"{graph_id}.lbug", folder,
                         int(args.gib * 1024 ** 3))
            holder.start()
            print(f"a graph of {size / 2**30:.2f} GiB ({size:,} bytes), filled in "
                  f"{time.perf_counter() - started:.0f} s; two host servers and SeaweedFS on "
                  "loopback, PostgreSQL")
            file = holder.data_root / f"{graph_id}.lbug"
            print(_side_by_side(file, folder, bucket, seaweed, run, graph_id, clients, other))
            for title, writing in (("at rest", False), ("written every 20 ms", True)):
                with database.session() as session:
                    here = graphs.top_level_graph(session, graph_id).host_id
                there = next(host_id for host_id in clients if host_id != here)
                with Writer(database, clients, graph_id) if writing else _Idle() as writer:
                    began = time.perf_counter()
                    moved = run(MOVE_FLOW, MoveConfig(graph_id=graph_id, to_host_id=there))
                    total = time.perf_counter() - began
                    time.sleep(0.2)  # the writer's first write on the new host
                flow_window = moved.result["write_window_seconds"]
                seen = writer.window() if writing else None
                refused = sum(1 for _, ok in writer.outcomes if not ok) if writing else 0
                print(f"  move {here} -> {there}, {title}: {total:6.2f} s in all; writes "
                      f"refused for {flow_window:5.2f} s (freeze to switch, goal <= 5 s)"
                      + (f"; the writer saw {seen:5.2f} s, {refused} writes refused, "
                         f"{len(writer.failures)} failed otherwise" if seen is not None
                         else ""))
            with database.session() as session:
                home = graphs.top_level_graph(session, graph_id).host_id
            held = {host_id: graph_id in client.list().graphs
                    for host_id, client in clients.items()}
            print(f"  the graph on exactly one host, the one its row names: "
                  f"{held == {h: h == home for h in clients}}")
            for client in clients.values():
                client.close()
        finally:
            stop_hosts(servers)
            seaweed.stop()
            shutil.rmtree(folder / "seaweed", ignore_errors=True)


class _Idle:
    outcomes: list[tuple[float, bool]] = []
    failures: list[str] = []

    def __enter__(self) -> _Idle:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _hosts(folder: Path, store_settings: dict[str, str]) -> list[Any]:
    made = start_hosts(folder, (2, 2), tier=TIER)
    # Restarted with the store: each host keeps its backups in the shared bucket.
    for process in made:
        process.stop()
        process.env.update({**store_settings, "AWS_ACCESS_KEY_ID": "bench",
                            "AWS_SECRET_ACCESS_KEY": "bench"})
        process.start()
    return made


def _side_by_side(file: Path, folder: Path, bucket: str, seaweed: SeaweedServer,
                  run: Callable[[Any, Any], Any], graph_id: str,
                  clients: dict[str, HostClient], other: str) -> str:
    store = S3Store(bucket, "plain", endpoint_url=seaweed.endpoint_url, timeout_seconds=600)
    copy = folder / "copy.lbug"
    took = {"cp": _timed(lambda: subprocess.run(["cp", str(file), str(copy)], check=True))}
    took["plain upload"] = _timed(lambda: store.client.upload_file(
        str(copy), bucket, "plain/graph.lbug", Config=store.transfer))
    copy.unlink()
    took["plain download"] = _timed(lambda: store.client.download_file(
        bucket, "plain/graph.lbug", str(copy), Config=store.transfer))
    copy.unlink()
    store.close()
    backup_id = f"bk_{uuid.uuid4().hex[:12]}"
    took["backup flow"] = _timed(lambda: run(BACKUP_FLOW, BackupConfig(
        graph_id=graph_id, kind="on_demand", backup_id=backup_id, actor="operator")))
    target = clients[other]
    restored = "kg" + secrets.token_hex(8)  # a graph of the other host, restored into
    target.create(restored, ["CREATE NODE TABLE Blob(id INT64, data STRING, "
                             "PRIMARY KEY(id))"])
    kept = clients[next(h for h in clients if h != other)]
    info = kept.back_up(graph_id, backup_id)  # kept already: answers its name and sha256
    took["restore on the other host"] = _timed(
        lambda: target.restore(restored, graph_id, backup_id, info.sha256))
    same = target.checksum(restored) == info.sha256
    target.delete(restored)
    lines = [f"  {name:<26} {value:7.2f} s" for name, value in took.items()]
    lines.append(f"  backup / cp {took['backup flow'] / took['cp']:5.2f}x   backup / plain "
                 f"upload {took['backup flow'] / took['plain upload']:5.2f}x")
    restore = took["restore on the other host"]
    lines.append(f"  restore / cp {restore / took['cp']:5.2f}x   restore / plain download "
                 f"{restore / took['plain download']:5.2f}x   restored bytes the same: {same}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
