"""What a browser needs from the API: a session cookie, lists of mine, CORS for named origins
only, and a 204 that stops an ``EventSource`` once it has seen the end."""

from __future__ import annotations

import time
from typing import Any

import httpx
from dagster import DagsterInstance

from provisioning_pipelines.services.access import accounts, sessions
from provisioning_pipelines.services.billing.events import billing_event
from provisioning_pipelines.storage.db import Database
from tests.api.helpers import SESSION_SECRET, Api, make_api, serve
from tests.factories import new_customer, paid_graph_subscription


def pay(api: Api, sub_id: str) -> str:
    event = billing_event(sub_id, event_id=f"evt_{sub_id}")
    return api.deliver(event).json()["operation_id"]


def test_a_session_cookie_signs_a_browser_in_and_out(api: Api) -> None:
    user = new_customer(api.database)
    with httpx.Client(base_url=api.url, headers={"Origin": api.url}) as browser:
        assert browser.get("/v1/session").json() == {"user_id": None, "email": None}
        refused = browser.post("/v1/session", json={"api_key": "ppk_wrong"})
        signed = browser.post("/v1/session", json={"api_key": user.api_key})
        cookie = signed.headers["set-cookie"]
        mine = browser.get("/v1/subscriptions")
        me = browser.get("/v1/session").json()
        token = browser.cookies["pp_session"]
        browser.delete("/v1/session")
        after = browser.get("/v1/subscriptions")
        replayed = browser.get("/v1/subscriptions", headers={"Cookie": f"pp_session={token}"})

    assert refused.status_code == 401 and refused.json()["field"] == "api_key"
    assert signed.status_code == 200 and signed.json()["user_id"] == user.user_id
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert user.api_key not in cookie  # a signed token, never the key
    assert mine.status_code == 200 and me["user_id"] == user.user_id
    assert after.status_code == 401
    assert replayed.status_code == 401  # the token itself ended, not only the cookie


def test_a_forged_or_expired_session_is_refused(api: Api) -> None:
    user = new_customer(api.database)
    identity = accounts.Identity(user_id=user.user_id, email="x@example.com")
    with api.database.session() as session:
        genuine = sessions.sign_in(session, identity, SESSION_SECRET)
        forged = sessions.sign_in(session, identity, "not the server's secret")
        stale = sessions.sign_in(session, identity, SESSION_SECRET, now=time.time() - 86400)
    with httpx.Client(base_url=api.url, cookies={"pp_session": genuine}) as browser:
        assert browser.get("/v1/subscriptions").status_code == 200
    for token in (forged, stale, f"{user.user_id}.99999999999.deadbeef", "garbage"):
        with httpx.Client(base_url=api.url, cookies={"pp_session": token}) as browser:
            assert browser.get("/v1/subscriptions").status_code == 401, token


def test_lists_show_my_subscriptions_graphs_and_operations_only(api: Api) -> None:
    user, other = new_customer(api.database), new_customer(api.database)
    sub_id = paid_graph_subscription(api.database, user, paid=False, plan_name="ladybug-large")
    paid_graph_subscription(api.database, other, paid=False)
    operation_id = pay(api, sub_id)
    api.wait_status(user.api_key, sub_id, "active")
    with api.client(user.api_key) as client:
        subscriptions = client.get("/v1/subscriptions").json()["subscriptions"]
        graphs = client.get("/v1/graphs").json()["graphs"]
        operations = client.get("/v1/operations").json()["operations"]
        one = client.get(f"/v1/graphs/{graphs[0]['graph_id']}")
    with api.client(other.api_key) as client:
        hidden = client.get(f"/v1/graphs/{graphs[0]['graph_id']}")

    assert [s["subscription_id"] for s in subscriptions] == [sub_id]
    assert subscriptions[0]["status"] == "active"
    assert subscriptions[0]["operation_id"] == operation_id
    [graph] = graphs
    assert graph["graph_id"] == subscriptions[0]["resource_id"] and graph["status"] == "active"
    assert graph["tier"] == "ladybug-large" and graph["size_bytes"] > 0
    assert graph["subgraphs"] == [] and graph["host_id"]
    assert one.json() == graph and hidden.status_code == 404
    assert [o["operation_id"] for o in operations] == [operation_id]
    assert operations[0]["status"] == "completed" and operations[0]["kind"] == "graph_provisioning"


def test_after_the_end_a_reconnecting_event_source_gets_204(api: Api) -> None:
    user = new_customer(api.database)
    operation_id = pay(api, paid_graph_subscription(api.database, user, paid=False))
    events = api.events(user.api_key, operation_id)  # the whole stream, to its end
    assert events[-1][1] == "operation_completed"
    with api.client(user.api_key) as client:
        again = client.get(f"/v1/operations/{operation_id}/events",
                           headers={"Last-Event-ID": events[-1][0]})
        earlier = client.get(f"/v1/operations/{operation_id}/events",
                             headers={"Last-Event-ID": events[0][0]})
        garbled = {named: client.get(f"/v1/operations/{operation_id}/events", **how)
                   for named, how in (("Last-Event-ID", {"headers": {"Last-Event-ID": "x"}}),
                                      ("after", {"params": {"after": "x"}}))}
    assert again.status_code == 204
    assert earlier.status_code == 200 and "operation_completed" in earlier.text
    for named, answer in garbled.items():  # the one the client sent is named
        assert (answer.status_code, answer.json()["field"]) == (422, named), answer.text


def test_cors_answers_only_the_origins_it_was_told(
    database: Database, resources: dict[str, Any], dagster_instance: DagsterInstance,
) -> None:
    app, executor = make_api(database, resources, dagster_instance,
                             CORS_ALLOW_ORIGINS="https://console.example.com")
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    with serve(app) as url, httpx.Client(base_url=url) as client:
        allowed = client.options("/v1/subscriptions",
                                 headers={"Origin": "https://console.example.com", **preflight})
        other = client.options("/v1/subscriptions",
                               headers={"Origin": "https://evil.example.net", **preflight})
        simple = client.get("/healthz", headers={"Origin": "https://evil.example.net"})
    executor.close()
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://console.example.com"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in simple.headers


def test_without_configured_origins_there_is_no_cors(api: Api) -> None:
    with httpx.Client(base_url=api.url) as client:
        answer = client.options("/v1/subscriptions", headers={
            "Origin": "https://console.example.com", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in answer.headers
