"""A graph host server as a real process (``provisioning-pipelines host serve``), for tests
that talk to it over HTTP, kill it, pause it and start it again on its disk; on this machine's
loopback, or inside a network namespace of ``tests/netns.py`` (a machine of its own)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.netns import Machine

CLI = str(Path(sys.executable).parent / "provisioning-pipelines")
TOKEN = "graph-host-token-of-the-tests"
PREVIOUS_TOKEN = "graph-host-token-rotated-away"


class HostProcess:
    """One host server on a fixed address, port and data root; ``start`` again after ``kill``.

    With a ``machine`` it runs in that machine's namespace (``ip netns exec``, the same process:
    ``ip`` execs it), listening on the machine's address only."""

    def __init__(self, data_root: Path, log: Path, *, host_id: str = "host-a",
                 tier: str = "ladybug-standard", capacity: int = 10,
                 previous_token: str | None = PREVIOUS_TOKEN,
                 machine: Machine | None = None) -> None:
        self.data_root = data_root
        self.log = log
        self.host_id = host_id
        self.tier = tier
        self.capacity = capacity
        self.machine = machine
        self.address = machine.address if machine else "127.0.0.1"
        # Nothing else listens in a fresh namespace: any port is free there.
        self.port = 8100 if machine else free_port()
        self.url = f"http://{self.address}:{self.port}"
        self.env = {"PATH": os.environ.get("PATH", ""), "HOME": str(data_root.parent),
                    "GRAPH_HOST_TOKEN": TOKEN}
        if previous_token:
            self.env["GRAPH_HOST_TOKEN_PREVIOUS"] = previous_token
        if os.environ.get("PYTHONPATH"):  # the tree under test, not only the installed one
            self.env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        serve = [CLI, "host", "serve", "--id", self.host_id, "--tier", self.tier,
                 "--capacity", str(self.capacity), "--data-root", str(self.data_root),
                 "--host", self.address, "--port", str(self.port)]
        return [*self.machine.exec_prefix, *serve] if self.machine else serve

    def start(self, *, ready_timeout: float = 90) -> HostProcess:
        return self.launch().wait_ready(ready_timeout=ready_timeout)

    def launch(self) -> HostProcess:
        """Start the process without waiting for it to answer (start several, then wait)."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command(), env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, *, ready_timeout: float = 90) -> HostProcess:
        assert self.process is not None, "launch it first"
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

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts its connections, the process answers nothing."""
        assert self.process is not None and self.process.poll() is None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        self.resume()  # a stopped process takes SIGKILL too, but its group is left tidy
        self.kill()
