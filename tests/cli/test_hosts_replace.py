"""``hosts replace`` and ``hosts clear`` from the shell, on the embedded default's local hosts
(they share ``BACKUP_DIR``): a graph rebuilt on another host of its tier from its newest backup,
its operation's result printed, the old host marked and then taken back empty."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.cli.test_commands import cli


def test_a_local_host_replaced_from_the_shell(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data"), "LOCAL_HOST_CAPACITY": "1"}

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
    run("graphs", "backup", graph_id)
    run("graphs", "query", graph_id, "CREATE (:Entity {identifier: 'late', name: 'Late'})",
        "--write")
    lost = "local-ladybug-standard"
    refused = run("hosts", "replace", lost, code=2)
    assert "answers its probes" in refused.stderr and "--force" in refused.stderr
    spare = json.loads(run("hosts", "add", "--tier", "ladybug-standard", "--capacity",
                           "1").stdout)["host_id"]

    replaced = json.loads(run("hosts", "replace", lost, "--force").stdout)

    assert replaced["status"] == "replaced" and replaced["failed"] == []
    [moved] = replaced["graphs"]
    assert (moved["graph_id"], moved["host_id"]) == (graph_id, spare)
    assert moved["replaced_from"]["host_id"] == lost and moved["replaced_from"]["backup_id"]
    rows = json.loads(run("graphs", "query", graph_id,
                          "MATCH (e:Entity) RETURN e.identifier AS id", "--json").stdout)
    assert rows["rows"] == [["acme"]]  # the backup's data; what came after it is lost
    listed = {host["host_id"]: host for host in
              json.loads(run("hosts", "list", "--json").stdout)["hosts"]}
    assert listed[lost]["status"] == "replaced" and listed[lost]["slots_used"] == 0
    assert listed[spare]["slots_used"] == 1
    assert "hosts clear" in run("hosts", "resume", lost, code=2).stderr

    cleared = json.loads(run("hosts", "clear", lost).stdout)
    # The old folder still held the graph's stale file: moved aside, not served, not deleted.
    assert cleared["status"] == "available" and cleared["quarantined"] == [graph_id]
    quarantined = tmp_path / "data" / "graphs" / "ladybug-standard" / ".quarantine"
    assert [path.name.startswith(f"{graph_id}.lbug") for path in quarantined.iterdir()] == [True]
    listed = {host["host_id"]: host for host in
              json.loads(run("hosts", "list", "--json").stdout)["hosts"]}
    assert listed[lost]["status"] == "available" and listed[lost]["slots_used"] == 0
