"""The SQL layer: a connection that died idle in the pool is never handed out; several rows in
one round trip."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from provisioning_pipelines.services.access.accounts import NewUser
from provisioning_pipelines.services.capacity import hosts
from provisioning_pipelines.storage import db as db_module
from provisioning_pipelines.storage.db import Database, get_database, insert_all
from provisioning_pipelines.storage.models import (
    CreditPool,
    CreditTransaction,
    Graph,
    GraphUser,
)
from tests.conftest import _admin_engine
from tests.factories import new_customer


@pytest.fixture
def database(postgres_app_url: str) -> Iterator[Database]:
    """A pool of its own, holding one connection once used."""
    database = Database(postgres_app_url)
    yield database
    database.dispose()


def _backend_pid(database: Database) -> int:
    with database.session() as session:
        return int(session.scalar(text("SELECT pg_backend_pid()")))


def _terminate(pid: int) -> None:
    engine = _admin_engine()
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    engine.dispose()


def test_a_connection_killed_while_idle_is_replaced_before_use(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    killed = _backend_pid(database)
    _terminate(killed)
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.0)  # idle long enough

    assert _backend_pid(database) != killed  # no error: a fresh connection


def test_without_the_idle_ping_the_dead_connection_would_reach_the_caller(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: a connection used a moment ago is not pinged, so this is what the ping
    spares a caller after a server restart."""
    killed = _backend_pid(database)
    _terminate(killed)
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 3600.0)

    with pytest.raises(OperationalError):
        _backend_pid(database)
    assert _backend_pid(database) != killed  # the disconnect recycled the pool


# --- several rows in one round trip ---------------------------------------------------------------


def _rows_of_a_new_graph(user: NewUser, graph_id: str, host_id: str) -> list[object]:
    pool = CreditPool(id=f"pool_{graph_id}", owner_type="graph", graph_id=graph_id,
                      plan_name="ladybug-standard", monthly_allocation=5, balance=5)
    return [
        Graph(id=graph_id, org_id=user.org_id, owner_user_id=user.user_id, name="g",
              tier="ladybug-standard", host_id=host_id, database_path=f"/x/{graph_id}.lbug"),
        GraphUser(graph_id=graph_id, user_id=user.user_id, role="admin"),
        pool,
        CreditTransaction(pool_id=pool.id, amount=5, kind="allocation",
                          reference=f"graph:{graph_id}:initial"),
    ]


def test_insert_all_writes_rows_that_refer_to_each_other_with_their_defaults(
        database_url: str) -> None:
    database = get_database(database_url)
    user = new_customer(database)
    with database.session() as session:
        host = hosts.add_host(session, tier="ladybug-standard", capacity=1, data_root=None,
                              graph_data_dir=Path("/x"))
        insert_all(session, _rows_of_a_new_graph(user, "kg0000000000000001", host.id))
    with database.session() as session:
        graph = session.get(Graph, "kg0000000000000001")
        assert graph is not None and graph.status == "active" and graph.tags == []
        assert graph.created_at.tzinfo is not None
        assert session.get(GraphUser, (graph.id, user.user_id)).enabled is True
        pool = session.scalar(select(CreditPool).where(CreditPool.graph_id == graph.id))
        assert (pool.balance, pool.status) == (5, "active")
        assert session.scalar(select(CreditTransaction.amount)
                              .where(CreditTransaction.pool_id == pool.id)) == 5


def test_insert_all_writes_nothing_when_one_row_is_refused(database_url: str) -> None:
    database = get_database(database_url)
    user = new_customer(database)
    rows = _rows_of_a_new_graph(user, "kg0000000000000002", "no-such-host")
    with pytest.raises(IntegrityError), database.session() as session:
        insert_all(session, rows)
    with database.session() as session:
        assert session.get(Graph, "kg0000000000000002") is None
        assert session.scalar(select(CreditPool).where(
            CreditPool.graph_id == "kg0000000000000002")) is None
