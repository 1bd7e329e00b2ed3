"""A burst of paid webhooks at once, against ``serve`` with one worker and with several.

    python -m benchmarks.bench_burst [--graphs 500] [--workers 1 3] [--duplicates 0.1]
                                     [--hosts 0 3] [--rounds 1]

For each worker count, in one run: a fresh PostgreSQL app database, Redis prefix and Dagster
instance (dagster-postgres, as deployed), ``--graphs`` unpaid graph subscriptions, then every
payment webhook plus ``--duplicates`` of them delivered a second time, all sent at once from
one asyncio client (``--senders``: all at once, or at most that many in flight, as a billing
provider delivers). Printed: the webhook answer's median and p99, graphs per second from the
first delivery sent until the last subscription active, whether every subscription has exactly
one graph and every operation's materialization was reported to Dagster, and the floor: as many
deliveries, unsigned, refused before any database work, sent the same way just before.

``--hosts``: with 0 the graphs go to the in-process local hosts (the embedded default); with N,
to N ``host serve`` processes registered by url (``LOCAL_GRAPH_HOSTS=false``), and each host is
asked what it really holds, which must be the graphs its rows place there. With both, the rate
on host servers is printed as a ratio of the in-process one (goal: at least 0.8), from the
medians of ``--rounds`` alternating runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import sessionmaker

from benchmarks import cpu_budget
from benchmarks.bench_host import TOKEN, _start
from benchmarks.scratch import ScratchDatabases, delete_redis_prefix
from provisioning_pipelines.services import requests as subscriptions
from provisioning_pipelines.services.access import accounts
from provisioning_pipelines.services.billing.events import billing_event, signed_delivery
from provisioning_pipelines.services.capacity import remote
from provisioning_pipelines.storage.db import get_database
from provisioning_pipelines.storage.events import RedisOperationStore
from provisioning_pipelines.storage.hosts.client import HostClient
from provisioning_pipelines.storage.migrate import upgrade
from provisioning_pipelines.storage.models import Graph, Subscription

CLI = str(Path(sys.executable).parent / "provisioning-pipelines")
SECRET = "whsec_bench_burst"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def body(subscription_id: str) -> tuple[bytes, dict[str, str]]:
    return signed_delivery(billing_event(subscription_id, event_id=f"evt_{subscription_id}"),
                           SECRET)


async def post(port: int, path: str, payload: bytes, headers: dict[str, str]
               ) -> tuple[int, bytes]:
    """One HTTP/1.1 POST on its own connection, as a billing provider's delivery arrives.

    Written on bare asyncio streams because the client shares this machine's two cores with the
    server it measures: httpx spent ~4.7 ms of CPU per request here (2.6 s for 550), this
    ~0.5 ms, so the figures are the server's and not the client's.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                 f"Content-Length: {len(payload)}\r\n{head}\r\n".encode() + payload)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    answer = await reader.readexactly(length)
    writer.close()
    return status, answer


async def deliver_all(port: int, ids: list[str], senders: int, *, signed: bool = True
                      ) -> tuple[list[float], list[dict[str, Any]]]:
    """Every delivery, at most ``senders`` in flight (0: all at once); each one's answer time.
    Unsigned deliveries must be refused (400), signed ones accepted."""
    latencies: list[float] = []
    gate = asyncio.Semaphore(senders or len(ids))
    answers: list[dict[str, Any]] = []

    async def one(subscription_id: str) -> None:
        payload, headers = body(subscription_id)
        if not signed:
            del headers["Stripe-Signature"]
        async with gate:
            started = time.perf_counter()
            status, answer = await post(port, "/v1/webhooks/billing", payload, headers)
            latencies.append(time.perf_counter() - started)
        if status != (200 if signed else 400):
            raise RuntimeError(f"delivery answered {status}: {answer[:200]!r}")
        answers.append(json.loads(answer))

    await asyncio.gather(*(one(sub) for sub in ids))
    return latencies, answers


def percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {"p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000}


def start_hosts(count: int, home: Path) -> tuple[list[subprocess.Popen[bytes]], dict[str, str]]:
    """``count`` host servers, each on its own data root; their processes and urls by id."""
    processes, urls = [], {}
    for index in range(count):
        host_id, port = f"burst-host-{index}", free_port()
        processes.append(_start(home / "hosts" / host_id, port, host_id))
        urls[host_id] = f"http://127.0.0.1:{port}"
    return processes, urls


def held_as_placed(database: Any, urls: dict[str, str]) -> bool:
    """Every host holds exactly the graphs its rows place there, asked of the host."""
    with database.session() as session:
        placed: dict[str, set[str]] = {host_id: set() for host_id in urls}
        for graph_id, host_id in session.execute(select(Graph.id, Graph.host_id)):
            placed.setdefault(host_id, set()).add(graph_id)
    held = {}
    for host_id, url in urls.items():
        with HostClient(host_id, url, TOKEN) as client:
            held[host_id] = set(client.list().graphs)
    return held == placed


def run(workers: int, senders: int, graphs: int, duplicates: float, postgres: str, redis_url: str,
        folder: Path, answer_only: bool = False, hosts: int = 0, profile: bool = True,
        provisioners: int = 0) -> dict[str, Any]:
    name = f"pp_bench_burst_{uuid.uuid4().hex[:8]}"
    scratch = ScratchDatabases(postgres)
    database_url = scratch.create(name)
    dagster_url = scratch.create(f"{name}_dagster")
    home = folder / name
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_url:\n      env: DAGSTER_PG_URL\n"
        "telemetry:\n  enabled: false\n")
    prefix = f"{name}:"
    process = None
    servers, urls = start_hosts(hosts, home)
    try:
        upgrade(database_url)
        database = get_database(database_url)
        # the benchmark's own queries, named so that the CPU budget leaves them out
        watcher = sessionmaker(create_engine(database_url,
                                             connect_args={"application_name": "bench"}))
        with database.session() as session:
            for host_id, host_url in urls.items():
                remote.add_remote_host(session, host_id=host_id, url=host_url, token=TOKEN,
                                       graph_data_dir=home / "graphs")
            user = accounts.create_user(session, email=f"{name}@example.com")
            ids = [subscriptions.request_graph(session, user_id=user.user_id,
                                               plan_name="ladybug-standard",
                                               graph={"name": f"g{i}"}).id
                   for i in range(graphs)]
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home),
               "DATA_DIR": str(home / "data"), "GRAPH_DATA_DIR": str(home / "graphs"),
               "DATABASE_URL": database_url, "REDIS_URL": redis_url,
               "REDIS_KEY_PREFIX": prefix, "BILLING_WEBHOOK_SECRET": SECRET,
               "SESSION_SECRET": "session secret of the benchmark",
               "DAGSTER_HOME": str(home / "dagster"), "DAGSTER_PG_URL": dagster_url,
               "LOCAL_HOST_CAPACITY": str(graphs * 2),
               "PROVISIONING_PROCESSES": str(provisioners),
               **({"LOCAL_GRAPH_HOSTS": "false", "GRAPH_HOST_TOKEN": TOKEN} if hosts else {}),
               # answer only: what recording a webhook costs with no provisioning beside it
               "DIRECT_GRAPH_PROVISIONING_ENABLED": str(not answer_only).lower()}
        port = free_port()
        log = (home / "serve.log").open("ab")
        process = subprocess.Popen([CLI, "serve", "--port", str(port), "--workers",
                                    str(workers)], env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=5)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        time.sleep(3 * (workers + provisioners))  # every process has booted (imports Dagster)

        sends = ids + random.Random(7).sample(ids, int(graphs * duplicates))
        random.Random(8).shuffle(sends)
        # The floor: as many deliveries, unsigned, refused before any database work; what the
        # HTTP server, the framework and this client cost on their own.
        refused, _ = asyncio.run(deliver_all(port, sends, senders, signed=False))
        meter = cpu_budget.Meter(postgres, {name: "PostgreSQL (app)",
                                            f"{name}_dagster": "PostgreSQL (Dagster)"},
                                 redis_url, {"server": [process.pid],
                                             "host servers": [s.pid for s in servers]})
        cpu_budget.reset_statements(postgres)
        sampler = cpu_budget.Sampler(process.pid) if profile else None
        meter.client_pids = [sampler.process.pid] if sampler else []
        before = meter.snapshot()
        started = time.perf_counter()
        latencies, answers = asyncio.run(deliver_all(port, sends, senders))
        answered = {"workers": workers, "sent": len(sends), "answered_s":
                    time.perf_counter() - started, **percentiles(latencies),
                    "floor": percentiles(refused)}
        if answer_only:
            return answered
        with watcher() as session:
            while True:
                active = session.scalar(select(func.count()).select_from(Subscription)
                                        .where(Subscription.status == "active"))
                if active == graphs or time.perf_counter() - started > 600:
                    break
                session.commit()
                time.sleep(0.01)
        took = time.perf_counter() - started
        with database.session() as session:
            made = session.scalar(select(func.count()).select_from(Graph))
            owners = session.scalar(select(func.count(func.distinct(Graph.subscription_id))))
        operations = [a["operation_id"] for a in answers if a.get("operation_id")]
        store = RedisOperationStore(redis_url, prefix=prefix)
        deadline = time.monotonic() + 120
        reported: dict[str | None, int] = {}
        while time.monotonic() < deadline:
            reported = {}
            for op in operations:
                record = store.get(op)
                outcome = record.dagster_report if record else "missing"
                reported[outcome] = reported.get(outcome, 0) + 1
            if reported.get("ok", 0) == len(operations):
                break
            time.sleep(0.5)
        store.close()
        spent = meter.between(before, meter.snapshot())
        answered["connections_opened"] = meter.counts(spent)
        shares = sampler.stop() if sampler else {}
        meter.close()
        server = spent.pop("server") if shares else 0.0
        machine = spent.pop(cpu_budget.MACHINE) - spent.pop(cpu_budget.CLIENT)
        budget = {**{part: share * server for part, share in shares.items()}, **spent}
        # what no process above was seen spending (processes that came and went, the kernel)
        budget["unaccounted"] = machine - sum(budget.values())
        answered["budget_ms"] = {part: seconds * 1000 / graphs for part, seconds in
                                 budget.items()}
        answered["statements"] = {
            "app": cpu_budget.statements(postgres, name),
            "Dagster": cpu_budget.statements(postgres, f"{name}_dagster")}
        return {**answered, "active": active, "graphs": made, "owners": owners,
                "provisioners": provisioners,
                "seconds": took, "rate": graphs / took, "operations": len(operations),
                "reported": reported, "hosts": hosts,
                "held_as_placed": held_as_placed(database, urls) if hosts else True}
    finally:
        for running in ([process] if process is not None else []) + servers:
            running.send_signal(signal.SIGTERM)
            try:
                running.wait(120)
            except subprocess.TimeoutExpired:
                running.kill()
        scratch.drop_all()
        delete_redis_prefix(redis_url, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graphs", type=int, default=500)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--duplicates", type=float, default=0.1)
    parser.add_argument("--answer-only", action="store_true",
                        help="direct provisioning off: only what answering the webhooks costs")
    parser.add_argument("--senders", type=int, nargs="+", default=[0, 20],
                        help="deliveries in flight at most (0: all at once)")
    parser.add_argument("--hosts", type=int, nargs="+", default=[0],
                        help="host servers the graphs go to (0: in-process local hosts)")
    parser.add_argument("--provisioners", type=int, nargs="+", default=[0, 1],
                        help="provisioning processes beside the API (0: its own threads)")
    parser.add_argument("--no-profile", action="store_true",
                        help="no py-spy on the server: its CPU in one line, not by part")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of every --hosts value, alternating")
    parser.add_argument("--postgres", default="postgresql+psycopg2://postgres@127.0.0.1:5432/"
                        "postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-burst-"))
    print(f"{args.graphs} paid webhooks at once + {args.duplicates:.0%} duplicate deliveries, "
          f"PostgreSQL + Redis + dagster-postgres, {os.cpu_count()} cores")
    try:
        for workers, senders in [(w, s) for s in args.senders for w in args.workers]:
            rates: dict[int, list[float]] = {}
            for hosts, provisioners in [(h, p) for _ in range(args.rounds) for h in args.hosts
                                        for p in args.provisioners]:
                result = run(workers, senders, args.graphs, args.duplicates, args.postgres,
                             args.redis, folder, args.answer_only, hosts,
                             not args.no_profile, provisioners)
                if args.answer_only:
                    print(f"  --workers {workers}, {senders or 'all'} in flight, no "
                          f"provisioning: {result['sent']} answered in "
                          f"{result['answered_s']:.1f} s; answer p50 {result['p50_ms']:.0f} ms,"
                          f" p99 {result['p99_ms']:.0f} ms; {floor(result)}")
                else:
                    show(result, workers, senders, args.graphs)
                    rates.setdefault(hosts, []).append(result["rate"])
            for hosts, rate in rates.items():
                if hosts and 0 in rates:
                    ratio = statistics.median(rate) / statistics.median(rates[0])
                    print(f"  {hosts} host servers ÷ in-process hosts, median graphs/s of "
                          f"{len(rate)} rounds: {ratio:.2f} (goal: at least 0.8)")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def show(result: dict[str, Any], workers: int, senders: int, graphs: int) -> None:
    exact = result["graphs"] == result["owners"] == result["active"] == graphs \
        and result["held_as_placed"]
    where = f"{result['hosts']} host servers" if result["hosts"] else "in-process hosts"
    where += f", {result['provisioners']} provisioning processes"
    print(f"  {where}, --workers {workers}, {senders or 'all'} in flight: {result['sent']} "
          f"deliveries; webhook answer p50 "
          f"{result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms; all {result['active']}"
          f" active in {result['seconds']:.1f} s = {result['rate']:.0f} graphs/s; "
          f"exactly one graph each (and held where placed): {exact}; materializations reported: "
          f"{result['reported'].get('ok', 0)}/{result['operations']} {result['reported']}; "
          f"{floor(result)}")
    print(budget(result["budget_ms"]))
    print("    PostgreSQL connections opened per graph: " + ", ".join(
        f"{label.split(':')[0]} {count / graphs:.2f}"
        for label, count in result["connections_opened"].items()))
    for database, busiest in result["statements"].items():
        for calls, total_ms, query in busiest:
            print(f"      {database:<8}{calls / graphs:>6.1f} calls/graph "
                  f"{total_ms / graphs:>6.2f} ms/graph executing (lock waits included)  "
                  f"{query}")


def budget(spent_ms: dict[str, float]) -> str:
    """The CPU budget by part, in ms of machine CPU per graph (goal: at most 20 in all)."""
    total = sum(spent_ms.values())
    lines = [f"    machine CPU per graph: {total:.1f} ms (goal: at most 20), by part:"]
    for part, spent in sorted(spent_ms.items(), key=lambda item: -item[1]):
        lines.append(f"      {part:<26}{spent:>6.2f} ms  {spent / total:>4.0%}")
    return "\n".join(lines)


def floor(result: dict[str, Any]) -> str:
    refused = result["floor"]
    return (f"floor (as many unsigned, refused before the database): p50 "
            f"{refused['p50_ms']:.0f} ms, p99 {refused['p99_ms']:.0f} ms; answer p99 ÷ floor p99 "
            f"{result['p99_ms'] / refused['p99_ms']:.1f}")


if __name__ == "__main__":
    main()
