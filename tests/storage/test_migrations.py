"""The Alembic migrations build exactly the SQL model, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from provisioning_pipelines.storage.db import Database, dispose_database, get_database
from provisioning_pipelines.storage.migrate import alembic_config, schema_problem, upgrade
from provisioning_pipelines.storage.models import Base


def test_migrated_database_matches_the_model(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection),
                                           Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_a_database_migrated_by_a_newer_version_is_named_so(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    upgrade(url)
    database = get_database(url)
    try:
        assert schema_problem(database) is None
        with database.session() as session:
            session.execute(text("UPDATE alembic_version SET version_num = '0099_future'"))
        problem = schema_problem(database)
    finally:
        dispose_database(url)
    assert problem is not None
    assert problem.startswith("database at revision 0099_future, which this version does not "
                              "know")
    assert "db upgrade" not in problem  # upgrading would not help


def test_subgraphs_of_suspended_parents_are_brought_in_line(
        database: Database, resources: dict[str, Any]) -> None:
    """Rows written before a subgraph's status followed its parent's: 0007 fixes them once."""
    from provisioning_pipelines.flows import SUBGRAPH_FLOW, SubgraphConfig
    from tests.flows.helpers import run_direct
    from tests.flows.lifecycle_helpers import a_graph

    user_id, _sub_id, graph_id = a_graph(database, resources)
    child = run_direct(SUBGRAPH_FLOW, SubgraphConfig(user_id=user_id, parent_graph_id=graph_id,
                                                     name="child"), resources).result["graph_id"]
    dispose_database(database.url)
    command.downgrade(alembic_config(database.url), "0006_sessions")
    with database.session() as session:  # as an earlier version left them
        session.execute(text("UPDATE graphs SET status = 'suspended' WHERE id = :id"),
                        {"id": graph_id})

    upgrade(database.url)

    with database.session() as session:
        status = session.execute(text("SELECT status FROM graphs WHERE id = :id"),
                                 {"id": child}).scalar_one()
    assert status == "suspended"


def test_hosts_registered_before_0008_are_local_and_healthy(database: Database) -> None:
    """0008 gives every existing host no url and ``healthy``, and goes back down cleanly."""
    dispose_database(database.url)
    command.downgrade(alembic_config(database.url), "0007_subgraph_status")
    with database.session() as session:
        session.execute(text("INSERT INTO graph_hosts (id, tier, capacity, slots_used, "
                             "data_root, status, created_at) VALUES ('old', "
                             "'ladybug-standard', 3, 1, '/old', 'available', "
                             "CURRENT_TIMESTAMP)"))

    upgrade(database.url)

    with database.session() as session:
        found = session.execute(text("SELECT url, health, last_seen_at, failed_probes "
                                     "FROM graph_hosts WHERE id = 'old'")).one()
    assert tuple(found) == (None, "healthy", None, 0)
