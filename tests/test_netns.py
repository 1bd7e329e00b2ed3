"""The machines of ``tests/netns.py``: what a cut link does, that parallel runs never share
addresses, and that nothing is left behind, by a failed test or a killed test process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import netns
from tests.conftest import require
from tests.host_serving import HostProcess
from tests.netns import Machines, ip

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _root() -> None:
    require("network namespaces", netns.problem())


def left_behind(name: str, subnet: str, *, now_of: Machines | None = None) -> list[str]:
    """What is left of a machine (its subnet's route, unless ``now_of`` took it since)."""
    found = []
    if name in netns._namespaces():
        found.append(f"namespace {name}")
    if ip("link", "show", name, check=False).returncode == 0:
        found.append(f"link {name}")
    taken = {machine.subnet for machine in now_of} if now_of else set()
    if subnet not in taken and ip("route", "show", subnet).stdout.strip():
        found.append(f"route {subnet}")
    return found


def test_a_failed_test_leaves_no_namespace_link_or_route() -> None:
    with pytest.raises(RuntimeError, match="the test failed"), Machines(2) as machines:
        made = [(machine.name, machine.subnet) for machine in machines]
        assert all(name in netns._namespaces() for name, _ in made)
        machines.cut(1)
        raise RuntimeError("the test failed")
    assert [left_behind(name, subnet) for name, subnet in made] == [[], []]


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait()


def _child(started: list[subprocess.Popen[str]]) -> tuple[subprocess.Popen[str], list[dict]]:
    """A test process of its own that makes two machines and waits to be killed."""
    script = ("import json, sys, time\nfrom tests.netns import Machines\n"
              "machines = Machines(2).__enter__()\n"
              "print(json.dumps([{'name': m.name, 'subnet': m.subnet} for m in machines]),"
              " flush=True)\ntime.sleep(600)\n")
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    started.append(child)
    assert child.stdout is not None
    return child, json.loads(child.stdout.readline())


def test_parallel_runs_never_share_addresses_and_a_killed_runs_machines_are_reclaimed(
        children: list[subprocess.Popen[str]]) -> None:
    first, first_made = _child(children)
    second, second_made = _child(children)
    with Machines(2) as ours:
        subnets = [m["subnet"] for m in first_made + second_made] + [m.subnet for m in ours]
        names = [m["name"] for m in first_made + second_made] + [m.name for m in ours]
        assert len(set(subnets)) == 6 and len(set(names)) == 6
        os.kill(first.pid, signal.SIGKILL)  # no cleanup of its own runs
        first.wait()
        assert all(m["name"] in netns._namespaces() for m in first_made)
        with Machines(1) as fresh:  # the next to allocate removes what the dead one left
            assert [left_behind(m["name"], m["subnet"], now_of=fresh)
                    for m in first_made] == [[], []]
            assert all(m["name"] in netns._namespaces() for m in second_made)
    os.kill(second.pid, signal.SIGKILL)
    second.wait()
    with Machines(1):
        pass
    assert [left_behind(m["name"], m["subnet"]) for m in second_made] == [[], []]


def test_a_cut_link_refuses_at_once_and_a_paused_host_answers_nothing(tmp_path: Path) -> None:
    """Cut: a new connection is refused at once (no route: it never leaves this machine); an
    open one waits, and carries on once the link is back. Paused: the kernel accepts, the
    process answers nothing until it is resumed."""
    with Machines(1) as machines:
        host = HostProcess(tmp_path / "data", tmp_path / "host.log",
                           machine=machines[0]).start()
        try:
            with httpx.Client(base_url=host.url, timeout=1.5) as client:
                assert client.get("/healthz").status_code == 200  # the connection stays open
                machines.cut(0)
                assert machines.is_cut(0)
                with pytest.raises(httpx.ReadTimeout):  # written into the open connection
                    client.get("/healthz")
                started = time.monotonic()
                with pytest.raises(OSError) as refused:
                    socket.create_connection((host.address, host.port), timeout=5)
                assert refused.value.errno == 113  # EHOSTUNREACH
                assert time.monotonic() - started < 1
                machines.restore(0)
                assert client.get("/healthz").status_code == 200
                host.pause()
                with pytest.raises(httpx.ReadTimeout):
                    client.get("/healthz")
                host.resume()
                assert client.get("/healthz").status_code == 200
        finally:
            host.stop()
