"""The command line, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from provisioning_pipelines.services import webhooks
from provisioning_pipelines.storage.db import dispose_database, get_database
from tests.factories import new_customer, paid_graph_subscription

BIN = Path(sys.executable).parent


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "provisioning-pipelines"), *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120)


def test_users_create_prints_the_key_once_as_json(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data")}
    made = cli("users", "create", "--email", "ada@example.com", "--org", "Analytical",
               "--json", env=env)
    assert made.returncode == 0, made.stderr
    answer = json.loads(made.stdout)
    assert set(answer) == {"user_id", "org_id", "api_key"}
    assert answer["api_key"].startswith("ppk_")

    again = cli("users", "create", "--email", "ada@example.com", env=env)
    assert again.returncode == 2
    assert again.stderr.strip() == "error: email: a user with 'ada@example.com' exists already"
    assert "Traceback" not in again.stderr


def test_invalid_setting_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    bad = cli("db", "upgrade", env={"DATA_DIR": str(tmp_path),
                                    "DAGSTER_MATERIALIZATION_TIMEOUT": "soon"})
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: invalid settings: DAGSTER_MATERIALIZATION_TIMEOUT")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_a_rejected_webhook_is_listed_and_replayed_into_a_graph(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data"), "PROVISIONING_RETRY_BACKOFF_SECONDS": "0"}
    database_url = f"sqlite:///{(tmp_path / 'data' / 'provisioning.db').resolve()}"
    assert cli("db", "upgrade", env=env).returncode == 0
    database = get_database(database_url)
    sub_id = paid_graph_subscription(database, new_customer(database), paid=False)
    event = {"id": "evt_refused_once", "type": "checkout.session.completed", "created": 1,
             "data": {"object": {"payment_status": "paid",
                                 "metadata": {"subscription_id": sub_id}}}}
    with database.session() as session:  # as an older release that could not apply it did
        webhooks.record_rejected(session, webhooks.read(json.dumps(event)),
                                 "refused by an older release")
    dispose_database(database_url)

    listed = cli("webhooks", "list", "--rejected", env=env)
    replayed = cli("webhooks", "replay", "evt_refused_once", env=env)
    again = cli("webhooks", "replay", "evt_refused_once", env=env)
    unknown = cli("webhooks", "replay", "evt_never", env=env)

    assert listed.returncode == 0 and "evt_refused_once" in listed.stdout
    assert "refused by an older release" in listed.stdout
    assert replayed.returncode == 0, replayed.stderr
    answer = json.loads(replayed.stdout)
    assert answer["paid"] is True and answer["result"]["status"] == "active"
    assert again.returncode == 2 and "only a rejected event is replayed" in again.stderr
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: event_id: no webhook")
    assert cli("webhooks", "list", "--rejected", env=env).stdout == ""
