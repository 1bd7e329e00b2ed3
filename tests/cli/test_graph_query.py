"""``graphs query``: an operator's Cypher on a graph, read-only unless ``--write``, as a table or
JSON, with ``--param`` values read as JSON when they are JSON."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from provisioning_pipelines.cli.graphs import parse_params
from tests.cli.test_commands import cli


def test_an_operator_writes_with_write_and_reads_as_a_table_or_json(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data"), "PROVISIONING_RETRY_BACKOFF_SECONDS": "0"}

    def run(*words: str, status: int = 0) -> subprocess.CompletedProcess[str]:
        answer = cli(*words, env=env)
        assert answer.returncode == status, (words, answer.stdout, answer.stderr)
        return answer

    user = json.loads(run("users", "create", "--email", "ops@example.com", "--json").stdout)
    sub_id = json.loads(run("subscriptions", "create", "--user", user["user_id"]).stdout)[
        "subscription_id"]
    run("subscriptions", "pay", sub_id)
    graph_id = json.loads(run("provision", "graph", "--subscription", sub_id).stdout)[
        "resource_id"]
    create = "CREATE (:Entity {identifier: $id, name: $name, aliases: $aliases})"
    params = ("--param", "id=e1", "--param", "name=Acme Inc.", "--param", 'aliases=["A","B"]')

    refused = run("graphs", "query", graph_id, create, *params, status=2)
    assert refused.stderr.startswith("error: query: this query writes") and \
        "Traceback" not in refused.stderr
    assert "run it with --write to let it write" in refused.stderr
    run("graphs", "query", graph_id, create, *params, "--write")

    read = "MATCH (e:Entity) RETURN e.identifier AS id, e.name AS name, e.aliases AS aliases"
    table = run("graphs", "query", graph_id, read).stdout.splitlines()
    assert table[0].split() == ["id", "name", "aliases"]
    assert table[2].split() == ["e1", "Acme", "Inc.", '["A",', '"B"]']
    assert table[3].startswith("1 row(s) in ")
    answer = json.loads(run("graphs", "query", graph_id, read, "--json").stdout)
    assert answer["rows"] == [["e1", "Acme Inc.", ["A", "B"]]] and not answer["truncated"]

    broken = run("graphs", "query", graph_id, "MATCH (n:Nowhere) RETURN n", status=2)
    assert "Nowhere" in broken.stderr and str(tmp_path) not in broken.stderr
    assert "no graph" in run("graphs", "query", "kg" + "0" * 16, read, status=2).stderr


def test_a_params_value_is_json_when_it_parses_and_text_otherwise() -> None:
    assert parse_params(["n=5", "f=1.5", "t=true", "z=null", "l=[1,2]", 'q="5"', "s=Acme",
                         "e=", "eq=a=b", "nan=NaN"]) == {
        "n": 5, "f": 1.5, "t": True, "z": None, "l": [1, 2], "q": "5", "s": "Acme", "e": "",
        "eq": "a=b", "nan": "NaN"}
