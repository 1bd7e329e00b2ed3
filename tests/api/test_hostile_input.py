"""Hostile input at the HTTP edge: every mistake named (4xx), never a 5xx, nothing half-made.

Hand-picked cases first (each one answered 500 once), then hypothesis: thousands of generated
webhook bodies and API requests against the real app under uvicorn.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from provisioning_pipelines.services import webhooks
from provisioning_pipelines.services.billing.events import sign
from provisioning_pipelines.storage.models import Subscription, WebhookEvent
from tests.api.helpers import SECRET, Api
from tests.factories import new_customer, paid_graph_subscription

# --- hand-picked ----------------------------------------------------------------------------


def signed(api: Api, payload: bytes, client: httpx.Client | None = None) -> httpx.Response:
    headers = {"Stripe-Signature": sign(payload, SECRET)}
    if client is not None:  # a client of its own costs ~20 ms (its TLS context)
        return client.post("/v1/webhooks/billing", content=payload, headers=headers)
    with api.client() as own:
        return own.post("/v1/webhooks/billing", content=payload, headers=headers)


@pytest.mark.parametrize("payload", [
    b'{"id": "evt_1", "type": "checkout.session.completed", "data": ["a", "list"]}',
    b'{"id": "evt_2", "type": "checkout.session.completed", "data": "a string"}',
    b'{"id": "evt_3", "type": "x", "created": 1e999, "data": {"object": {}}}',
    b'{"id": "evt_4", "type": "x", "created": NaN, "data": {"object": {}}}',
    b'{"id": "' + b"e" * 129 + b'", "type": "x", "data": {"object": {}}}',
    b'{"id": "evt_6", "type": "' + b"t" * 65 + b'", "data": {"object": {}}}',
    b'{"id": "evt_\\u0000", "type": "x", "data": {"object": {}}}',
    b'{"id": "evt_8", "type": "checkout.session.completed", "data": {"object": '
    b'{"customer": "cus\\u0000", "metadata": {"subscription_id": "sub_x"}}}}',
    b'{"id": "evt_9", "type": "x", "data": {"object": {"v": Infinity}}}',
    b"[" * 50_000 + b"]" * 50_000,
])
def test_a_signed_event_we_cannot_apply_is_answered_200_and_kept(
    api: Api, payload: bytes,
) -> None:
    answer = signed(api, payload)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["received"] is True and body["duplicate"] is False
    with api.database.session() as session:
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 1
    if "ignored" in body:  # the rejected ones say why, and are listed
        with api.database.session() as session:
            kept = webhooks.list_events(session)
        assert kept[0]["reason"] == body["ignored"]


def test_bodies_over_the_limits_are_413(api: Api) -> None:
    user = new_customer(api.database)
    huge = b"x" * (webhooks.MAX_BODY_BYTES + 1)
    with api.client(user.api_key) as client:
        webhook = client.post("/v1/webhooks/billing", content=huge,
                              headers={"Stripe-Signature": sign(huge, SECRET)})
        request = client.post("/v1/subscriptions", content=b"{" + b" " * 1_100_000 + b"}")
    assert webhook.status_code == 413 and webhook.json()["error"] == "payload_too_large"
    assert request.status_code == 413


@pytest.mark.parametrize(("graph", "field"), [
    ({"name": "g", "custom_schema": "CREATE NODE TABLE x"}, "graph.custom_schema"),
    ({"name": "g\x00"}, "graph.name"),
    ({"name": "g", "description": "d" * 2001}, "graph.description"),
    ({"name": "g", "tags": ["t\x00"]}, "graph.tags[0]"),
    ({"name": "g", "entity": {"name": "Acme", "employees": 2**70}}, "graph.entity.employees"),
    ({"name": "g", "entity": {"name": "Acme"}, "custom_schema": {"nodes": []}},
     "graph.custom_schema"),
    ({"name": "g", "schema_extensions": "crm"}, "graph.schema_extensions"),
    ({"name": "g", "entity": {"name": "Acme", "employees": 5}}, "graph.entity.employees"),
    ({"name": "g", "entity": {"name": "Acme", "a b`; DROP": "x"}}, "graph.entity.a b`; DROP"),
    ({"name": "g", "bogus": 1}, "graph.bogus"),
])
def test_a_graph_that_could_not_be_built_is_refused_before_payment(
    api: Api, graph: dict[str, Any], field: str,
) -> None:
    user = new_customer(api.database)
    with api.client(user.api_key) as client:
        answer = client.post("/v1/subscriptions", json={
            "resource_type": "graph", "plan_name": "ladybug-standard", "graph": graph})
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
    with api.database.session() as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 0


def test_a_subscription_carries_only_what_its_kind_takes(api: Api) -> None:
    user = new_customer(api.database)
    with api.client(user.api_key) as client:
        access = client.post("/v1/subscriptions", json={
            "resource_type": "repository", "plan_name": "sec-starter", "graph": {"name": "x"}})
        graph = client.post("/v1/subscriptions", json={
            "resource_type": "graph", "plan_name": "ladybug-standard", "graph": {"name": "x"},
            "repository": "sec"})
    assert (access.status_code, access.json()["field"]) == (422, "graph"), access.text
    assert (graph.status_code, graph.json()["field"]) == (422, "repository"), graph.text
    with api.database.session() as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 0


@pytest.mark.parametrize("raw", [b'{"plan_name": 1e400}', b'{"plan_name": NaN}', b"[1, 2]",
                                 b"not json", b'{"a": ' * 100 + b"1" + b"}" * 100])
def test_bodies_that_are_not_plain_json_objects_are_422(api: Api, raw: bytes) -> None:
    user = new_customer(api.database)
    with api.client(user.api_key) as client:
        answer = client.post("/v1/subscriptions", content=raw)
    assert answer.status_code == 422, answer.text


def test_authentication_comes_before_the_body(api: Api) -> None:
    with api.client("ppk_wrong") as client:
        answer = client.post("/v1/subscriptions", content=b"not json at all")
        subgraph = client.post("/v1/graphs/kg0123456789abcdef/subgraphs", content=b"{")
    assert answer.status_code == 401 and subgraph.status_code == 401


@pytest.mark.parametrize("path", ["/v1/subscriptions/sub_%00", "/v1/subscriptions/" + "s" * 300,
                                  "/v1/operations/op_%00", "/v1/operations/op_%00/events"])
def test_malformed_ids_in_paths_are_404(api: Api, path: str) -> None:
    user = new_customer(api.database)
    with api.client(user.api_key) as client:
        answer = client.get(path)
        posted = client.post("/v1/graphs/kg%00/subgraphs", json={"name": "a"})
    assert answer.status_code == 404, answer.text
    assert posted.status_code == 404


def test_an_empty_cursor_is_no_cursor(api: Api) -> None:
    user = new_customer(api.database)
    operation_id = api.executor.open_operation("graph_provisioning", user.user_id)
    api.executor.store.start(operation_id)
    api.executor.store.complete(operation_id, {"ok": True})
    with api.client(user.api_key) as client:
        plain = client.get(f"/v1/operations/{operation_id}/events").text
        empty = client.get(f"/v1/operations/{operation_id}/events?after=").text
        bad = client.get(f"/v1/operations/{operation_id}/events?after=not-an-id")
    assert "operation_completed" in plain and empty.count("event:") == plain.count("event:")
    assert bad.status_code == 422


def test_the_largest_custom_schema_allowed_is_built(api: Api) -> None:
    user = new_customer(api.database)
    types = ["STRING", "INT64", "DOUBLE", "STRING[]", "BOOLEAN", "DATE", "TIMESTAMP", "BLOB"]
    nodes = [{"name": f"N{i}", "primary_key": "p0",
              "properties": [{"name": f"p{j}", "type": "STRING" if j == 0 else types[j % 8]}
                             for j in range(100)]} for i in range(100)]
    with api.client(user.api_key) as client:
        asked = client.post("/v1/subscriptions", json={
            "resource_type": "graph", "plan_name": "ladybug-standard",
            "graph": {"name": "big", "custom_schema": {"nodes": nodes}}})
    assert asked.status_code == 201, asked.text
    sub_id = asked.json()["subscription_id"]
    event = {"id": f"evt_{sub_id}", "type": "checkout.session.completed",
             "created": int(time.time()),
             "data": {"object": {"payment_status": "paid",
                                 "metadata": {"subscription_id": sub_id}}}}
    assert api.deliver(event).status_code == 200
    done = api.wait_status(user.api_key, sub_id, "active", timeout=120)
    with api.client(user.api_key) as client:
        graph_tables = client.get(f"/v1/subscriptions/{sub_id}").json()
    assert done["resource_id"] == graph_tables["resource_id"]
    with api.database.session() as session:
        row = session.get(Subscription, sub_id)
        assert row is not None and row.attempts == 1  # built on the first try


# --- generated --------------------------------------------------------------------------------

TEXT = st.one_of(st.text(max_size=40), st.sampled_from(["", "\x00", "a\x00b", "x" * 300,
                                                        "sub_", "evt_1", "\u202e", "'; --"]))
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), TEXT,
                   st.floats(allow_nan=True, allow_infinity=True),
                   st.integers(min_value=2**63, max_value=2**80))
JSON = st.recursive(LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=20)
EVENT_TYPES = st.sampled_from([*webhooks.HANDLED, "customer.created", ""])


@st.composite
def event_bodies(draw: st.DrawFn) -> Any:
    """Mostly event-shaped, every part of it possibly wrong."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    obj = draw(st.one_of(st.dictionaries(st.sampled_from(
        ["customer", "subscription", "id", "payment_status", "metadata"]), JSON, max_size=5),
        JSON))
    if isinstance(obj, dict) and draw(st.booleans()):
        obj["metadata"] = {"subscription_id": draw(TEXT)}
    return {"id": draw(st.one_of(TEXT, JSON)), "type": draw(st.one_of(EVENT_TYPES, JSON)),
            "created": draw(st.one_of(st.integers(), st.floats(), st.none(), TEXT)),
            "data": draw(st.one_of(st.fixed_dictionaries({"object": st.just(obj)}), JSON))}


def test_no_signed_webhook_body_gets_a_5xx_and_every_one_is_kept(postgres_api: Api) -> None:
    api, database = postgres_api, postgres_api.database
    answered: dict[int, int] = {}
    client = api.client()

    @settings(max_examples=3000, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(body=event_bodies())
    def deliver(body: Any) -> None:
        payload = json.dumps(body, allow_nan=True).encode()
        answer = signed(api, payload, client)
        answered[answer.status_code] = answered.get(answer.status_code, 0) + 1
        assert answer.status_code < 500, (answer.status_code, answer.text, payload[:300])
        assert answer.status_code in (200, 400), answer.text
        if answer.status_code == 200 and not answer.json()["duplicate"]:
            with database.session() as session:  # kept: applied, ignored or rejected
                delivery = webhooks.read(payload.decode())
                assert webhooks.is_duplicate(session, delivery.event_id)

    deliver()
    client.close()
    assert answered.get(200, 0) > 100  # most were read, not refused


ROUTES = [("POST", "/v1/subscriptions"), ("GET", "/v1/subscriptions/{id}"),
          ("DELETE", "/v1/subscriptions/{id}"),
          ("POST", "/v1/graphs/{id}/subgraphs"), ("GET", "/v1/operations/{id}"),
          ("GET", "/v1/operations/{id}/events"), ("GET", "/healthz"),
          ("GET", "/v1/graphs/{id}"), ("DELETE", "/v1/graphs/{id}"),
          ("POST", "/v1/graphs/{id}/restore"), ("GET", "/v1/graphs/{id}/backups"),
          ("POST", "/v1/graphs/{id}/backups"), ("POST", "/v1/graphs/{id}/backups/{id}/restore"),
          ("DELETE", "/v1/graphs/{id}/subgraphs/{id}"),
          # the caller's own graph, with the rest of the path generated
          ("POST", "/v1/graphs/{graph}/backups/{id}/restore"),
          ("DELETE", "/v1/graphs/{graph}/subgraphs/{id}"),
          ("POST", "/v1/graphs/{graph}/subgraphs"), ("GET", "/v1/graphs/{graph}/backups")]


def test_no_api_request_gets_a_5xx(postgres_api: Api) -> None:
    api = postgres_api
    user = new_customer(api.database)
    clients = {True: api.client(user.api_key), False: api.client()}
    sub_id = paid_graph_subscription(api.database, user, plan_name="ladybug-large")
    graph_id = api.executor.graph(sub_id).result["graph_id"]

    @settings(max_examples=3000, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(route=st.sampled_from(ROUTES), ident=TEXT, body=st.one_of(JSON, st.fixed_dictionaries(
        {"resource_type": st.sampled_from(["graph", "repository", 1]),
         "plan_name": st.one_of(TEXT, st.sampled_from(["ladybug-standard", "sec-starter"])),
         "graph": JSON, "repository": JSON, "name": TEXT, "description": JSON,
         "fork_parent": JSON})), authed=st.booleans(), query=st.sampled_from(["", "?after=",
                                                                            "?after=1-0"]))
    def request(route: tuple[str, str], ident: str, body: Any, authed: bool,
                query: str) -> None:
        method, template = route
        path = template.replace("{graph}", graph_id).replace("{id}", quote(ident, safe=""))
        answer = clients[authed].request(method, path + query, timeout=30,
                                         content=json.dumps(body, allow_nan=True).encode())
        assert answer.status_code < 500, (method, path, answer.status_code, answer.text)
        if not authed and path.startswith("/v1"):
            assert answer.status_code in (307, 401, 404, 405), answer.text

    request()
    for client in clients.values():
        client.close()
