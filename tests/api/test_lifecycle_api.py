"""A graph's whole life over real HTTP: list, delete (suspend), restore within the grace, back
up, restore a backup into its graph, delete a subgraph, cancel a subscription; billing events
delivered in every order."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import select

from provisioning_pipelines.storage.ladybug import LadybugEngine
from provisioning_pipelines.storage.models import Graph
from tests.api.helpers import Api
from tests.api.test_app import checkout_event, subscribe_graph
from tests.factories import new_customer

CONTRACT_FIELDS = {"graph_id", "status", "tier", "size_bytes", "host_id", "subgraphs",
                   "created_at"}


def finished(api: Api, api_key: str, operation_id: str) -> tuple[str, dict[str, Any]]:
    """The operation's last event: its type and data."""
    events = api.events(api_key, operation_id)
    return events[-1][1], events[-1][2]


def active_graph(api: Api, api_key: str) -> str:
    sub_id = subscribe_graph(api, api_key)
    api.deliver(checkout_event(sub_id))
    return api.wait_status(api_key, sub_id, "active")["resource_id"]


def test_an_owner_lists_deletes_and_restores_a_graph_within_the_grace(api: Api) -> None:
    user = new_customer(api.database)
    stranger = new_customer(api.database)
    graph_id = active_graph(api, user.api_key)

    with api.client(user.api_key) as client:
        listed = client.get("/v1/graphs").json()["graphs"]
        assert [g["graph_id"] for g in listed] == [graph_id]
        assert set(listed[0]) >= CONTRACT_FIELDS and listed[0]["status"] == "active"
        assert listed[0]["size_bytes"] > 0 and listed[0]["tier"] == "ladybug-large"

        deleted = client.delete(f"/v1/graphs/{graph_id}")
        assert deleted.status_code == 202 and set(deleted.json()) == {"operation_id"}
        kind, data = finished(api, user.api_key, deleted.json()["operation_id"])
        assert kind == "operation_completed" and data["result"]["status"] == "suspended"

        shown = client.get(f"/v1/graphs/{graph_id}").json()
        assert shown["status"] == "suspended" and shown["delete_after"]
        refused = client.post(f"/v1/graphs/{graph_id}/subgraphs", json={"name": "later"})
        assert refused.status_code == 409 and "suspended" in refused.json()["message"]

        restored = client.post(f"/v1/graphs/{graph_id}/restore")
        assert restored.status_code == 202
        kind, data = finished(api, user.api_key, restored.json()["operation_id"])
        assert kind == "operation_completed" and data["result"]["status"] == "active"
        assert client.get(f"/v1/graphs/{graph_id}").json()["status"] == "active"

    with api.client(stranger.api_key) as client:
        for method, path in [("GET", f"/v1/graphs/{graph_id}"),
                             ("DELETE", f"/v1/graphs/{graph_id}"),
                             ("POST", f"/v1/graphs/{graph_id}/restore"),
                             ("GET", f"/v1/graphs/{graph_id}/backups"),
                             ("POST", f"/v1/graphs/{graph_id}/backups"),
                             ("POST", f"/v1/graphs/{graph_id}/backups/bk_x/restore"),
                             ("DELETE", f"/v1/graphs/{graph_id}/subgraphs/child")]:
            answer = client.request(method, path)
            assert answer.status_code == 404, (method, path, answer.text)
        assert client.get("/v1/graphs").json() == {"graphs": [], "next_cursor": None}


def graph_ids(api: Api) -> set[str]:
    with api.database.session() as session:
        return set(session.scalars(select(Graph.id)))


def test_a_backup_restores_into_its_graph_replacing_the_data(api: Api) -> None:
    user = new_customer(api.database)
    graph_id = active_graph(api, user.api_key)
    with api.database.session() as session:
        path = Path(session.get(Graph, graph_id).database_path)
    engine = LadybugEngine()
    engine.execute(path, ["CREATE (:Entity {identifier: 'acme', name: 'Acme'})",
                          "CREATE (:Document {identifier: 'd1', title: 'Report'})"])
    counts = engine.count_rows(path)

    with api.client(user.api_key) as client:
        made = client.post(f"/v1/graphs/{graph_id}/backups")
        assert made.status_code == 202
        kind, data = finished(api, user.api_key, made.json()["operation_id"])
        assert kind == "operation_completed", data
        backups = client.get(f"/v1/graphs/{graph_id}/backups").json()["backups"]
        assert [b["backup_id"] for b in backups] == [made.json()["backup_id"]]
        assert {"backup_id", "created_at", "size_bytes", "checksum"} <= set(backups[0])
        engine.execute(path, ["CREATE (:Entity {identifier: 'later', name: 'Later'})"])
        before = graph_ids(api)

        restore = client.post(f"/v1/graphs/{graph_id}/backups/{backups[0]['backup_id']}"
                              "/restore")
        assert restore.status_code == 202 and restore.json()["graph_id"] == graph_id
        kind, data = finished(api, user.api_key, restore.json()["operation_id"])
        assert kind == "operation_completed", data
        assert data["result"]["graph_id"] == graph_id
        assert client.get(f"/v1/graphs/{graph_id}").json()["status"] == "active"
        assert graph_ids(api) == before
        missing = client.post(f"/v1/graphs/{graph_id}/backups/bk_nothing/restore")
        assert missing.status_code == 404 and missing.json()["field"] == "backup_id"
        wrong = client.post(f"/v1/graphs/{graph_id}/backups/{backups[0]['backup_id']}"
                            "/restore", json={"into_graph_id": 7})
        assert wrong.status_code == 422 and wrong.json()["field"] == "into_graph_id"
    assert engine.count_rows(path) == counts


def test_restores_at_once_make_no_graph_and_a_cancelled_customer_restores_nothing(
        api: Api) -> None:
    """The attack that once made 19 free graphs: one paid graph, one backup, 25 restores at
    once, then a cancellation and more restores."""
    user = new_customer(api.database)
    sub_id = subscribe_graph(api, user.api_key)
    api.deliver(checkout_event(sub_id))
    graph_id = api.wait_status(user.api_key, sub_id, "active")["resource_id"]
    with api.client(user.api_key) as client:
        made = client.post(f"/v1/graphs/{graph_id}/backups")
        assert finished(api, user.api_key, made.json()["operation_id"])[0] == \
            "operation_completed"
        url = f"/v1/graphs/{graph_id}/backups/{made.json()['backup_id']}/restore"
        before = graph_ids(api)

        with ThreadPoolExecutor(25) as pool:
            answers = list(pool.map(lambda _: api.client(user.api_key).post(url), range(25)))

        statuses = Counter(answer.status_code for answer in answers)
        # Admitted (one at a time under the graph's claim), busy (another restore holds the
        # graph: told at once, not as a failed operation) or over the user's limit.
        assert set(statuses) <= {202, 409, 429} and statuses[202] >= 1, statuses
        for answer in answers:
            if answer.status_code == 429:
                assert answer.json()["field"] == "MAX_RESTORES_IN_FLIGHT_PER_USER"
            elif answer.status_code == 409:
                assert "busy" in answer.json()["message"], answer.text
            else:
                assert answer.json()["graph_id"] == graph_id
                finished(api, user.api_key, answer.json()["operation_id"])
        assert graph_ids(api) == before

        cancelled = client.delete(f"/v1/subscriptions/{sub_id}")
        assert finished(api, user.api_key, cancelled.json()["operation_id"])[0] == \
            "operation_completed"
        refused = client.post(url)
        assert refused.status_code == 402, refused.text
        assert refused.json()["field"] == "graph_id"
    assert graph_ids(api) == before


def test_a_user_with_enough_restores_running_is_answered_429_naming_the_limit(
        api: Api) -> None:
    user = new_customer(api.database)
    graph_id = active_graph(api, user.api_key)
    with api.client(user.api_key) as client:
        made = client.post(f"/v1/graphs/{graph_id}/backups")
        assert finished(api, user.api_key, made.json()["operation_id"])[0] == \
            "operation_completed"
        url = f"/v1/graphs/{graph_id}/backups/{made.json()['backup_id']}/restore"
        running = [api.executor.open_operation("graph_restore", user.user_id)
                   for _ in range(2)]  # the default MAX_RESTORES_IN_FLIGHT_PER_USER

        refused = client.post(url)
        assert refused.status_code == 429, refused.text
        assert refused.json()["field"] == "MAX_RESTORES_IN_FLIGHT_PER_USER"
        assert "2 restores" in refused.json()["message"]
        subgraph = client.post(f"/v1/graphs/{graph_id}/subgraphs", json={"name": "ok"})
        assert subgraph.status_code == 202  # another kind has its own limit

        api.executor.store.fail(running[0], "ended")
        assert client.post(url).status_code == 202


def test_a_subgraph_is_deleted_by_an_operation(api: Api) -> None:
    user = new_customer(api.database)
    graph_id = active_graph(api, user.api_key)
    with api.client(user.api_key) as client:
        made = client.post(f"/v1/graphs/{graph_id}/subgraphs", json={"name": "child"})
        assert finished(api, user.api_key, made.json()["operation_id"])[0] == \
            "operation_completed"
        assert len(client.get(f"/v1/graphs/{graph_id}").json()["subgraphs"]) == 1
        for alone in (client.post(f"/v1/graphs/{graph_id}_child/backups"),
                      client.delete(f"/v1/graphs/{graph_id}_child")):
            assert alone.status_code == 404, alone.text  # its life is its parent's
            assert f"backed up, restored and reactivated with its parent '{graph_id}'" in \
                alone.json()["message"]

        gone = client.delete(f"/v1/graphs/{graph_id}/subgraphs/child")
        assert gone.status_code == 202
        kind, data = finished(api, user.api_key, gone.json()["operation_id"])
        assert kind == "operation_completed" and data["result"]["status"] == "deleted"
        assert client.get(f"/v1/graphs/{graph_id}").json()["subgraphs"] == []
        again = client.delete(f"/v1/graphs/{graph_id}/subgraphs/child")
        assert again.status_code == 404 and again.json()["field"] == "name"
        bad = client.delete(f"/v1/graphs/{graph_id}/subgraphs/..%2Fx")
        assert bad.status_code in (404, 422)


def test_cancelling_a_subscription_suspends_its_graph_once(api: Api) -> None:
    user = new_customer(api.database)
    sub_id = subscribe_graph(api, user.api_key)
    api.deliver(checkout_event(sub_id))
    graph_id = api.wait_status(user.api_key, sub_id, "active")["resource_id"]

    with api.client(user.api_key) as client:
        cancelled = client.delete(f"/v1/subscriptions/{sub_id}")
        assert cancelled.status_code == 202
        assert finished(api, user.api_key, cancelled.json()["operation_id"])[0] == \
            "operation_completed"
        assert client.get(f"/v1/subscriptions/{sub_id}").json()["status"] == "canceled"
        assert client.get(f"/v1/graphs/{graph_id}").json()["status"] == "suspended"
        again = client.delete(f"/v1/subscriptions/{sub_id}")
        assert again.status_code == 409 and again.json()["field"] == "subscription_id"


def test_cancelling_before_the_payment_says_cancelled_not_suspended(api: Api) -> None:
    user = new_customer(api.database)
    sub_id = subscribe_graph(api, user.api_key)
    with api.client(user.api_key) as client:
        cancelled = client.delete(f"/v1/subscriptions/{sub_id}")
        kind, data = finished(api, user.api_key, cancelled.json()["operation_id"])
        assert kind == "operation_completed"
        assert (data["result"]["status"], data["result"]["graph_id"]) == ("canceled", None)
        assert client.get(f"/v1/subscriptions/{sub_id}").json()["status"] == "canceled"


def event(kind: str, sub_id: str, created: int, index: int) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"subscription_id": sub_id}}
    if kind == "checkout.session.completed":
        obj["payment_status"] = "paid"
    return {"id": f"evt_{sub_id}_{index}", "type": kind, "created": created,
            "data": {"object": obj}}


def deliver_and_wait(api: Api, api_key: str, body: dict[str, Any]) -> None:
    answer = api.deliver(body)
    assert answer.status_code == 200, answer.text
    operation_id = answer.json()["operation_id"]
    if operation_id:
        kind, data = finished(api, api_key, operation_id)
        assert kind in ("operation_completed", "operation_failed"), data


def graph_usable(api: Api, api_key: str) -> bool:
    with api.client(api_key) as client:
        return any(g["status"] == "active" for g in client.get("/v1/graphs").json()["graphs"])


def test_billing_events_in_every_order_end_the_same_way(api: Api) -> None:
    """Paid, cancelled, paid again: the newest decides, whatever order the three arrive in."""
    now = int(time.time())
    kinds = ["checkout.session.completed", "customer.subscription.deleted",
             "checkout.session.completed"]
    outcomes = set()
    for order in itertools.permutations(range(3)):
        user = new_customer(api.database)
        sub_id = subscribe_graph(api, user.api_key)
        bodies = [event(kind, sub_id, now - 30 + 10 * i, i) for i, kind in enumerate(kinds)]
        for index in [*order, order[0]]:  # and the first one again
            deliver_and_wait(api, user.api_key, bodies[index])
        with api.client(user.api_key) as client:
            status = client.get(f"/v1/subscriptions/{sub_id}").json()["status"]
        outcomes.add((order, status, graph_usable(api, user.api_key)))
    assert {(status, usable) for _, status, usable in outcomes} == {("active", True)}, outcomes


def test_a_deletion_before_the_checkout_never_provisions(api: Api) -> None:
    now = int(time.time())
    user = new_customer(api.database)
    sub_id = subscribe_graph(api, user.api_key)

    deliver_and_wait(api, user.api_key,
                     event("customer.subscription.deleted", sub_id, now - 5, 1))
    late = api.deliver(event("checkout.session.completed", sub_id, now - 10, 0)).json()

    assert late["operation_id"] is None and "older" in late["ignored"]
    with api.client(user.api_key) as client:
        assert client.get(f"/v1/subscriptions/{sub_id}").json()["status"] == "canceled"
        assert client.get("/v1/graphs").json() == {"graphs": [], "next_cursor": None}
