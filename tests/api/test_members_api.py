"""A graph's members over real HTTP: an admin adds, changes and removes them by email; each
role sees the graph and may do only what it allows; the last admin stays; a subgraph's members
are its parent's; a suspended graph's members cannot change."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

from sqlalchemy import select

from provisioning_pipelines.storage.models import AuditLogEntry
from tests.api.helpers import Api
from tests.api.test_lifecycle_api import active_graph, finished
from tests.factories import new_customer

MEMBER_FIELDS = {"user_id", "email", "role", "added_at"}


def person(api: Api) -> SimpleNamespace:
    """A customer, with the email others add them by."""
    email = f"member-{uuid.uuid4().hex[:10]}@example.com"
    user = new_customer(api.database, email=email)
    return SimpleNamespace(user_id=user.user_id, api_key=user.api_key, email=email)


def test_an_admin_manages_members_and_each_role_may_do_what_it_allows(api: Api) -> None:
    owner, other, stranger = (person(api) for _ in range(3))
    graph_id = active_graph(api, owner.api_key)
    members = f"/v1/graphs/{graph_id}/members"

    with api.client(owner.api_key) as admin, api.client(other.api_key) as member, \
            api.client(stranger.api_key) as outsider:
        listed = admin.get(members).json()
        assert listed["next_cursor"] is None
        assert [(m["user_id"], m["role"]) for m in listed["members"]] == [(owner.user_id,
                                                                           "admin")]
        assert member.get(f"/v1/graphs/{graph_id}").status_code == 404
        assert member.get("/v1/graphs").json()["graphs"] == []

        added = admin.post(members, json={"email": other.email, "role": "reader"})
        assert added.status_code == 201 and set(added.json()) == MEMBER_FIELDS
        assert (added.json()["user_id"], added.json()["role"]) == (other.user_id, "reader")
        changed = admin.post(members, json={"email": other.email.upper(), "role": "writer"})
        assert changed.status_code == 200 and changed.json()["role"] == "writer"

        # A writer sees the graph in both places, with their role, lists its members, and
        # changes nothing.
        assert [(g["graph_id"], g["my_role"]) for g in
                member.get("/v1/graphs").json()["graphs"]] == [(graph_id, "writer")]
        assert member.get(f"/v1/graphs/{graph_id}").json()["my_role"] == "writer"
        assert admin.get(f"/v1/graphs/{graph_id}").json()["my_role"] == "admin"
        assert {m["role"] for m in member.get(members).json()["members"]} == {"admin",
                                                                              "writer"}
        for refused in (member.post(members, json={"email": other.email, "role": "admin"}),
                        member.delete(f"{members}/{owner.user_id}"),
                        member.delete(f"/v1/graphs/{graph_id}"),
                        member.post(f"/v1/graphs/{graph_id}/backups"),
                        member.post(f"/v1/graphs/{graph_id}/subgraphs", json={"name": "mine"})):
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"] == "forbidden"

        # Strangers learn nothing, not even whether an email is a user's.
        for answer in (outsider.get(members),
                       outsider.post(members, json={"email": other.email, "role": "admin"}),
                       outsider.delete(f"{members}/{other.email}")):
            assert answer.status_code == 404 and answer.json()["error"] == "not_found"
        unknown = admin.post(members, json={"email": "nobody@example.com", "role": "reader"})
        assert unknown.status_code == 404 and "nobody@example.com" in unknown.json()["message"]
        assert unknown.json()["field"] == "email"
        bad = admin.post(members, json={"email": other.email, "role": "owner"})
        assert bad.status_code == 422 and bad.json()["field"] == "role"

        # The last admin stays, demoted or removed.
        for refused in (admin.post(members, json={"email": owner.email, "role": "reader"}),
                        admin.delete(f"{members}/{owner.user_id}")):
            assert refused.status_code == 409 and refused.json()["error"] == "last_admin"

        # With a second admin, the first may step down, and loses the graph's life with it.
        assert admin.post(members, json={"email": other.email, "role": "admin"}).status_code \
            == 200
        assert admin.post(members, json={"email": owner.email, "role": "reader"}).status_code \
            == 200
        assert admin.delete(f"/v1/graphs/{graph_id}").status_code == 403
        assert member.delete(f"{members}/{owner.email}").status_code == 204
        assert admin.get(f"/v1/graphs/{graph_id}").status_code == 404
        assert admin.get("/v1/graphs").json()["graphs"] == []
        assert member.delete(f"{members}/{owner.email}").status_code == 404  # gone already

    with api.database.session() as session:
        actions = list(session.scalars(select(AuditLogEntry.action).where(
            AuditLogEntry.subject_id == graph_id, AuditLogEntry.action.like("graph.member%"))
            .order_by(AuditLogEntry.id)))
    assert actions == ["graph.member_added", "graph.member_role_changed",
                       "graph.member_role_changed", "graph.member_role_changed",
                       "graph.member_removed"]


def test_a_subgraphs_members_are_its_parents_and_a_suspended_graphs_stay_put(api: Api
                                                                            ) -> None:
    owner, reader = person(api), person(api)
    graph_id = active_graph(api, owner.api_key)
    members = f"/v1/graphs/{graph_id}/members"
    with api.client(owner.api_key) as admin, api.client(reader.api_key) as member:
        made = admin.post(f"/v1/graphs/{graph_id}/subgraphs", json={"name": "team"})
        assert made.status_code == 202
        assert finished(api, owner.api_key, made.json()["operation_id"])[0] == \
            "operation_completed"
        subgraph = f"{graph_id}_team"
        assert member.get(f"/v1/graphs/{subgraph}").status_code == 404
        assert admin.post(members, json={"email": reader.email, "role": "reader"}) \
            .status_code == 201
        # The parent's member sees the subgraph too; its members are managed on the parent.
        assert member.get(f"/v1/graphs/{subgraph}").status_code == 200
        on_subgraph = admin.get(f"/v1/graphs/{subgraph}/members")
        assert on_subgraph.status_code == 422
        assert f"/v1/graphs/{graph_id}/members" in on_subgraph.json()["message"]
        assert member.get(f"/v1/graphs/{subgraph}/members").status_code == 422
        assert member.delete(f"/v1/graphs/{graph_id}/subgraphs/team").status_code == 403

        suspended = admin.delete(f"/v1/graphs/{graph_id}")
        assert finished(api, owner.api_key, suspended.json()["operation_id"])[0] == \
            "operation_completed"
        refused = admin.post(members, json={"email": reader.email, "role": "writer"})
        assert refused.status_code == 409 and "suspended" in refused.json()["message"]
        assert admin.delete(f"{members}/{reader.user_id}").status_code == 409
        # Its members still see it (and who else is on it) while it is suspended.
        assert member.get(f"/v1/graphs/{graph_id}").json()["status"] == "suspended"
        assert len(member.get(members).json()["members"]) == 2
