"""Members, directly on the services, on SQLite and PostgreSQL: who sees a graph, who changes
it, the last admin under two admins demoting each other at once, a deleted graph's members."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import Forbidden, InvalidRequest, NotFound, ProvisioningError
from provisioning_pipelines.services.graphs import lifecycle, members, restores, roles, views
from provisioning_pipelines.services.graphs import records as graphs
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.models import Graph, GraphUser, User
from tests.conftest import make_resources
from tests.factories import new_customer
from tests.flows.lifecycle_helpers import a_graph


def customer(database: Database) -> tuple[str, str]:
    email = f"svc-{uuid.uuid4().hex[:10]}@example.com"
    return new_customer(database, email=email).user_id, email


def test_roles_decide_who_sees_and_who_changes_a_graph(database: Database,
                                                       resources: dict[str, Any]) -> None:
    owner, _sub, graph_id = a_graph(database, resources)
    writer, writer_email = customer(database)
    stranger, _ = customer(database)
    with database.session() as session:
        member, new = members.put_member(session, graph_id, owner, email=writer_email,
                                         role=roles.WRITER)
        assert new and member["role"] == "writer"
    with database.session() as session:
        graph = graphs.visible_graph(session, graph_id, writer)
        assert roles.role_on(session, graph, writer) == "writer"
        assert [g["graph_id"] for g in views.graphs_of(session, writer)] == [graph_id]
        with pytest.raises(Forbidden):
            lifecycle.managed_graph(session, graph_id, writer)
        with pytest.raises(Forbidden):
            restores.plan_restore(session, user_id=writer, graph_id=graph_id,
                                 backup_id="bk_nonexistent", into_graph_id=None)
        with pytest.raises(NotFound):
            graphs.visible_graph(session, graph_id, stranger)
        assert views.graphs_of(session, stranger) == []
        assert lifecycle.managed_graph(session, graph_id, owner).id == graph_id


def test_two_admins_demoting_each_other_at_once_leave_one(postgres_database: Database,
                                                           graph_dir: Path) -> None:
    """Each change takes the graph's row lock before it checks who asks and counts the
    admins, so the second waits for the first and finds itself no longer an admin."""
    database = postgres_database
    owner, _sub, graph_id = a_graph(database, make_resources(database.url, graph_dir))
    other, other_email = customer(database)
    with database.session() as session:
        members.put_member(session, graph_id, owner, email=other_email, role=roles.ADMIN)
        owner_email = _email_of(session, owner)
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def demote(actor: str, email: str) -> None:
        start.wait()
        try:
            with database.session() as session:
                members.put_member(session, graph_id, actor, email=email, role=roles.READER)
            outcomes.append("demoted")
        except ProvisioningError as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=demote, args=(owner, other_email)),
               threading.Thread(target=demote, args=(other, owner_email))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["demoted", "forbidden"]
    with database.session() as session:
        assert sorted(_roles(session, graph_id)) == ["admin", "reader"]


def test_a_deleted_graphs_members_are_gone_and_a_subgraph_has_none_of_its_own(
        database: Database, resources: dict[str, Any]) -> None:
    owner, _sub, graph_id = a_graph(database, resources)
    with database.session() as session:
        session.get(Graph, graph_id).status = "deleted"  # type: ignore[union-attr]
    with database.session() as session, pytest.raises(NotFound):
        members.members_page(session, graph_id, owner)
    with database.session() as session, pytest.raises(NotFound):
        members.members_page(session, "kg" + "0" * 16, owner)
    with database.session() as session, pytest.raises(NotFound):
        members.members_page(session, "not a graph id", owner)
    with database.session() as session:
        session.get(Graph, graph_id).status = "active"  # type: ignore[union-attr]
        parent = session.get(Graph, graph_id)
        assert parent is not None
        session.add(Graph(id=f"{graph_id}_child", org_id=parent.org_id, owner_user_id=owner,
                          name="child", tier=parent.tier, parent_graph_id=graph_id,
                          subgraph_index=1, host_id=parent.host_id,
                          database_path=parent.database_path + ".child"))
    with database.session() as session, pytest.raises(InvalidRequest) as refused:
        members.members_page(session, f"{graph_id}_child", owner)
    assert f"/v1/graphs/{graph_id}/members" in refused.value.message


def _email_of(session: Session, user_id: str) -> str:
    user = session.get(User, user_id)
    assert user is not None
    return user.email


def _roles(session: Session, graph_id: str) -> list[str]:
    return list(session.scalars(select(GraphUser.role).where(GraphUser.graph_id == graph_id)))
