"""``dev --hosts N``: the control plane and N graph host servers on this machine. A paid graph
lands on a host server's disk, never in a local folder; a SIGTERM stops Dagster, then the API,
then the hosts, and leaves nothing running; a restart starts the same hosts on the same folders
and ports, with the same token, and serves the graphs made before."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from provisioning_pipelines.cli.dev_hosts import dev_hosts, plan
from provisioning_pipelines.cli.dev_hosts import token as hosts_token
from provisioning_pipelines.errors import InvalidRequest
from provisioning_pipelines.services.capacity import hosts, remote
from provisioning_pipelines.settings import load_settings
from provisioning_pipelines.storage.db import get_database
from provisioning_pipelines.storage.hosts.client import HostClient
from tests.cli.test_commands import cli
from tests.cli.test_dev import alive, children_of, environ_of
from tests.conftest import free_port

DDL = ["CREATE NODE TABLE Person(id INT64, PRIMARY KEY(id))"]


def role_of(pid: int) -> str:
    """Which of dev's processes this is, from its command line."""
    words = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    if "host" in words and "serve" in words:
        return "host"
    if any(word.endswith(("dagster-webserver", "dagster-daemon")) for word in words):
        return "dagster"
    return "api" if "serve" in words else "other"


def paid_graph(api: str, env: dict[str, str]) -> tuple[str, str]:
    """A customer's graph, as the README makes one: a user, a subscription, the paid webhook;
    its id and host once the subscription is active."""
    made = cli("users", "create", "--email", "dev-hosts@example.com", "--json", env=env)
    assert made.returncode == 0, made.stderr
    auth = {"Authorization": f"Bearer {json.loads(made.stdout)['api_key']}"}
    asked = httpx.post(f"{api}/v1/subscriptions", headers=auth, timeout=30, json={
        "resource_type": "graph", "plan_name": "ladybug-standard", "graph": {"name": "G"}})
    assert asked.status_code == 201, asked.text
    subscription = asked.json()["subscription_id"]
    sent = cli("webhooks", "send", "--subscription", subscription, "--url", api, env=env)
    assert sent.returncode == 0, sent.stderr
    deadline = time.monotonic() + 60
    while True:
        shown = httpx.get(f"{api}/v1/subscriptions/{subscription}", headers=auth,
                          timeout=30).json()
        if shown["status"] != "provisioning" or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # polling for the background provisioning
    assert shown["status"] == "active", shown
    graph = httpx.get(f"{api}/v1/graphs/{shown['resource_id']}", headers=auth, timeout=30)
    assert graph.status_code == 200, graph.text
    return str(graph.json()["graph_id"]), str(graph.json()["host_id"])


def test_dev_with_two_hosts_places_a_paid_graph_on_a_host_and_a_sigterm_stops_all(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "DATA_DIR": "data"}
    env.pop("DAGSTER_HOME", None)
    api = f"http://127.0.0.1:{free_port()}"
    dev = subprocess.Popen(
        [sys.executable, "-m", "provisioning_pipelines.cli", "dev", "--port",
         api.rsplit(":", 1)[1], "--dagster-port", str(free_port()), "--hosts", "2",
         "--host-tier", "ladybug-standard"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
        text=True)
    started: list[int] = []
    try:
        assert dev.stdout is not None
        banner = []
        for line in dev.stdout:  # printed once everything answers
            banner.append(line)
            if line.startswith("Ctrl-C"):
                break
        started = children_of(dev.pid)
        roles = {pid: role_of(pid) for pid in started}
        assert sorted(roles.values()) == ["api", "dagster", "dagster", "host", "host"], banner
        # The control plane uses the hosts alone, with their token; the hosts have it too.
        secret = (data / "hosts" / "token").read_text().strip()
        assert (data / "hosts" / "token").stat().st_mode & 0o777 == 0o600
        for pid, role in roles.items():
            seen = environ_of(pid)
            assert seen["GRAPH_HOST_TOKEN"] == secret, role
            if role != "host":
                assert seen["LOCAL_GRAPH_HOSTS"] == "false", role

        ports = json.loads((data / "hosts" / "ports.json").read_text())
        ids = ["dev-ladybug-standard-1", "dev-ladybug-standard-2"]
        assert sorted(ports) == ids
        for port in ports.values():
            health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
            assert (health["ok"], health["tier"], health["used"]) == (True, "ladybug-standard", 0)
            assert f"http://127.0.0.1:{port}" in "".join(banner)

        operator = {"DATA_DIR": str(data), "LOCAL_GRAPH_HOSTS": "false"}
        listed = cli("hosts", "list", "--json", env=operator)
        assert listed.returncode == 0, listed.stderr
        shown = {h["host_id"]: h for h in json.loads(listed.stdout)["hosts"]}
        assert sorted(shown) == ids  # no in-process host beside them
        for host_id in ids:
            assert (shown[host_id]["health"], shown[host_id]["url"],
                    shown[host_id]["data_root"]) == (
                "healthy", f"http://127.0.0.1:{ports[host_id]}", str(data / "hosts" / host_id))

        graph_id, host_id = paid_graph(api, operator)
        assert host_id in ids
        assert (data / "hosts" / host_id / f"{graph_id}.lbug").is_file()
        with HostClient(host_id, f"http://127.0.0.1:{ports[host_id]}", secret) as host:
            assert graph_id in host.list().graphs
        files = [path for path in data.rglob("*.lbug") if (data / "hosts") not in path.parents]
        assert files == []  # nothing in a local folder

        dev.send_signal(signal.SIGTERM)
        gone: dict[int, int] = {}  # the round of polling in which each was first seen gone
        deadline = time.monotonic() + 120
        round_ = 0
        while len(gone) < len(started) and time.monotonic() < deadline:
            round_ += 1
            # Hosts first, Dagster last: a host seen gone in a round means the API was gone
            # before the round began, so it is seen gone in that round at the latest.
            for pid in sorted(started, key=lambda p: ["host", "api", "dagster"].index(roles[p])):
                if pid not in gone and not alive(pid):
                    gone[pid] = round_
            time.sleep(0.02)
        assert [pid for pid in started if alive(pid)] == []
        assert dev.wait(timeout=30) == 0
        last = {role: max(r for pid, r in gone.items() if roles[pid] == role)
                for role in ("dagster", "api")}
        first_host = min(r for pid, r in gone.items() if roles[pid] == "host")
        assert last["dagster"] <= gone[next(p for p in started if roles[p] == "api")]
        assert last["api"] <= first_host
    finally:  # after a failed assertion: dev stops what it started, or it is all killed
        if dev.poll() is None:
            dev.send_signal(signal.SIGTERM)
            try:
                dev.wait(timeout=120)
            except subprocess.TimeoutExpired:
                dev.kill()
                dev.wait()
        for pid in started:  # each leads a process group of its own
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def test_a_restart_starts_the_same_hosts_on_their_folders_and_ports_and_serves_their_graphs(
        tmp_path: Path) -> None:
    settings = load_settings(DATA_DIR=str(tmp_path / "data"))
    database = get_database(settings.resolved_database_url)
    with dev_hosts(settings, 2) as first:
        # Round robin over every graph tier: one standard host, one large.
        assert [(h.host_id, h.tier) for h in first.hosts] == [
            ("dev-ladybug-standard-1", "ladybug-standard"),
            ("dev-ladybug-large-1", "ladybug-large")]
        large = first.hosts[1]
        with HostClient(large.host_id, large.url, first.env["GRAPH_HOST_TOKEN"]) as client:
            client.create("kg" + "1" * 16, DDL)
        pids = [process.pid for process in first.processes.values()]
    assert [pid for pid in pids if alive(pid)] == []
    with database.session() as session:  # its probes stopped answering meanwhile
        remote.record_probe(session, large.host_id, False, misses=1)

    with dev_hosts(settings, 2) as second:
        assert [(h.host_id, h.url, h.data_root) for h in second.hosts] == \
            [(h.host_id, h.url, h.data_root) for h in first.hosts]
        assert second.env == first.env  # the same token
        with HostClient(large.host_id, large.url, second.env["GRAPH_HOST_TOKEN"]) as client:
            assert client.list().graphs == ("kg" + "1" * 16,)
        with database.session() as session:
            rows = {row.id: (row.url, row.health) for row in hosts.list_hosts(session)}
        assert rows == {h.host_id: (h.url, "healthy") for h in first.hosts}
    assert (tmp_path / "data" / "hosts" / "token").stat().st_mode & 0o777 == 0o600


def test_hosts_are_named_round_robin_keep_their_ports_and_refuse_unknown_tiers(
        tmp_path: Path) -> None:
    four = plan(tmp_path, 4)
    assert [h.host_id for h in four] == ["dev-ladybug-standard-1", "dev-ladybug-large-1",
                                         "dev-ladybug-xlarge-1", "dev-ladybug-standard-2"]
    assert [h.capacity for h in four] == [200, 50, 20, 200]  # each tier's own figure
    assert len({h.port for h in four}) == 4
    assert [h.data_root for h in four] == [tmp_path / h.host_id for h in four]
    again = plan(tmp_path, 2, capacity=3)
    assert [(h.host_id, h.port, h.capacity) for h in again] == \
        [(h.host_id, h.port, 3) for h in four[:2]]
    assert hosts_token(tmp_path) == hosts_token(tmp_path)

    with pytest.raises(InvalidRequest) as refused:
        plan(tmp_path, 1, ["ladybug-shared"])
    assert refused.value.message == ("--host-tier: 'ladybug-shared' is not a graph tier; one of "
                                     "ladybug-standard, ladybug-large, ladybug-xlarge")
    with pytest.raises(InvalidRequest):
        plan(tmp_path, 0)
