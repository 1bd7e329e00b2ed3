"""The command line, as a user runs it."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from provisioning_pipelines.services import webhooks
from provisioning_pipelines.services.billing import outbox
from provisioning_pipelines.services.billing.events import billing_event
from provisioning_pipelines.storage.db import dispose_database, get_database
from tests.conftest import free_port
from tests.factories import new_customer, paid_graph_subscription
from tests.serving import api_process, server_env

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
    # an email's case apart is the same address: a member is found by it case-blind
    shouted = cli("users", "create", "--email", "ADA@example.com", env=env)
    assert shouted.returncode == 2
    assert shouted.stderr.strip() == ("error: email: a user with 'ada@example.com' exists "
                                      "already (emails are compared case-blind)")


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
    event = billing_event(sub_id, event_id="evt_refused_once", created=1)
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


def test_a_replayed_cancellation_suspends_the_graph_as_the_webhook_would(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data")}
    database_url = f"sqlite:///{(tmp_path / 'data' / 'provisioning.db').resolve()}"
    assert cli("db", "upgrade", env=env).returncode == 0
    database = get_database(database_url)
    sub_id = paid_graph_subscription(database, new_customer(database))
    dispose_database(database_url)
    made = cli("provision", "graph", "--subscription", sub_id, env=env)
    assert made.returncode == 0, made.stderr
    event = billing_event(sub_id, "customer.subscription.deleted", event_id="evt_cancel_late")
    database = get_database(database_url)
    with database.session() as session:
        webhooks.record_rejected(session, webhooks.read(json.dumps(event)), "refused once")
    dispose_database(database_url)

    replayed = cli("webhooks", "replay", "evt_cancel_late", env=env)

    assert replayed.returncode == 0, replayed.stderr
    answer = json.loads(replayed.stdout)
    assert answer["change"] == "canceled"
    shown = cli("graphs", "show", json.loads(made.stdout)["resource_id"], env=env)
    assert json.loads(shown.stdout)["status"] == "suspended"


def test_every_command_answers_a_mistake_in_one_line_with_status_2(
    tmp_path: Path, postgres_server: str,
) -> None:
    env = {"DATA_DIR": str(tmp_path / "data"), "DAGSTER_WEBSERVER_URL": f"http://127.0.0.1:{free_port()}"}
    assert cli("db", "upgrade", env=env).returncode == 0
    database_url = f"sqlite:///{(tmp_path / 'data' / 'provisioning.db').resolve()}"
    database = get_database(database_url)
    user = new_customer(database)
    paid = paid_graph_subscription(database, user)
    dispose_database(database_url)
    dead = f"http://127.0.0.1:{free_port()}"
    missing_db = make_url(postgres_server).set(database="pp_no_such_database").render_as_string(
        hide_password=False)
    mistakes = [
        ((), {}),
        (("nonsense",), {}),
        (("db", "upgrade"), {"DATABASE_URL": missing_db}),
        (("users", "create", "--email", "not-an-email"), {}),
        (("subscriptions", "create", "--user", "usr_nobody"), {}),
        (("subscriptions", "create", "--user", user.user_id, "--repository", "nope"), {}),
        (("subscriptions", "list", "--status", "bogus"), {}),
        (("subscriptions", "show", "sub_nope"), {}),
        (("subscriptions", "pay", "sub_nope"), {}),
        (("subscriptions", "pay", paid), {}),
        (("subscriptions", "retry", "sub_nope"), {}),
        (("webhooks", "send", "--subscription", paid, "--url", dead), {}),
        (("webhooks", "list", "--limit", "many"), {}),
        (("webhooks", "replay", "evt_nope"), {}),
        (("provision", "graph", "--subscription", "sub_nope"), {}),
        (("provision", "graph", "--subscription", paid, "--via-dagster"), {}),
        (("subgraphs", "create", "--user", "usr_nobody", "--parent", "kg0123456789abcdef",
          "--name", "a"), {}),
        (("subgraphs", "create", "--user", user.user_id, "--parent", "kg0123456789abcdef",
          "--name", "not valid!"), {}),
        (("graphs", "show", "kg_nope"), {}),
        (("graphs", "list", "--status", "bogus"), {}),
        (("graphs", "delete", "kg0123456789abcdef"), {}),
        (("graphs", "backups", "nope"), {}),
        (("graphs", "restore-backup", "kg0123456789abcdef", "bk_x"), {}),
        (("subgraphs", "delete", "--user", user.user_id, "--parent", "kg0123456789abcdef",
          "--name", "a"), {}),
        (("subscriptions", "cancel", "sub_nope"), {}),
        (("hosts", "add", "--tier", "bogus", "--capacity", "3"), {}),
        (("hosts", "add", "--tier", "ladybug-standard", "--capacity", "0"), {}),
        (("hosts", "drain", "no-such-host"), {}),
        (("operations", "watch", "op_x", "--api-key", "k", "--url", dead), {}),
        (("bench", "--runs", "x"), {}),
        (("serve", "--port", "x"), {}),
    ]

    def attempt(mistake: tuple[tuple[str, ...], dict[str, str]]) -> tuple[Any, ...]:
        words, extra = mistake
        return words, cli(*words, env={**env, **extra})

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(attempt, mistakes))
    for words, answer in answers:
        lines = answer.stderr.strip().splitlines()
        assert answer.returncode == 2, (words, answer.returncode, answer.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: "), (words, answer.stderr)
    said = {words: answer.stderr for words, answer in answers}
    assert "no user 'usr_nobody'" in said[("subscriptions", "create", "--user", "usr_nobody")]
    assert "unknown repository 'nope'" in said[
        ("subscriptions", "create", "--user", user.user_id, "--repository", "nope")]
    assert "cannot reach the API" in said[("operations", "watch", "op_x", "--api-key", "k",
                                           "--url", dead)]
    assert "database unavailable" in said[("db", "upgrade")]
    assert "Dagster webserver" in said[("provision", "graph", "--subscription", paid,
                                        "--via-dagster")]


def test_watch_names_a_refused_key_and_an_unknown_operation(tmp_path: Path) -> None:
    env = server_env(tmp_path, PROVISIONING_RESUME_INTERVAL_SECONDS=0)
    with api_process(env, tmp_path / "server.log") as server:
        made = cli("users", "create", "--email", "w@example.com", "--json", env=env)
        key = json.loads(made.stdout)["api_key"]
        refused = cli("operations", "watch", "op_1", "--api-key", "ppk_wrong", "--url",
                      server.url, env=env)
        unknown = cli("operations", "watch", "op_1", "--api-key", key, "--url", server.url,
                      env=env)
    assert refused.returncode == 2 and refused.stderr.startswith("error: api key refused")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "error: no operation 'op_1' for this api key"


def test_every_option_says_what_it_is_for() -> None:
    from provisioning_pipelines.cli import build_parser

    def walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, Any]]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction):
                yield path, action

    undocumented = [f"{path} {action.dest}" for path, action in walk(build_parser(), "")
                    if not action.help]
    assert undocumented == []


def test_a_graphs_life_from_the_command_line(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data"), "PROVISIONING_RETRY_BACKOFF_SECONDS": "0"}

    def run(*words: str) -> subprocess.CompletedProcess[str]:
        answer = cli(*words, env=env)
        assert answer.returncode == 0, (words, answer.stderr)
        return answer

    user = json.loads(run("users", "create", "--email", "ops@example.com", "--json").stdout)
    sub_id = json.loads(run("subscriptions", "create", "--user", user["user_id"], "--plan",
                            "ladybug-large").stdout)["subscription_id"]
    run("subscriptions", "pay", sub_id)
    graph_id = json.loads(run("provision", "graph", "--subscription", sub_id).stdout)[
        "resource_id"]
    assert run("graphs", "list").stdout.split()[:2] == [graph_id, "active"]

    backup_id = json.loads(run("graphs", "backup", graph_id).stdout)["backup_id"]
    assert run("graphs", "backups", graph_id).stdout.split()[0] == backup_id
    restored = json.loads(run("graphs", "restore-backup", graph_id, backup_id).stdout)
    assert (restored["graph_id"], restored["status"]) == (graph_id, "active")
    suspended = json.loads(run("graphs", "delete", graph_id).stdout)
    assert (suspended["status"], suspended["changed"]) == ("suspended", True)
    assert "deleted after" in run("graphs", "list", "--status", "suspended").stdout
    assert json.loads(run("graphs", "restore", graph_id).stdout)["status"] == "active"

    deleted = json.loads(run("graphs", "delete", graph_id, "--now", "--reason", "test").stdout)
    assert deleted["status"] == "deleted" and deleted["final_backup_id"]
    shown = json.loads(run("subscriptions", "show", sub_id).stdout)
    assert shown["status"] == "canceled"  # deleting the graph at once ended its subscription
    again = cli("subscriptions", "cancel", sub_id, env=env)
    assert again.returncode == 2 and "cancelled already" in again.stderr

    unpaid = cli("graphs", "restore-backup", graph_id, backup_id, env=env)
    assert unpaid.returncode == 2 and "--into" not in unpaid.stderr
    assert "into_graph_id" in unpaid.stderr and "new, paid subscription" in unpaid.stderr
    listed = run("graphs", "list").stdout.splitlines()
    assert {line.split()[0]: line.split()[1] for line in listed} == {graph_id: "deleted"}


def test_a_full_tier_queues_and_hosts_add_provisions_the_queue_in_order(
        tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data"), "LOCAL_HOST_CAPACITY": "1"}

    def run(*words: str) -> subprocess.CompletedProcess[str]:
        answer = cli(*words, env=env)
        assert answer.returncode == 0, (words, answer.stderr)
        return answer

    user = json.loads(run("users", "create", "--email", "ops@example.com", "--json").stdout)
    subs = []
    for _ in range(3):
        sub_id = json.loads(run("subscriptions", "create", "--user", user["user_id"]).stdout)[
            "subscription_id"]
        run("subscriptions", "pay", sub_id)
        made = json.loads(run("provision", "graph", "--subscription", sub_id).stdout)
        subs.append((sub_id, made["status"], made.get("queue_position")))
    assert [(status, position) for _, status, position in subs] == [
        ("active", None), ("queued", 1), ("queued", 2)]
    assert "queue ladybug-standard: 2 waiting" in run("hosts", "list").stdout

    added = json.loads(run("hosts", "add", "--tier", "ladybug-standard", "--capacity",
                           "1").stdout)

    assert added["host_id"] == "ladybug-standard-2"
    assert [(p["subscription_id"], p["status"]) for p in added["provisioned"]] == [
        (subs[1][0], "active")]
    assert json.loads(run("subscriptions", "show", subs[2][0]).stdout)["queue_position"] == 1
    listed = run("hosts", "list").stdout
    assert "ladybug-standard-2" in listed and "queue ladybug-standard: 1 waiting" in listed
    run("hosts", "drain", "ladybug-standard-2")
    assert "draining" in run("hosts", "list").stdout


def test_a_cancellation_and_a_restore_from_the_command_line_are_kept_for_billing(
        tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data"), "PROVISIONING_RETRY_BACKOFF_SECONDS": "0"}
    assert cli("db", "upgrade", env=env).returncode == 0
    database = get_database(f"sqlite:///{(tmp_path / 'data' / 'provisioning.db').resolve()}")
    sub_id = paid_graph_subscription(database, new_customer(database), paid=False)
    with database.session() as session:
        webhooks.record_and_apply(session, webhooks.read(json.dumps(billing_event(
            sub_id, customer="cus_1", subscription="sub_in_billing"))))
    graph_id = json.loads(cli("provision", "graph", "--subscription", sub_id, env=env)
                          .stdout)["resource_id"]

    for words in (("subscriptions", "cancel", sub_id), ("graphs", "restore", graph_id)):
        answer = cli(*words, env=env)
        assert answer.returncode == 0, answer.stderr
    with database.session() as session:
        kept = outbox.changes_of(session)
    # STRIPE_API_KEY unset: nothing is sent, both wait in the outbox, in order
    assert [(c["action"], c["status"], c["stripe_subscription_id"], c["actor"])
            for c in reversed(kept)] == [("cancel", "pending", "sub_in_billing", "operator"),
                                         ("reactivate", "pending", "sub_in_billing",
                                          "operator")]
    dispose_database(database.url)
