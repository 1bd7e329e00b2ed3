"""Every list in pages over real HTTP: 250 items walked a few at a time lose and repeat none,
also while new ones are made between pages; any limit and any cursor is a page or a 422 naming
it, never a 500."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioning_pipelines.services import requests as subscriptions
from provisioning_pipelines.storage.models import GraphUser, User, utcnow
from tests.api.helpers import Api
from tests.api.test_lifecycle_api import active_graph
from tests.factories import graph_request, new_customer

LISTS = ("/v1/subscriptions", "/v1/graphs", "/v1/graphs/{graph}/backups", "/v1/operations",
         "/v1/graphs/{graph}/members")


def walk(client: httpx.Client, path: str, key: str, limit: int,
         between: Callable[[], None] = lambda: None) -> list[dict[str, Any]]:
    """Every item of a list, page by page, calling ``between`` after each page."""
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        answer = client.get(path, params={"limit": limit, **({"cursor": cursor} if cursor
                                                             else {})})
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page[key]) <= limit
        seen.extend(page[key])
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
        between()


def new_subscription(api: Api, user_id: str) -> str:
    with api.database.session() as session:
        return subscriptions.request_graph(session, user_id=user_id, plan_name="ladybug-large",
                                           graph=graph_request()).id


def test_250_subscriptions_and_operations_in_pages_while_more_are_made(api: Api) -> None:
    user = new_customer(api.database)
    made = [new_subscription(api, user.user_id) for _ in range(250)]
    operations = [api.executor.store.create("backup", user_id=user.user_id).id
                  for _ in range(250)]
    later: list[str] = []
    with api.client(user.api_key) as client:
        seen = walk(client, "/v1/subscriptions", "subscriptions", 9,
                    lambda: later.append(new_subscription(api, user.user_id)))
        ids = [s["subscription_id"] for s in seen]
        assert sorted(ids) == sorted(made) and len(ids) == 250  # none lost, none repeated
        assert [s["created_at"] for s in seen] == sorted((s["created_at"] for s in seen),
                                                         reverse=True)
        assert later and not set(later) & set(ids)  # newer than the walk: not on the way down
        whole = client.get("/v1/subscriptions", params={"limit": 100}).json()
        assert {s["subscription_id"] for s in whole["subscriptions"][:len(later)]} == set(later)
        assert whole["next_cursor"] is not None

        more_ops: list[str] = []
        seen_ops = walk(client, "/v1/operations", "operations", 13, lambda: more_ops.append(
            api.executor.store.create("backup", user_id=user.user_id).id))
        assert sorted(o["operation_id"] for o in seen_ops) == sorted(operations)
        assert more_ops and not set(more_ops) & {o["operation_id"] for o in seen_ops}


def test_250_members_in_pages_while_more_are_added(api: Api) -> None:
    owner = new_customer(api.database)
    graph_id = active_graph(api, owner.api_key)

    def add(count: int, at: Any) -> list[str]:
        with api.database.session() as session:
            ids = []
            for index in range(count):
                user = User(id=f"usr_{uuid.uuid4().hex[:20]}",
                            email=f"m{uuid.uuid4().hex[:12]}@example.com")
                session.add(user)
                session.flush()
                # Many added in one instant: the id breaks the ties.
                session.add(GraphUser(graph_id=graph_id, user_id=user.id, role="reader",
                                      created_at=at - timedelta(seconds=index // 50)))
                ids.append(user.id)
            return ids

    before = add(249, utcnow() - timedelta(minutes=5))
    added: list[str] = []
    with api.client(owner.api_key) as client:
        seen = walk(client, f"/v1/graphs/{graph_id}/members", "members", 11,
                    lambda: added.extend(add(1, utcnow())))
    ids = [m["user_id"] for m in seen]
    assert sorted(ids) == sorted([owner.user_id, *before]) and len(ids) == 250
    assert added and not set(added) & set(ids)


def test_graphs_and_backups_in_pages(api: Api) -> None:
    user = new_customer(api.database)
    graphs = [active_graph(api, user.api_key) for _ in range(3)]
    with api.client(user.api_key) as client:
        seen = walk(client, "/v1/graphs", "graphs", 1)
        assert [g["graph_id"] for g in seen] == list(reversed(graphs))
        assert all("subgraphs" in g for g in seen)
        assert walk(client, f"/v1/graphs/{graphs[0]}/backups", "backups", 2) == []
        first = client.get("/v1/graphs", params={"limit": 2}).json()
        assert len(first["graphs"]) == 2 and first["next_cursor"]
        # One list's cursor is not another's.
        wrong = client.get("/v1/subscriptions", params={"cursor": first["next_cursor"]})
        assert wrong.status_code == 422 and wrong.json()["field"] == "cursor"


def cursor_of(parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


GARBAGE = st.one_of(
    st.text(max_size=80),
    st.binary(max_size=60).map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
    st.lists(st.one_of(st.none(), st.integers(), st.text(max_size=30), st.floats(),
                       st.booleans()), max_size=4).map(cursor_of),
    st.tuples(st.sampled_from(["subscriptions", "graphs", "backups", "operations", "members"]),
              st.one_of(st.text(max_size=40), st.integers(min_value=-2**70, max_value=2**70),
                        st.datetimes().map(lambda d: d.isoformat())),
              st.text(max_size=210)).map(lambda parts: cursor_of(list(parts))),
)


@pytest.fixture
def seen_lists(postgres_api: Api) -> tuple[Api, httpx.Client, list[str]]:
    user = new_customer(postgres_api.database)
    graph_id = active_graph(postgres_api, user.api_key)
    client = postgres_api.client(user.api_key)
    return postgres_api, client, [path.format(graph=graph_id) for path in LISTS]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.one_of(st.none(), st.integers(min_value=-5, max_value=205),
                       st.text(max_size=8)),
       cursor=st.one_of(st.none(), GARBAGE), which=st.integers(min_value=0, max_value=4))
def test_any_limit_and_any_cursor_is_a_page_or_a_422_naming_it(
        seen_lists: tuple[Api, httpx.Client, list[str]], limit: Any, cursor: str | None,
        which: int) -> None:
    _api, client, paths = seen_lists
    params = {key: value for key, value in (("limit", limit), ("cursor", cursor))
              if value is not None}
    answer = client.get(paths[which], params=params)
    assert answer.status_code in (200, 422), answer.text
    if answer.status_code == 422:
        assert answer.json()["field"] in ("limit", "cursor")
        limit_ok = limit is None or (isinstance(limit, int) and 1 <= limit <= 100) or (
            isinstance(limit, str) and limit.isascii() and limit.isdigit()
            and 1 <= int(limit) <= 100)
        assert answer.json()["field"] == "cursor" or not limit_ok
    else:
        assert "next_cursor" in answer.json()
