"""Edges of the public API a stranger found: a misspelt body field is named, not ignored; a path
or method the API does not have answers JSON; only the one who pays reactivates a graph; a
cursor is one graph's list's, not another's."""

from __future__ import annotations

import uuid

import pytest

from provisioning_pipelines.storage.models import User
from tests.api.helpers import Api
from tests.api.test_app import checkout_event, subscribe_graph
from tests.factories import NewUser, new_customer


def _email(api: Api, user: NewUser) -> str:
    with api.database.session() as session:
        return session.get(User, user.user_id).email


def _graph(api: Api, api_key: str) -> str:
    sub_id = subscribe_graph(api, api_key)
    api.deliver(checkout_event(sub_id))
    return api.wait_status(api_key, sub_id, "active")["resource_id"]


def test_a_misspelt_body_field_is_a_422_naming_it(api: Api) -> None:
    user = new_customer(api.database)
    graph_id = _graph(api, user.api_key)
    with api.client(user.api_key) as client:
        backup = client.post(f"/v1/graphs/{graph_id}/backups").json()["backup_id"]
        asked = {
            f"/v1/graphs/{graph_id}/backups/{backup}/restore": {"into": "kg0"},
            f"/v1/graphs/{graph_id}/subgraphs": {"name": "a", "forkparent": True},
            "/v1/subscriptions": {"resource_type": "repository", "plan_name": "sec-starter",
                                  "graph_name": "x"},
        }
        for path, body in asked.items():
            answer = client.post(path, json=body)
            wrong = next(key for key in body if key not in ("name", "resource_type",
                                                            "plan_name", "api_key"))
            assert answer.status_code == 422, (path, answer.text)
            assert answer.json()["field"] == wrong, (path, answer.json())
            assert "operation_id" not in answer.json()


def test_a_path_or_method_the_api_does_not_have_answers_json(api: Api) -> None:
    with api.client() as client:
        missing = client.get("/v1/nope")
        wrong = client.put("/v1/subscriptions")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"
    assert "GET" in wrong.headers["allow"]


def test_only_the_payer_reactivates_a_graph(api: Api) -> None:
    owner = new_customer(api.database)
    admin = new_customer(api.database, email=f"admin-{uuid.uuid4().hex[:8]}@example.com")
    graph_id = _graph(api, owner.api_key)
    with api.client(owner.api_key) as client:
        added = client.post(f"/v1/graphs/{graph_id}/members",
                            json={"email": _email(api, admin), "role": "admin"})
        assert added.status_code == 201, added.text
        deleted = client.delete(f"/v1/graphs/{graph_id}")
        assert api.events(owner.api_key, deleted.json()["operation_id"])[-1][1] == \
            "operation_completed"
    with api.client(admin.api_key) as client:
        refused = client.post(f"/v1/graphs/{graph_id}/restore")
        assert refused.status_code == 403 and "only its owner" in refused.json()["message"]
        assert client.get(f"/v1/graphs/{graph_id}").json()["status"] == "suspended"
    with api.client(owner.api_key) as client:
        assert client.post(f"/v1/graphs/{graph_id}/restore").status_code == 202


@pytest.mark.parametrize("listed", ["members", "backups"])
def test_a_cursor_of_another_graphs_list_is_refused(api: Api, listed: str) -> None:
    user, other = new_customer(api.database), new_customer(api.database)
    email = _email(api, other)
    first, second = _graph(api, user.api_key), _graph(api, user.api_key)
    with api.client(user.api_key) as client:
        for graph_id in (first, second):
            if listed == "members":
                client.post(f"/v1/graphs/{graph_id}/members",
                            json={"email": email, "role": "reader"})
            else:
                for _ in range(2):
                    taken = client.post(f"/v1/graphs/{graph_id}/backups")
                    api.events(user.api_key, taken.json()["operation_id"])
        page = client.get(f"/v1/graphs/{first}/{listed}", params={"limit": 1}).json()
        assert page["next_cursor"]
        mine = client.get(f"/v1/graphs/{first}/{listed}",
                          params={"limit": 1, "cursor": page["next_cursor"]})
        assert mine.status_code == 200 and len(mine.json()[listed]) == 1
        theirs = client.get(f"/v1/graphs/{second}/{listed}",
                            params={"limit": 1, "cursor": page["next_cursor"]})
    assert theirs.status_code == 422 and theirs.json()["field"] == "cursor"
