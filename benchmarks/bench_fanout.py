"""Many viewers of operations' SSE streams on one ``serve`` process (PostgreSQL + Redis).

    python -m benchmarks.bench_fanout [--viewers 1000] [--operations 100 --per-operation 100]

Two scenarios, each against a real server process:

1. ``--viewers`` streams on one operation, served twice side by side: once as the API serves
   them (one Redis reader per operation, fanned out in the process) and once with one Redis
   reader per stream (how it was before). While all are open, 20 progress events and the
   completed event are written. Printed per way: the Redis connections the server held for
   them, streams cut (ended without the completed event), and when the completed event reached
   the median and p99 viewer after the first viewer got it.
2. ``--operations`` x ``--per-operation`` streams (10,000 by default) open at once on the fanned
   out server: cuts, Redis readers, the server's memory, and the same completed-event spread per
   operation.

The viewers are raw asyncio sockets (one process, no HTTP library), so the client costs as
little as it can on the same two cores; what is measured is mostly the server. They arrive in
waves of 250, each wave joined (its first event read) before the next connects: ten thousand
connects at once overflow the kernel's accept queue (``somaxconn`` 4096), which resets some of
them before the server ever sees them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import redis

from benchmarks.scratch import ScratchDatabases, delete_redis_prefix
from provisioning_pipelines.services.access import accounts
from provisioning_pipelines.storage.db import get_database
from provisioning_pipelines.storage.events import OperationEvent, RedisOperationStore
from provisioning_pipelines.storage.migrate import upgrade


class OneReaderPerStream:
    """The way before the fan-out: every stream opens its own store reader."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.readers = 0

    def subscribe(self, operation_id: str, after: str | None = None, *, keepalive: float,
                  stop: Any = None) -> AsyncIterator[OperationEvent | None]:
        return self.store.subscribe(operation_id, after, keepalive=keepalive)

    def wake(self, operation_id: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


def serve(port: int, per_stream: bool) -> None:
    """The server process: ``serve``'s app, optionally with one reader per stream."""
    import uvicorn

    from provisioning_pipelines.api.app import create_app

    app = create_app()
    if per_stream:
        app.state.api.fanout = OneReaderPerStream(app.state.api.store)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=16384)


def start_server(env: dict[str, str], per_stream: bool, log: Path
                 ) -> tuple[subprocess.Popen[bytes], int]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [sys.executable, "-m", "benchmarks.bench_fanout", "--serve", str(port)]
    if per_stream:
        args.append("--per-stream")
    with log.open("ab") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    import httpx

    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            return process, port
        except httpx.HTTPError:
            if process.poll() is not None:
                raise RuntimeError(log.read_text()) from None
            time.sleep(0.1)


class Viewer:
    """One SSE stream on a raw socket: when its first and its completed event arrived."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.completed: float | None = None
        self.events = 0
        self.error: str | None = None

    async def watch(self, port: int, api_key: str, operation_id: str,
                    joined: asyncio.Semaphore) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write((f"GET /v1/operations/{operation_id}/events HTTP/1.1\r\n"
                          f"Host: 127.0.0.1\r\nAuthorization: Bearer {api_key}\r\n"
                          "Accept: text/event-stream\r\n\r\n").encode())
            await writer.drain()
            buffer = b""
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                now = time.perf_counter()
                buffer += chunk
                count = buffer.count(b"\nevent: ")
                if count and self.first is None:
                    self.first = now
                    joined.release()
                self.events = count
                if b"event: operation_completed" in buffer:
                    self.completed = now
                    break
            writer.close()
            if self.completed is None:
                self.error = "cut: ended without the completed event"
        except OSError as exc:
            when = "after its first event" if self.first else "before any event"
            self.error = f"{type(exc).__name__} {when}: {exc}"
        finally:
            if self.first is None:  # never joined: count it as arrived, so nobody waits on it
                self.first = time.perf_counter()
                joined.release()


def subscriber_connections(redis_url: str, name: str) -> int:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return sum(1 for entry in client.client_list() if entry["name"] == name)
    finally:
        client.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def watch_and_write(port: int, api_key: str, store: RedisOperationStore, operations: list[str],
                    per_operation: int, redis_url: str, server_pid: int) -> dict[str, Any]:
    """Open every stream, wait until each has its first event, then write the events."""
    viewers = {op: [Viewer() for _ in range(per_operation)] for op in operations}
    total = len(operations) * per_operation
    seen: dict[str, Any] = {}

    def write() -> None:
        for i in range(20):
            for op in operations:
                store.progress(op, f"step {i}", i * 5)
        for op in operations:
            store.complete(op, {"graph_id": "kg"})

    async def run() -> None:
        joined = asyncio.Semaphore(0)
        tasks = []
        started = time.perf_counter()
        for op, group in viewers.items():
            for viewer in group:
                tasks.append(asyncio.create_task(viewer.watch(port, api_key, op, joined)))
                if len(tasks) % 250 == 0:  # viewers arrive in waves: each joins before the next
                    for _ in range(250):
                        await joined.acquire()
        for _ in range(len(tasks) % 250):
            await joined.acquire()
        seen["join_s"] = time.perf_counter() - started
        seen["connections"] = await asyncio.to_thread(subscriber_connections, redis_url,
                                                      store.subscriber_name)
        seen["rss_mib"] = rss_mib(server_pid)
        writer = threading.Thread(target=write)
        writer.start()
        await asyncio.gather(*tasks)
        writer.join()

    asyncio.run(run())
    spreads: list[float] = []
    cut = 0
    for group in viewers.values():
        arrived = sorted(v.completed for v in group if v.completed is not None)
        cut += sum(1 for v in group if v.completed is None)
        if arrived:
            spreads.extend((t - arrived[0]) * 1000 for t in arrived)
    spreads.sort()
    return {"streams": total, "cut": cut, "connections": seen["connections"],
            "rss_mib": seen["rss_mib"], "join_s": seen["join_s"],
            "p50_ms": statistics.median(spreads) if spreads else float("nan"),
            "p99_ms": spreads[int(len(spreads) * 0.99) - 1] if spreads else float("nan"),
            "errors": sorted({v.error for g in viewers.values() for v in g if v.error})[:3]}


def scenario(env: dict[str, str], per_stream: bool, folder: Path, api_key: str, user_id: str,
             operations: int, per_operation: int, redis_url: str, prefix: str
             ) -> dict[str, Any]:
    store = RedisOperationStore(redis_url, prefix=prefix)
    ops = []
    for _ in range(operations):
        op = store.create("graph", user_id=user_id).id
        store.start(op)
        ops.append(op)
    process, port = start_server(env, per_stream, folder / "serve.log")
    try:
        return watch_and_write(port, api_key, store, ops, per_operation, redis_url, process.pid)
    finally:
        process.terminate()
        process.wait(60)
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=1000, help="0 skips scenario 1")
    parser.add_argument("--operations", type=int, default=100)
    parser.add_argument("--per-operation", type=int, default=100)
    parser.add_argument("--postgres", default="postgresql+psycopg2://postgres@127.0.0.1:5432/"
                        "postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--per-stream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.per_stream)
        return

    name = f"pp_bench_fanout_{uuid.uuid4().hex[:8]}"
    scratch = ScratchDatabases(args.postgres)
    database_url = scratch.create(name)
    folder = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    prefix = f"{name}:"
    try:
        upgrade(database_url)
        with get_database(database_url).session() as session:
            user = accounts.create_user(session, email=f"{name}@example.com")
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(folder),
               "DATA_DIR": str(folder / "data"), "GRAPH_DATA_DIR": str(folder / "graphs"),
               "DATABASE_URL": database_url, "REDIS_URL": args.redis,
               "REDIS_KEY_PREFIX": prefix, "PROVISIONING_RESUME_INTERVAL_SECONDS": "0",
               "BILLING_WEBHOOK_SECRET": "whsec_bench_fanout",
               "SESSION_SECRET": "session secret of the benchmark"}

        def show(title: str, result: dict[str, Any]) -> None:
            print(f"  {title:<28} {result['streams']:>6} streams  cut {result['cut']:>4}  "
                  f"Redis readers {result['connections']:>5}  server RSS "
                  f"{result['rss_mib']:>6.0f} MiB  all joined in {result['join_s']:.1f} s  "
                  "completed after the first: "
                  f"p50 {result['p50_ms']:6.1f} ms  p99 {result['p99_ms']:6.1f} ms"
                  + (f"  errors: {result['errors']}" if result["errors"] else ""))

        if args.viewers:
            print(f"{args.viewers} viewers of one operation, 21 events written while all "
                  "watch")
            fanned = scenario(env, False, folder, user.api_key, user.user_id, 1, args.viewers,
                              args.redis, prefix)
            show("fan-out (as served)", fanned)
            per = scenario(env, True, folder, user.api_key, user.user_id, 1, args.viewers,
                           args.redis, prefix)
            show("one reader per stream", per)
            print(f"  p99 spread, per stream / fan-out: "
                  f"{per['p99_ms'] / max(fanned['p99_ms'], 0.001):.1f}x; Redis connections "
                  f"{per['connections']} / {fanned['connections']}")
        total = args.operations * args.per_operation
        print(f"{total} streams open at once: {args.operations} operations x "
              f"{args.per_operation} viewers")
        show("fan-out (as served)", scenario(env, False, folder, user.api_key, user.user_id,
                                             args.operations, args.per_operation, args.redis,
                                             prefix))
    finally:
        scratch.drop_all()
        delete_redis_prefix(args.redis, prefix)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
