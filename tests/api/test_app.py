"""The HTTP API over real HTTP: the app under uvicorn on a loopback port, httpx as the client."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance
from sqlalchemy import func, select

from provisioning_pipelines.services.billing.events import billing_event
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.ladybug import LadybugEngine
from provisioning_pipelines.storage.models import Graph, Subscription, WebhookEvent
from tests.api.helpers import SECRET, Api, make_api, serve
from tests.factories import graph_request, new_customer


def checkout_event(subscription_id: str, *, event_id: str | None = None,
                   paid: bool = True) -> dict[str, Any]:
    return billing_event(subscription_id, event_id=event_id or f"evt_{subscription_id}",
                         paid=paid, id=f"cs_{subscription_id}", customer="cus_stripe_1",
                         subscription=f"stripe_{subscription_id}")


def subscribe_graph(api: Api, api_key: str, **graph: Any) -> str:
    with api.client(api_key) as client:
        answer = client.post("/v1/subscriptions", json={
            "resource_type": "graph", "plan_name": "ladybug-large",
            "graph": graph_request(**graph)})
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "pending_payment"
    return answer.json()["subscription_id"]


def test_paid_checkout_provisions_the_graph_and_streams_it(api: Api) -> None:
    user = new_customer(api.database)
    sub_id = subscribe_graph(api, user.api_key, schema_extensions=["accounting"])

    answer = api.deliver(checkout_event(sub_id))

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["received"] is True and body["duplicate"] is False and body["operation_id"]
    status = api.wait_status(user.api_key, sub_id, "active")
    assert status["resource_type"] == "graph" and status["error"] is None
    with api.database.session() as session:
        graph = session.get(Graph, status["resource_id"])
        sub = session.get(Subscription, sub_id)
        assert sub.stripe_customer_id == "cus_stripe_1"
    tables = {t.name for t in LadybugEngine().list_tables(Path(graph.database_path))}
    assert {"Entity", "Account", "JournalEntry"} <= tables
    events = api.events(user.api_key, body["operation_id"])
    types = [t for _, t, _ in events]
    assert types[0] == "operation_started" and types[-1] == "operation_completed"
    assert "operation_progress" in types
    assert events[-1][2]["result"]["graph_id"] == status["resource_id"]
    with api.client(user.api_key) as client:
        operation = client.get(f"/v1/operations/{body['operation_id']}").json()
    assert (operation["status"], operation["progress"]) == ("completed", 100)


def test_paid_checkout_for_a_repository_grants_access(api: Api) -> None:
    user = new_customer(api.database)
    with api.client(user.api_key) as client:
        made = client.post("/v1/subscriptions", json={
            "resource_type": "repository", "plan_name": "sec-starter", "repository": "sec"})
    sub_id = made.json()["subscription_id"]
    body = api.deliver(checkout_event(sub_id)).json()
    status = api.wait_status(user.api_key, sub_id, "active")
    assert status["resource_id"] == "sec"
    assert [t for _, t, _ in api.events(user.api_key, body["operation_id"])][-1] == \
        "operation_completed"


def test_ten_concurrent_deliveries_make_one_graph(api: Api) -> None:
    user = new_customer(api.database)
    sub_id = subscribe_graph(api, user.api_key)
    event = checkout_event(sub_id)

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: api.deliver(event), range(10)))

    assert [a.status_code for a in answers] == [200] * 10
    bodies = [a.json() for a in answers]
    assert sum(b["duplicate"] for b in bodies) == 9
    api.wait_status(user.api_key, sub_id, "active")
    with api.database.session() as session:
        assert session.scalar(select(func.count()).select_from(Graph)) == 1


@pytest.mark.parametrize("forgery", ["wrong secret", "stale timestamp", "body changed",
                                     "no signature"])
def test_forged_or_stale_delivery_is_refused_and_changes_nothing(api: Api,
                                                                  forgery: str) -> None:
    user = new_customer(api.database)
    sub_id = subscribe_graph(api, user.api_key)
    event = checkout_event(sub_id)
    if forgery == "wrong secret":
        answer = api.deliver(event, secret="whsec_someone_else")
    elif forgery == "stale timestamp":
        answer = api.deliver(event, timestamp=int(time.time()) - 301)
    elif forgery == "body changed":
        tampered = json.dumps({**event, "id": "evt_other"}).encode()
        answer = api.deliver(event, body=tampered)
    else:
        with api.client() as client:
            answer = client.post("/v1/webhooks/billing", content=json.dumps(event))

    assert answer.status_code == 400
    assert "Stripe-Signature" in answer.json()["message"]
    with api.database.session() as session:
        assert session.get(Subscription, sub_id).status == "pending_payment"
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 0


def test_reconnect_with_last_event_id_gets_exactly_the_missed_events(api: Api) -> None:
    user = new_customer(api.database)
    sub_id = subscribe_graph(api, user.api_key)
    operation_id = api.deliver(checkout_event(sub_id)).json()["operation_id"]
    api.wait_status(user.api_key, sub_id, "active")
    everything = api.events(user.api_key, operation_id)

    first_two = api.events(user.api_key, operation_id, stop_after=2)
    rest = api.events(user.api_key, operation_id, last_event_id=first_two[-1][0])

    assert first_two == everything[:2]
    assert rest == everything[2:]
    with api.client(user.api_key) as client:
        via_query = client.get(f"/v1/operations/{operation_id}/events",
                               params={"after": first_two[-1][0]})
    assert via_query.text.count("event: ") == len(rest)


def test_other_users_things_look_like_nothing(api: Api) -> None:
    owner = new_customer(api.database)
    stranger = new_customer(api.database)
    sub_id = subscribe_graph(api, owner.api_key)
    operation_id = api.deliver(checkout_event(sub_id)).json()["operation_id"]
    graph_id = api.wait_status(owner.api_key, sub_id, "active")["resource_id"]

    with api.client(stranger.api_key) as client:
        assert client.get(f"/v1/subscriptions/{sub_id}").status_code == 404
        assert client.get(f"/v1/operations/{operation_id}").status_code == 404
        assert client.get(f"/v1/operations/{operation_id}/events").status_code == 404
        assert client.post(f"/v1/graphs/{graph_id}/subgraphs",
                           json={"name": "mine"}).status_code == 404
        assert client.get("/v1/subscriptions/sub_nothing").status_code == 404
    with api.client() as anonymous:
        assert anonymous.get(f"/v1/subscriptions/{sub_id}").status_code == 401
    with api.client("ppk_wrong") as wrong:
        assert wrong.get(f"/v1/subscriptions/{sub_id}").status_code == 401


def test_subgraph_over_http(api: Api) -> None:
    user = new_customer(api.database)
    sub_id = subscribe_graph(api, user.api_key)
    api.deliver(checkout_event(sub_id))
    graph_id = api.wait_status(user.api_key, sub_id, "active")["resource_id"]
    with api.client(user.api_key) as client:
        bad = client.post(f"/v1/graphs/{graph_id}/subgraphs", json={"name": "../x"})
        made = client.post(f"/v1/graphs/{graph_id}/subgraphs",
                           json={"name": "analysis", "fork_parent": True})
    assert bad.status_code == 422 and bad.json()["field"] == "name"
    assert made.status_code == 202
    events = api.events(user.api_key, made.json()["operation_id"])
    assert events[-1][1] == "operation_completed"
    assert events[-1][2]["result"]["graph_id"] == f"{graph_id}_analysis"


def test_a_subgraph_its_parent_cannot_have_is_refused_before_any_operation(api: Api) -> None:
    """Once: 202, then an operation that failed (a standard graph), and 422 where every other
    missing permission is 403 (a reader). Now the refusal is the answer."""
    from provisioning_pipelines.services.graphs import records

    owner = new_customer(api.database)
    with api.client(owner.api_key) as client:
        standard_sub = client.post("/v1/subscriptions", json={
            "resource_type": "graph", "plan_name": "ladybug-standard",
            "graph": graph_request()}).json()["subscription_id"]
    large_sub = subscribe_graph(api, owner.api_key)
    for sub_id in (standard_sub, large_sub):
        api.deliver(checkout_event(sub_id))
    standard = api.wait_status(owner.api_key, standard_sub, "active")["resource_id"]
    large = api.wait_status(owner.api_key, large_sub, "active")["resource_id"]
    reader = new_customer(api.database)
    with api.database.session() as session:
        records.grant_role(session, large, reader.user_id, "read")

    with api.client(owner.api_key) as client:
        before = len(client.get("/v1/operations").json()["operations"])
        refused = client.post(f"/v1/graphs/{standard}/subgraphs", json={"name": "one"})
        assert len(client.get("/v1/operations").json()["operations"]) == before
    with api.client(reader.api_key) as client:
        made = client.post(f"/v1/graphs/{large}/subgraphs", json={"name": "mine"})
        gone = client.delete(f"/v1/graphs/{large}/subgraphs/mine")
        assert client.get("/v1/operations").json()["operations"] == []

    assert refused.status_code == 409 and refused.json()["field"] == "parent_graph_id"
    assert "ladybug-standard allows no subgraphs" in refused.json()["message"]
    assert made.status_code == 403 and "only an admin" in made.json()["message"], made.text
    assert gone.status_code == 403 and gone.json()["field"] == "parent_graph_id", gone.text


def test_invalid_subscription_request_names_the_field(api: Api) -> None:
    user = new_customer(api.database)
    with api.client(user.api_key) as client:
        answer = client.post("/v1/subscriptions", json={
            "resource_type": "graph", "plan_name": "ladybug-standard",
            "graph": {"name": "g", "schema_extensions": ["astrology"]}})
    assert answer.status_code == 422
    assert answer.json()["field"] == "graph.schema_extensions"
    assert "unknown extension 'astrology'" in answer.json()["message"]


def test_healthz_names_each_dependency(api: Api) -> None:
    with api.client() as client:
        answer = client.get("/healthz")
    assert answer.status_code == 200
    assert {"database", "redis", "dagster"} <= set(answer.json())


def test_idle_stream_sends_keepalive_comments(api: Api) -> None:
    user = new_customer(api.database)
    operation_id = api.executor.open_operation("graph_provisioning", user.user_id)
    comments = 0
    started = time.monotonic()
    with api.client(user.api_key) as client, client.stream(
            "GET", f"/v1/operations/{operation_id}/events") as response:
        for line in response.iter_lines():
            comments += line.startswith(":")
            if comments == 3 or time.monotonic() - started > 5:
                break
    assert comments == 3


def test_webhook_racing_a_dagster_run_makes_one_graph(
    api: Api, database_url: str, dagster_instance: DagsterInstance, graph_dir: Path
) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tests.flows.test_graph import _launch_in_another_process

    user = new_customer(api.database)
    sub_id = subscribe_graph(api, user.api_key)
    with api.database.session() as session:  # paid already, as if an operator saw it first
        from provisioning_pipelines.services.billing import subscriptions as billing

        billing.mark_paid(session, sub_id)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        launched = pool.submit(_launch_in_another_process, dagster_instance.get_ref(),
                               database_url, str(graph_dir), sub_id)
        api.executor.graph(sub_id)
        success, error = launched.result()
    assert success or "being provisioned by another worker" in error
    with api.database.session() as session:
        assert session.scalar(select(func.count()).select_from(Graph)) == 1


def test_operations_watch_exits_0_on_completed_and_1_on_failed(api: Api) -> None:
    import os
    import subprocess
    import sys

    user = new_customer(api.database)
    sub_id = subscribe_graph(api, user.api_key)
    done = api.deliver(checkout_event(sub_id)).json()["operation_id"]
    failed = api.executor.open_operation("graph_provisioning", user.user_id)
    api.executor.store.fail(failed, "disk full")
    cli = str(Path(sys.executable).parent / "provisioning-pipelines")

    def watch(operation_id: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([cli, "operations", "watch", operation_id, "--url", api.url,
                               "--api-key", user.api_key], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "COLUMNS": "120"})

    completed = watch(done)
    assert completed.returncode == 0, completed.stderr
    assert "100%" in completed.stdout and '"resource_id": "kg' in completed.stdout
    broken = watch(failed)
    assert broken.returncode == 1
    assert "failed: disk full" in broken.stderr


def test_with_direct_off_the_webhook_leaves_the_work_to_the_sensor(
    database: Database, database_url: str, resources: dict[str, Any],
    dagster_instance: DagsterInstance,
) -> None:
    from tests.orchestration.test_sensors import evaluate, requests

    app, executor = make_api(database, resources, dagster_instance, direct=False)
    with serve(app) as url:
        api = Api(url, database, executor)
        user = new_customer(database)
        sub_id = subscribe_graph(api, user.api_key)
        body = api.deliver(checkout_event(sub_id)).json()
        status = api.client(user.api_key).get(f"/v1/subscriptions/{sub_id}").json()["status"]
    executor.close()
    assert body == {"received": True, "duplicate": False, "operation_id": None}
    assert status == "provisioning"
    [request] = requests(evaluate(database_url, direct_enabled=False))
    assert request.run_key == f"{sub_id}:attempt:1"


def test_cli_webhook_send_signs_and_delivers(api: Api) -> None:
    import os
    import subprocess
    import sys

    user = new_customer(api.database)
    sub_id = subscribe_graph(api, user.api_key)
    cli = str(Path(sys.executable).parent / "provisioning-pipelines")
    sent = subprocess.run([cli, "webhook", "send", "--subscription", sub_id, "--url", api.url],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "BILLING_WEBHOOK_SECRET": SECRET})
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["duplicate"] is False
    api.wait_status(user.api_key, sub_id, "active")
