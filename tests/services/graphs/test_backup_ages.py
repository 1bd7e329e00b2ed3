"""How old each live graph's newest backup is, as ``hosts list`` and the reaper's alert show it
(``/metrics``: tests/api/test_metrics.py): stale past its tier's allowance, a graph without one
only once it is that old itself."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from provisioning_pipelines.flows import GRAPH_FLOW, SubscriptionConfig
from provisioning_pipelines.flows.backup import BACKUP_FLOW, BackupConfig
from provisioning_pipelines.services.graphs import backups
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import Graph, GraphBackup, utcnow
from tests.factories import new_customer, paid_graph_subscription
from tests.flows.helpers import run_direct
from tests.orchestration.test_reaper import reap


def _graph(database: Database, resources: dict[str, Any]) -> str:
    sub_id = paid_graph_subscription(database, new_customer(database))
    return run_direct(GRAPH_FLOW, SubscriptionConfig(subscription_id=sub_id),
                      resources).result["graph_id"]


def backdate(database: Database, graph_id: str, *, graph_hours: float,
          backup_hours: float | None = None) -> None:
    with database.session() as session:
        session.get(Graph, graph_id).created_at = utcnow() - timedelta(hours=graph_hours)
        for backup in session.query(GraphBackup).filter_by(graph_id=graph_id):
            backup.created_at = utcnow() - timedelta(hours=backup_hours or 0)


def test_ages_are_stale_past_the_tiers_allowance(database: Database,
                                                 resources: dict[str, Any]) -> None:
    fresh, old_without, recent, old = (_graph(database, resources) for _ in range(4))
    for graph_id in (recent, old):
        run_direct(BACKUP_FLOW, BackupConfig(graph_id=graph_id), resources)
    backdate(database, old_without, graph_hours=40)
    backdate(database, recent, graph_hours=100, backup_hours=2)
    backdate(database, old, graph_hours=100, backup_hours=40)

    with database.session() as session:
        ages = {age.graph_id: age for age in backups.backup_ages(session)}
    assert {graph_id: ages[graph_id].stale for graph_id in (fresh, old_without, recent, old)} \
        == {fresh: False, old_without: True, recent: False, old: True}
    assert ages[fresh].age_seconds is None and ages[old_without].age_seconds is None
    assert ages[recent].age_seconds == pytest.approx(2 * 3600, abs=120)
    assert ages[old].age_seconds == pytest.approx(40 * 3600, abs=120)


def test_the_reaper_alerts_on_a_stale_graph_every_round(
        database: Database, resources: dict[str, Any],
        capfd: pytest.CaptureFixture[str]) -> None:
    stale, fine = _graph(database, resources), _graph(database, resources)
    for graph_id in (stale, fine):
        run_direct(BACKUP_FLOW, BackupConfig(graph_id=graph_id), resources)
    backdate(database, stale, graph_hours=100, backup_hours=50)
    reap(resources)
    alerts = [line for line in capfd.readouterr().err.splitlines() if "ALERT: graph" in line]
    assert len([line for line in alerts if stale in line]) == 1
    assert "newest backup is 50.0 h old; its tier allows 36 h" in alerts[0]
    assert not [line for line in alerts if fine in line]


def test_hosts_list_shows_the_backup_ages_of_each_hosts_graphs(tmp_path: Path) -> None:
    from tests.cli.test_commands import cli

    env = {"DATA_DIR": str(tmp_path / "data")}

    def run(*words: str) -> subprocess.CompletedProcess[str]:
        answer = cli(*words, env=env)
        assert answer.returncode == 0, (words, answer.stderr)
        return answer

    user = json.loads(run("users", "create", "--email", "ops@example.com", "--json").stdout)
    sub_id = json.loads(run("subscriptions", "create", "--user", user["user_id"]).stdout)[
        "subscription_id"]
    run("subscriptions", "pay", sub_id)
    graph_id = json.loads(run("provision", "graph", "--subscription", sub_id).stdout)[
        "resource_id"]
    listed = json.loads(run("hosts", "list", "--json").stdout)["hosts"]
    mine = [host for host in listed if host["backups"]]
    assert [entry["graph_id"] for host in mine for entry in host["backups"]] == [graph_id]
    assert mine[0]["backups"][0]["age_seconds"] is None
    run("graphs", "backup", graph_id)
    listed = json.loads(run("hosts", "list", "--json").stdout)["hosts"]
    entry = next(entry for host in listed for entry in host["backups"])
    assert entry["age_seconds"] is not None and entry["age_seconds"] < 600
    assert not entry["stale"]
    assert "1 graph(s), 0 stale, oldest newest-backup 0.0 h" in run("hosts", "list").stdout
