"""Stalled request bodies against a real server: what they hold, and for how long.

    python -m benchmarks.bench_slow_bodies [--connections 300] [--wait 20]

A real ``provisioning-pipelines serve`` process (embedded defaults, its own folder) gets
``--connections`` unauthenticated webhook connections at once, each announcing 1 MiB and sending
1 MiB less 100 bytes, then stalling. Printed: the server's resident memory (``VmRSS`` from
``/proc/PID/status``) before, once every body is sent, and after each connection was answered
(or ``--wait`` seconds passed), what each was answered, and whether the server still answers
``/healthz`` meanwhile; then the same again (``--rounds``): the allocator keeps freed pages
mapped, so memory freed shows as a next round that needs no more.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

CLI = str(Path(sys.executable).parent / "provisioning-pipelines")
ANNOUNCED = 1024 * 1024
SENT = ANNOUNCED - 100


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with log.open("ab") as out:
        process = subprocess.Popen([CLI, "serve", "--port", str(port)], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    while True:
        if process.poll() is not None:
            raise SystemExit(f"serve exited:\n{log.read_text()}")
        try:
            httpx.get(f"{url}/healthz", timeout=5)
            return process, url, port
        except httpx.HTTPError:
            time.sleep(0.1)


def stall(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = (f"POST /v1/webhooks/billing HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {ANNOUNCED}\r\n\r\n")
    with contextlib.suppress(OSError):  # refused and closed before all of it was sent
        sock.sendall(head.encode() + b" " * SENT)
    return sock


def answer(sock: socket.socket, deadline: float) -> str:
    """The status the server answered before ``deadline``, or ``none``."""
    raw = b""
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
            if b"\r\n\r\n" in raw:
                break
    except (TimeoutError, OSError):
        pass
    return raw.split(b" ", 2)[1].decode() if raw.startswith(b"HTTP/") else "none"


def attack(pid: int, url: str, port: int, connections: int, wait: float, round_: int) -> None:
    before = rss_mib(pid)
    started = time.monotonic()
    with ThreadPoolExecutor(64) as pool:
        socks = list(pool.map(lambda _: stall(port), range(connections)))
    sent = time.monotonic() - started
    during = rss_mib(pid)
    health = httpx.get(f"{url}/healthz", timeout=30).status_code
    deadline = time.monotonic() + wait
    with ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(lambda sock: answer(sock, deadline), socks))
    waited = time.monotonic() - started
    after = rss_mib(pid)
    for sock in socks:
        sock.close()
    counts = {status: statuses.count(status) for status in sorted(set(statuses))}
    print(f"round {round_}: {connections} stalled bodies of {SENT} bytes, sent in {sent:.1f} s")
    print(f"  server RSS: before {before:.0f} MiB, all sent {during:.0f} MiB, "
          f"{waited:.0f} s after the start {after:.0f} MiB")
    print(f"  answers: {counts}; /healthz meanwhile: {health}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--wait", type=float, default=20.0,
                        help="seconds to wait for the answers after the bodies are sent")
    parser.add_argument("--rounds", type=int, default=2,
                        help="attacks one after the other (memory freed is memory reused)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_slow_bodies_"))
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
           "HOME": str(folder),
           "DATA_DIR": str(folder / "data"), "PROVISIONING_RESUME_INTERVAL_SECONDS": "0",
           "HOUSEKEEPING_INTERVAL_SECONDS": "0"}
    process, url, port = start(env, folder / "serve.log")
    try:
        for round_ in range(1, args.rounds + 1):
            attack(process.pid, url, port, args.connections, args.wait, round_)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


if __name__ == "__main__":
    main()
