"""The SQL pool on PostgreSQL: a connection that died while idle in the pool is never handed out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from provisioning_pipelines.storage import db as db_module
from provisioning_pipelines.storage.db import Database
from tests.conftest import _admin_engine


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
