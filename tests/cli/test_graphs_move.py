"""``graphs move`` and ``hosts drain --move`` from the shell, on the embedded default's local
hosts: a graph and its data taken to another host of its tier, a second run finding it there,
and the mistakes an operator makes named."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.cli.test_commands import cli


def test_a_graph_moved_and_a_host_drained_from_the_shell(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data"), "LOCAL_HOST_CAPACITY": "2"}

    def run(*words: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        answer = cli(*words, env=env)
        assert answer.returncode == code, (words, answer.stdout, answer.stderr)
        return answer

    user = json.loads(run("users", "create", "--email", "ops@example.com", "--json").stdout)
    sub_id = json.loads(run("subscriptions", "create", "--user", user["user_id"]).stdout)[
        "subscription_id"]
    run("subscriptions", "pay", sub_id)
    graph_id = json.loads(run("provision", "graph", "--subscription", sub_id).stdout)[
        "resource_id"]
    run("graphs", "query", graph_id, "CREATE (:Entity {identifier: 'acme', name: 'Acme'})",
        "--write")
    home = "local-ladybug-standard"
    spare = json.loads(run("hosts", "add", "--tier", "ladybug-standard", "--capacity",
                           "2").stdout)["host_id"]

    assert "--to" in run("graphs", "move", graph_id, code=2).stderr
    assert "no host 'nowhere'" in run("graphs", "move", graph_id, "--to", "nowhere",
                                      code=2).stderr
    assert "not moving" in run("graphs", "move", graph_id, "--cancel", code=2).stderr

    moved = json.loads(run("graphs", "move", graph_id, "--to", spare).stdout)

    assert moved["moved"] is True and moved["host_id"] == spare
    assert moved["from_host_id"] == home and moved["write_window_seconds"] >= 0
    rows = json.loads(run("graphs", "query", graph_id,
                          "MATCH (e:Entity) RETURN e.identifier AS id", "--json").stdout)
    assert rows["rows"] == [["acme"]]
    again = json.loads(run("graphs", "move", graph_id, "--to", spare).stdout)
    assert again["moved"] is False and again["host_id"] == spare
    slots = {host["host_id"]: host["slots_used"] for host in
             json.loads(run("hosts", "list", "--json").stdout)["hosts"]}
    assert (slots[home], slots[spare]) == (0, 1)
    old_files = tmp_path / "data" / "graphs" / "ladybug-standard"
    assert not list(old_files.glob(f"{graph_id}.lbug*"))  # the old copy removed, last

    drained = json.loads(run("hosts", "drain", spare, "--move").stdout)

    assert drained["failed"] == []
    assert [(entry["graph_id"], entry["host_id"]) for entry in drained["moved"]] == [
        (graph_id, home)]
    rows = json.loads(run("graphs", "query", graph_id,
                          "MATCH (e:Entity) RETURN e.identifier AS id", "--json").stdout)
    assert rows["rows"] == [["acme"]]
    run("graphs", "query", graph_id, "CREATE (:Entity {identifier: 'after', name: 'After'})",
        "--write")
