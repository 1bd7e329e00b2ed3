"""``dev`` stopped by a SIGTERM (a service manager, ``kill``) stops what it started: the API,
the Dagster webserver and its daemon (it once ended alone and left all three running); and its
three processes share one data folder wherever it is started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import free_port


def children_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def environ_of(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(pair.decode().partition("=")[::2] for pair in pairs if pair)


def test_a_sigterm_to_dev_stops_the_api_the_webserver_and_the_daemon(tmp_path: Path) -> None:
    """Run outside the checkout with a relative DATA_DIR, which once named two folders: the
    API's here and the Dagster processes' in the checkout they run in."""
    env = {**os.environ, "DATA_DIR": "data"}
    env.pop("DAGSTER_HOME", None)
    dev = subprocess.Popen(
        [sys.executable, "-m", "provisioning_pipelines.cli", "dev", "--port", str(free_port()),
         "--dagster-port", str(free_port())], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
        text=True)
    try:
        assert dev.stdout is not None
        for line in dev.stdout:  # printed once the webserver answers
            if line.startswith("Dagster UI"):
                break
        started = children_of(dev.pid)
        assert len(started) == 3, started  # serve, dagster-webserver, dagster-daemon
        assert {environ_of(pid)["DATA_DIR"] for pid in started} == {str(tmp_path / "data")}

        dev.send_signal(signal.SIGTERM)
        assert dev.wait(timeout=90) == 0
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in started if alive(pid)] == []
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
