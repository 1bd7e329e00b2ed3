"""The Alembic migrations build exactly the SQL model, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from provisioning_pipelines.storage.db import dispose_database, get_database
from provisioning_pipelines.storage.migrate import schema_problem, upgrade
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
