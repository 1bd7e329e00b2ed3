"""``hosts add --url``: a graph host server is registered with what it really holds, or not at
all; ``hosts list`` shows its address and health."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning_pipelines.storage.hosts.client import HostClient
from tests.cli.test_commands import cli
from tests.conftest import free_port
from tests.host_serving import TOKEN, HostProcess

DDL = ["CREATE NODE TABLE Person(id INT64, PRIMARY KEY(id))"]


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostProcess]:
    """A host server that already holds two graphs and a subgraph of one (a replacement machine
    with its disk): two slots taken."""
    folder = tmp_path_factory.mktemp("remote-host")
    process = HostProcess(folder / "data", folder / "host.log", host_id="host-b",
                          tier="ladybug-large", capacity=7).start()
    with HostClient(process.host_id, process.url, TOKEN) as client:
        made = ["kg" + secrets.token_hex(8) for _ in range(2)]
        for graph_id in (*made, f"{made[0]}_analysis"):
            client.create(graph_id, DDL)
    yield process
    process.stop()


def env_of(tmp_path: Path, **more: str) -> dict[str, str]:
    return {"DATA_DIR": str(tmp_path / "data"), "GRAPH_HOST_TOKEN": TOKEN, **more}


def test_hosts_add_reads_tier_and_capacity_and_counts_the_graphs_the_host_holds(
        host: HostProcess, tmp_path: Path) -> None:
    env = env_of(tmp_path)
    added = cli("hosts", "add", "--id", "host-b", "--url", host.url, env=env)
    assert added.returncode == 0, added.stderr
    answer = json.loads(added.stdout)
    assert (answer["host_id"], answer["tier"], answer["capacity"], answer["slots_used"],
            answer["url"]) == ("host-b", "ladybug-large", 7, 2, host.url)

    listed = cli("hosts", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    shown = {h["host_id"]: h for h in json.loads(listed.stdout)["hosts"]}
    remote = shown["host-b"]
    assert (remote["tier"], remote["url"], remote["health"], remote["slots_used"],
            remote["slots_free"], remote["draining"]) == (
        "ladybug-large", host.url, "healthy", 2, 5, False)
    assert remote["last_seen_at"] is not None
    assert shown["local-ladybug-large"]["url"] is None  # the local hosts are still there
    plain = cli("hosts", "list", env=env).stdout
    assert "host-b" in plain and host.url in plain and "healthy" in plain

    again = cli("hosts", "add", "--id", "host-b", "--url", host.url, env=env)
    assert again.returncode == 2 and again.stderr.strip() == \
        "error: id: host 'host-b' exists already"


def test_a_given_capacity_is_kept_and_a_wrong_tier_is_refused(host: HostProcess,
                                                               tmp_path: Path) -> None:
    env = env_of(tmp_path)
    wrong = cli("hosts", "add", "--id", "host-b", "--url", host.url, "--tier",
                "ladybug-standard", env=env)
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == (f"error: tier: graph host host-b at {host.url} serves "
                                    "'ladybug-large', not 'ladybug-standard'")
    added = cli("hosts", "add", "--id", "host-b", "--url", host.url, "--capacity", "4",
                "--tier", "ladybug-large", env=env)
    assert added.returncode == 0, added.stderr
    assert (json.loads(added.stdout)["capacity"], json.loads(added.stdout)["slots_used"]) == \
        (4, 2)


def test_a_wrong_token_a_dead_url_or_no_token_adds_nothing_with_one_line(
        host: HostProcess, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    cases = {
        "wrong token": (env_of(tmp_path, GRAPH_HOST_TOKEN="not-the-token-of-that-host"),
                        host.url, f"error: url: graph host host-b at {host.url} refused the "
                                  "token (GRAPH_HOST_TOKEN is not the one it serves with); "
                                  "not added"),
        "dead url": (env_of(tmp_path), dead,
                     f"error: url: graph host host-b at {dead} is unavailable: no answer "
                     "(ConnectError); not added"),
        "no token": (env_of(tmp_path, GRAPH_HOST_TOKEN=""), host.url,
                     "error: url: GRAPH_HOST_TOKEN is unset, so no remote host can be added; "
                     "set it to the token the host serves with"),
        "not a url": (env_of(tmp_path), "ftp://somewhere/x",
                      "error: url: 'ftp://somewhere/x' is not a host server's address; "
                      "expected http(s)://host:port"),
    }
    for case, (env, url, line) in cases.items():
        refused = cli("hosts", "add", "--id", "host-b", "--url", url, env=env)
        assert refused.returncode == 2, case
        assert refused.stderr.strip() == line, case
        assert "Traceback" not in refused.stderr and TOKEN not in refused.stderr, case
    listed = json.loads(cli("hosts", "list", "--json", env=env_of(tmp_path)).stdout)
    assert "host-b" not in {h["host_id"] for h in listed["hosts"]}
    no_id = cli("hosts", "add", "--url", host.url, env=env_of(tmp_path))
    assert no_id.returncode == 2 and "--id is required with --url" in no_id.stderr
