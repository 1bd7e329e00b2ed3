"""A graph host server as a real process (``provisioning-pipelines host serve``), for tests
that talk to it over HTTP, kill it and start it again on its disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

CLI = str(Path(sys.executable).parent / "provisioning-pipelines")
TOKEN = "graph-host-token-of-the-tests"
PREVIOUS_TOKEN = "graph-host-token-rotated-away"


class HostProcess:
    """One host server on a fixed port and data root; ``start`` again after ``kill``."""

    def __init__(self, data_root: Path, log: Path, *, host_id: str = "host-a",
                 tier: str = "ladybug-standard", capacity: int = 10,
                 previous_token: str | None = PREVIOUS_TOKEN) -> None:
        self.data_root = data_root
        self.log = log
        self.host_id = host_id
        self.tier = tier
        self.capacity = capacity
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"PATH": os.environ.get("PATH", ""), "HOME": str(data_root.parent),
                    "GRAPH_HOST_TOKEN": TOKEN}
        if previous_token:
            self.env["GRAPH_HOST_TOKEN_PREVIOUS"] = previous_token
        if os.environ.get("PYTHONPATH"):  # the tree under test, not only the installed one
            self.env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [CLI, "host", "serve", "--id", self.host_id, "--tier", self.tier,
                "--capacity", str(self.capacity), "--data-root", str(self.data_root),
                "--port", str(self.port)]

    def start(self, *, ready_timeout: float = 90) -> HostProcess:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command(), env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"host serve exited with {self.process.returncode}:\n"
                                   f"{self.log.read_text(errors='replace')}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"host serve did not answer within {ready_timeout} s")
            time.sleep(0.1)  # polling for start-up, not waiting out a timing

    def kill(self) -> None:
        """SIGKILL, as a machine that loses power: nothing is flushed or closed."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        self.kill()
