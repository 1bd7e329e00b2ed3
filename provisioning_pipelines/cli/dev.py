"""Starting the Dagster webserver and daemon for this code location, as child processes.

Used by ``make dev``, by the benchmark of launched runs and by the tests of the launch path, so
all three start Dagster the same way: the children inherit the environment (the same database,
graph folder and Redis as the caller) plus ``DAGSTER_HOME``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@contextmanager
def dagster_servers(
    dagster_home: Path, *, port: int = 3000, env: dict[str, str] | None = None,
    log_dir: Path | None = None, ready_timeout: float = 120,
) -> Iterator[str]:
    """Run ``dagster-webserver`` and ``dagster-daemon``; yields the webserver's URL."""
    environment = {**os.environ, **(env or {}), "DAGSTER_HOME": str(dagster_home)}
    log_dir = log_dir or dagster_home
    log_dir.mkdir(parents=True, exist_ok=True)
    workspace = ["-w", str(ROOT / "workspace.yaml")]
    commands = {
        "webserver": [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                      *workspace],
        "daemon": [str(BIN / "dagster-daemon"), "run", *workspace],
    }
    processes = []
    try:
        for name, command in commands.items():
            log = (log_dir / f"{name}.log").open("ab")
            processes.append(subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log,
                                              stderr=subprocess.STDOUT,
                                              start_new_session=True))
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, processes, ready_timeout)
        yield url
    finally:
        # The daemon first (so it does not call a code server that is already gone), then the
        # webserver; then whatever each left in its process group (a code server of its own).
        for process in reversed(processes):
            stop(process)


def stop(process: subprocess.Popen[bytes], *, grace: float = 20) -> None:
    """SIGTERM a process started in a session of its own, wait, then SIGKILL its whole group."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # children still in the group
    process.wait()


def _wait_ready(url: str, processes: list[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the Dagster webserver at {url} did not answer in {timeout:g} s")
