"""The API as a real process (``provisioning-pipelines serve``), for tests that kill or stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from provisioning_pipelines.services.billing.events import billing_event, signed_delivery
from tests.conftest import free_port

CLI = str(Path(sys.executable).parent / "provisioning-pipelines")
SECRET = "whsec_process_tests"
SESSION_SECRET = "session secret of the process tests"


class ServerProcess:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def pay(self, subscription_id: str, *, event_id: str | None = None) -> httpx.Response:
        """Deliver a signed ``checkout.session.completed`` for the subscription."""
        event = billing_event(subscription_id, event_id=event_id or f"evt_{subscription_id}")
        payload, headers = signed_delivery(event, SECRET)
        return httpx.post(f"{self.url}/v1/webhooks/billing", content=payload, timeout=30,
                          headers=headers)


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A small HTTP server of the test's own on a free loopback port, in a thread; its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def server_env(tmp_path: Path, **settings: Any) -> dict[str, str]:
    """The environment of a server process: its own data folder, the given settings."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
           # a checkout first on the path (a worktree) is what the server runs, too
           **{key: os.environ[key] for key in ("PYTHONPATH",) if key in os.environ},
           "DATA_DIR": str(tmp_path / "data"), "BILLING_WEBHOOK_SECRET": SECRET,
           "SESSION_SECRET": SESSION_SECRET, "GRAPH_DATA_DIR": str(tmp_path / "graphs")}
    if os.environ.get("PYTHONPATH"):  # the tree under test, not only the installed one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env.update({key: str(value) for key, value in settings.items()})
    return env


@contextmanager
def api_process(env: dict[str, str], log: Path, *, ready_timeout: float = 90, workers: int = 1
                ) -> Iterator[ServerProcess]:
    """Start ``serve``; yields once it answers; kills whatever is left at the end."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen([CLI, "serve", "--port", str(port), "--workers",
                                    str(workers)], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"serve exited with {process.returncode}:\n{server.output()}")
            try:
                httpx.get(f"{server.url}/healthz", timeout=5)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
