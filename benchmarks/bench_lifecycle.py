"""Backup, restore and deletion of a large graph, each beside a plain file copy of the same file.

    python -m benchmarks.bench_lifecycle [--gib 1.0] [--runs 3] [--export]

A graph is provisioned as a customer's would be (SQLite app database, the direct path), then
filled with LadybugDB's ``COPY FROM`` (CSV of ``Entity`` rows with 200 random characters of
description each) until its file holds ``--gib`` GiB. Then, ``--runs`` times each, through the
flows' own steps: a backup (checkpoint, copy and sha256 under the write handle, manifest, row), a
restore of that backup as a new graph (checksum first, copy hashed as written, rows), and the
deletion at once of each restored graph (final backup, file, slot, rows). Each is printed as a
median beside the median of ``shutil.copyfile`` of the same file in the same run, so the ratio
says what the work costs beyond moving the bytes. ``--export`` also tries LadybugDB's
``EXPORT DATABASE`` once, for the decision in docs/decisions.md.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from provisioning_pipelines.flows import (
    BACKUP_FLOW,
    DELETION_FLOW,
    GRAPH_FLOW,
    RESTORE_FLOW,
    BackupConfig,
    DeletionConfig,
    RestoreConfig,
    SubscriptionConfig,
    execute_flow,
)
from provisioning_pipelines.runtime.resources import build_resources, step_context
from provisioning_pipelines.services import requests as subscriptions
from provisioning_pipelines.services.access import accounts
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.settings import load_settings
from provisioning_pipelines.storage.ladybug import backups as backup_files
from provisioning_pipelines.storage.migrate import upgrade

GIB = 1024**3
ROWS_PER_CHUNK = 500_000


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = call()
    return time.perf_counter() - started, value


def fill(engine: Any, path: Path, target_bytes: int, scratch: Path) -> int:
    """COPY chunks of Entity rows into the graph until its file reaches ``target_bytes``."""
    rows = 0
    chunk = 0
    while path.stat().st_size < target_bytes:
        source = scratch / f"entities_{chunk}.csv"
        with source.open("w", newline="") as out:
            writer = csv.writer(out)
            for i in range(ROWS_PER_CHUNK):
                n = rows + i
                writer.writerow([f"e{n}", f"Entity {n}", "company", f"https://e{n}.example",
                                 secrets.token_hex(100), "", "NL", "2026-01-01 00:00:00",
                                 "2026-01-01 00:00:00"])
        with engine.writing(path, pool=2 * GIB) as conn:
            conn.execute(f"COPY Entity FROM '{source}' (HEADER=false)")
            conn.execute("CHECKPOINT")
        source.unlink()
        rows += ROWS_PER_CHUNK
        chunk += 1
        print(f"  {rows:,} rows, {path.stat().st_size / GIB:.2f} GiB", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the graph's file")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement")
    parser.add_argument("--export", action="store_true",
                        help="also time EXPORT DATABASE and IMPORT DATABASE once")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bench_lifecycle_") as folder:
        root = Path(folder)
        url = f"sqlite:///{root / 'app.db'}"
        upgrade(url)
        settings = load_settings(DATABASE_URL=url, GRAPH_DATA_DIR=str(root / "graphs"),
                                 BACKUP_DIR=str(root / "backups"))
        resources = build_resources(settings)
        database = resources["database"].get()
        engine = resources["graph_engine"].get()
        ctx = step_context(resources, method="direct", log=logging.getLogger("bench"),
                           operation_id=None)
        with database.session() as session:
            user = accounts.create_user(session, email="bench@example.com")
            subscription = subscriptions.request_graph(
                session, user_id=user.user_id, plan_name="ladybug-large",
                graph={"name": "Large graph"})
            billing.mark_paid(session, subscription.id)
        made = execute_flow(GRAPH_FLOW, SubscriptionConfig(subscription_id=subscription.id),
                            ctx).result
        graph_id, path = made["graph_id"], Path(made["database_path"])
        print(f"filling {graph_id} to {args.gib} GiB with COPY FROM ...", flush=True)
        load_seconds, rows = timed(lambda: fill(engine, path, int(args.gib * GIB), root))
        size = path.stat().st_size
        print(f"loaded {rows:,} rows, {size / GIB:.2f} GiB, in {load_seconds:.1f} s\n")

        copies, synced, hashes, backups, restores, deletions = [], [], [], [], [], []
        for run in range(args.runs):
            plain, _ = timed(lambda: shutil.copyfile(path, root / "plain.copy"))
            (root / "plain.copy").unlink()
            copies.append(plain)
            seconds, _ = timed(lambda: _copy_and_sync(path, root / "plain.copy"))
            (root / "plain.copy").unlink()
            synced.append(seconds)
            hashes.append(timed(lambda: backup_files.checksum_of(path))[0])
            seconds, backup = timed(lambda run=run: execute_flow(
                BACKUP_FLOW, BackupConfig(graph_id=graph_id, backup_id=f"bk_bench_{run}"),
                ctx).result)
            backups.append(seconds)
            seconds, restored = timed(lambda run=run, backup=backup: execute_flow(
                RESTORE_FLOW, RestoreConfig(user_id=user.user_id, graph_id=graph_id,
                                            backup_id=backup["backup_id"],
                                            restore_id=f"bench_{run}"), ctx).result)
            restores.append(seconds)
            with database.session() as session:
                restored_path = Path(graphs.top_level_graph(
                    session, restored["graph_id"]).database_path)
            counts = engine.count_rows(restored_path)
            assert counts["Entity"] == rows, counts
            seconds, _ = timed(lambda restored=restored: execute_flow(
                DELETION_FLOW, DeletionConfig(graph_id=restored["graph_id"], at_once=True,
                                              reason="bench"), ctx).result)
            deletions.append(seconds)
            print(f"run {run + 1}: copy {plain:.2f} s, backup {backups[-1]:.2f} s, restore "
                  f"{restores[-1]:.2f} s, deletion {deletions[-1]:.2f} s", flush=True)

        copy = statistics.median(copies)
        print(f"\n{size / GIB:.2f} GiB graph, {rows:,} rows; medians of {args.runs} runs")
        print("| what | median | ratio to the plain copy |\n| --- | --- | --- |")
        print(f"| plain copy (shutil.copyfile) | {copy:.2f} s | 1.00 |")
        for name, values in (("plain copy and fsync", synced), ("sha256 of the file", hashes),
                             ("backup (checkpoint, copy + sha256, manifest, row)", backups),
                             ("restore as a new graph (verify, copy + sha256, rows)", restores),
                             ("deletion at once, end to end (final backup, file, rows)",
                              deletions)):
            median = statistics.median(values)
            print(f"| {name} | {median:.2f} s | {median / copy:.2f} |")

        if args.export:
            try:
                seconds, _ = timed(lambda: _export(engine, path, root / "export"))
                print(f"| EXPORT DATABASE (once) | {seconds:.2f} s | {seconds / copy:.2f} |")
            except Exception as exc:  # what LadybugDB says of our schema is the finding
                print(f"\nEXPORT DATABASE refused: {exc}")


def _copy_and_sync(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    with target.open("rb") as copied:
        os.fsync(copied.fileno())


def _export(engine: Any, path: Path, folder: Path) -> None:
    with engine.writing(path, pool=2 * GIB) as conn:
        conn.execute(f"EXPORT DATABASE '{folder}' (format='parquet')")


if __name__ == "__main__":
    main()
