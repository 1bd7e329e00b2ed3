"""A graph's create and delete in process (``LocalHost``) and through a host server
(``HostClient`` to ``host serve`` on loopback), side by side in one run.

    python -m benchmarks.bench_host [--runs 200]

Both hosts use the same schema (the standard one, from a template after the first create), on
the same disk; runs alternate between them so that a busy moment of the machine falls on both.
Printed: the median and p90 of create, delete and the two together on each, and what the HTTP
hop adds at the median (the goal for the graph flow: at most 3 ms).
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from provisioning_pipelines.services.graphs.schemas import schema_ddl
from provisioning_pipelines.storage.hosts import GraphHost, LocalHost
from provisioning_pipelines.storage.hosts.client import HostClient

TOKEN = secrets.token_hex(16)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(root: Path, port: int, host_id: str = "bench-host") -> subprocess.Popen[bytes]:
    """A ``host serve`` of the standard tier on ``port``, once it answers ``/healthz``."""
    cli = str(Path(sys.executable).parent / "provisioning-pipelines")
    env = {**os.environ, "GRAPH_HOST_TOKEN": TOKEN}
    process = subprocess.Popen([cli, "host", "serve", "--id", host_id, "--tier",
                                "ladybug-standard", "--capacity", "100000", "--data-root",
                                str(root), "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("host serve did not start")


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def _once(host: GraphHost, ddl: list[str]) -> tuple[float, float]:
    graph_id = "kg" + secrets.token_hex(8)
    made = _timed(lambda: host.create(graph_id, ddl))
    gone = _timed(lambda: host.delete(graph_id))
    return made, gone


def _p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    ddl = schema_ddl([])
    with tempfile.TemporaryDirectory(prefix="bench-host-") as folder:
        port = _free_port()
        server = _start(Path(folder) / "remote", port)
        local = LocalHost("bench-local", Path(folder) / "local", tier="ladybug-standard",
                          capacity=100000)
        try:
            with HostClient("bench-host", f"http://127.0.0.1:{port}", TOKEN) as remote:
                hosts: dict[str, GraphHost] = {"local": local, "http": remote}
                for host in hosts.values():  # templates built, connections open
                    for _ in range(5):
                        _once(host, ddl)
                results: dict[str, list[tuple[float, float]]] = {name: [] for name in hosts}
                for _ in range(args.runs):
                    for name, host in hosts.items():
                        results[name].append(_once(host, ddl))
        finally:
            server.terminate()
            server.wait(30)
    print(f"{args.runs} runs each, {len(ddl)} DDL statements (from a template)")
    print(f"{'':8} {'create p50':>11} {'p90':>7} {'delete p50':>11} {'p90':>7} "
          f"{'both p50':>9} {'p90':>7}  (ms)")
    medians = {}
    for name, timings in results.items():
        creates = [made for made, _ in timings]
        deletes = [gone for _, gone in timings]
        both = [made + gone for made, gone in timings]
        medians[name] = (statistics.median(creates), statistics.median(deletes),
                         statistics.median(both))
        print(f"{name:8} {medians[name][0]:11.2f} {_p(creates, 0.9):7.2f} "
              f"{medians[name][1]:11.2f} {_p(deletes, 0.9):7.2f} {medians[name][2]:9.2f} "
              f"{_p(both, 0.9):7.2f}")
    (lc, ld, lb), (hc, hd, hb) = medians["local"], medians["http"]
    print(f"added by HTTP at the median: create {hc - lc:+.2f} ms (x{hc / lc:.2f}), "
          f"delete {hd - ld:+.2f} ms (x{hd / ld:.2f}), both {hb - lb:+.2f} ms (x{hb / lb:.2f})")


if __name__ == "__main__":
    main()
