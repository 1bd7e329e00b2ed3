"""A one-row MATCH through the API (HTTP, uvicorn) against the same query on a connection already
open in this process, on the embedded default and with a host server, side by side in one run.

    python -m benchmarks.bench_query [--runs 500] [--burst 1]

Two app databases (SQLite files in a temporary folder, events in memory: the embedded default's
shape), each with one graph of the standard tier holding 1,000 entities: one on the in-process
local host, one on a ``host serve`` process registered by url (``LOCAL_GRAPH_HOSTS=false``). Each
API is a ``provisioning-pipelines serve`` process (uvicorn), asked with one kept-alive httpx
client; the bare side is ``Connection.execute`` of the same query and parameter on a read-only
connection opened here once, on the same file. The calls alternate (the API and the open
connection each time, the two sides every ``--burst`` calls), so a busy moment of the machine
falls on all of them; with ``--burst 1`` each server process sleeps while the other side runs,
and on a loaded machine its waking up is part of what is measured. Printed: the median and p90
of each, and what the API adds at the median, in ms and as a ratio (goals: within 3 ms on the
embedded default, 5 ms with a host server).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import ladybug
from sqlalchemy import select

from benchmarks.bench_host import TOKEN, _free_port, _start
from provisioning_pipelines.flows import GRAPH_FLOW, SubscriptionConfig, execute_flow
from provisioning_pipelines.runtime.resources import build_resources, step_context
from provisioning_pipelines.services import requests as subscriptions
from provisioning_pipelines.services.access import accounts
from provisioning_pipelines.services.billing import subscriptions as billing
from provisioning_pipelines.services.capacity import remote
from provisioning_pipelines.settings import load_settings
from provisioning_pipelines.storage.migrate import upgrade
from provisioning_pipelines.storage.models import Graph

QUERY = "MATCH (e:Entity {identifier: $id}) RETURN e.name AS name"
PARAMETERS = {"id": "e500"}


def serve(environment: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """``provisioning-pipelines serve`` (uvicorn, one worker) with these settings, once it
    answers: a process of its own, as in production, so this one's client shares no GIL."""
    port = _free_port()
    cli = str(Path(sys.executable).parent / "provisioning-pipelines")
    process = subprocess.Popen([cli, "serve", "--host", "127.0.0.1", "--port", str(port)],
                               env={**os.environ, **environment},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/healthz", timeout=5)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("serve did not start")


def side(folder: Path, name: str, host_url: str | None = None, **settings: Any
         ) -> tuple[dict[str, str], str, str]:
    """An app database (SQLite) with one graph (on the host server at ``host_url`` if given);
    the app's settings as its environment, the owner's key and the graph's id."""
    url = f"sqlite:///{folder / f'{name}.db'}"
    upgrade(url)
    values = {"DATA_DIR": str(folder / name), "DATABASE_URL": url,
              "GRAPH_DATA_DIR": str(folder / name / "graphs"),
              "BACKUP_DIR": str(folder / name / "backups"),
              "PROVISIONING_RESUME_INTERVAL_SECONDS": 0, "HOUSEKEEPING_INTERVAL_SECONDS": 0,
              "GRAPH_HOST_PROBE_SECONDS": 0, **settings}
    resources = build_resources(load_settings(**values))
    database = resources["database"].get()
    if host_url is not None:
        with database.session() as session:
            remote.add_remote_host(session, host_id="bench-host", url=host_url,
                                   token=TOKEN, graph_data_dir=folder / name / "graphs")
    with database.session() as session:
        user = accounts.create_user(session, email=f"{name}-{uuid.uuid4().hex[:6]}@x.io")
        subscription = subscriptions.request_graph(
            session, user_id=user.user_id, plan_name="ladybug-standard", graph={"name": "bench"})
        billing.mark_paid(session, subscription.id)
    execute_flow(GRAPH_FLOW, SubscriptionConfig(subscription_id=subscription.id),
                 step_context(resources, method="direct", log=logging.getLogger("bench"),
                              operation_id=None))
    with database.session() as session:
        graph_id = session.scalar(select(Graph.id).where(Graph.subscription_id ==
                                                         subscription.id))
    return {key: str(value) for key, value in values.items()}, user.api_key, str(graph_id)


def median_p90(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), statistics.quantiles(values, n=10)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--burst", type=int, default=1, help="calls to one side before the "
                        "other's (1: every call; more: each server kept busy, as under "
                        "steady traffic)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        port = _free_port()
        host_server = _start(folder / "host-server", port)
        servers: list[subprocess.Popen[bytes]] = []
        handles: list[Any] = []
        try:
            sides: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {}
            served = {"host_url": f"http://127.0.0.1:{port}", "LOCAL_GRAPH_HOSTS": "false",
                      "GRAPH_HOST_TOKEN": TOKEN}
            for name, extra in (("embedded", {}), ("host server", served)):
                environment, key, graph_id = side(folder, name.replace(" ", "-"), **extra)
                server, url = serve(environment)
                servers.append(server)
                client = httpx.Client(base_url=url, timeout=30,
                                      headers={"Authorization": f"Bearer {key}"})
                handles.append(client)
                fill = client.post(f"/v1/graphs/{graph_id}/query", json={
                    "query": "UNWIND range(1, 1000) AS i CREATE (:Entity {identifier: "
                             "'e' + string(i), name: 'entity ' + string(i)})"})
                fill.raise_for_status()
                path = (folder / "host-server" / f"{graph_id}.lbug" if name == "host server"
                        else folder / "embedded" / "graphs" / "ladybug-standard" /
                        f"{graph_id}.lbug")
                db = ladybug.Database(str(path), read_only=True,
                                      buffer_pool_size=256 * 1024 * 1024, max_db_size=1 << 40)
                conn = ladybug.Connection(db)
                handles.extend([conn, db])

                def api_call(client: httpx.Client = client, graph_id: str = graph_id) -> Any:
                    answer = client.post(f"/v1/graphs/{graph_id}/query",
                                         json={"query": QUERY, "parameters": PARAMETERS})
                    assert answer.status_code == 200 and answer.json()["rows"] == [
                        ["entity 500"]], answer.text
                    return answer

                def bare_call(conn: ladybug.Connection = conn) -> Any:
                    rows = conn.execute(QUERY, PARAMETERS).get_all()
                    assert rows == [["entity 500"]], rows
                    return rows

                sides[name] = (api_call, bare_call)
            times: dict[tuple[str, str], list[float]] = {
                (name, how): [] for name in sides for how in ("api", "bare")}
            for api_call, bare_call in sides.values():  # warm up
                for _ in range(20):
                    api_call()
                    bare_call()
            for _ in range(0, args.runs, args.burst):
                for name, (api_call, bare_call) in sides.items():
                    for _ in range(args.burst):
                        for how, call in (("api", api_call), ("bare", bare_call)):
                            started = time.perf_counter()
                            call()
                            times[(name, how)].append((time.perf_counter() - started) * 1000)
            print(f"one-row MATCH, {len(times[('embedded', 'api')])} runs each, the API and the "
                  f"open connection alternating, the two sides every {args.burst} call(s); "
                  "SQLite app database, events in memory")
            for name, goal in (("embedded", 3.0), ("host server", 5.0)):
                api_median, api_p90 = median_p90(times[(name, "api")])
                bare_median, bare_p90 = median_p90(times[(name, "bare")])
                print(f"  {name:<12} API over HTTP    median {api_median:6.3f} ms   "
                      f"p90 {api_p90:6.3f} ms")
                print(f"  {'':<12} open connection  median {bare_median:6.3f} ms   "
                      f"p90 {bare_p90:6.3f} ms")
                print(f"  {'':<12} the API adds {api_median - bare_median:+.3f} ms at the "
                      f"median, x{api_median / bare_median:.1f} (goal: within {goal:g} ms)")
        finally:
            for handle in handles:
                handle.close()
            for server in (*servers, host_server):
                server.terminate()
            for server in servers:
                server.wait(60)
            host_server.terminate()
            host_server.wait(60)


if __name__ == "__main__":
    main()
