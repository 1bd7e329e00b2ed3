"""The app under uvicorn, on the test's database and resources."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance
from sqlalchemy.engine import make_url

from provisioning_pipelines.storage.db import Database, dispose_database, get_database
from tests.api.helpers import Api, make_api, serve
from tests.conftest import make_resources
from tests.tcp_proxy import TcpProxy


@pytest.fixture
def api(database: Database, resources: dict[str, Any], dagster_instance: DagsterInstance
        ) -> Iterator[Api]:
    app, executor = make_api(database, resources, dagster_instance)
    with serve(app) as url:
        yield Api(url, database, executor)
    executor.close()


@pytest.fixture
def postgres_api(postgres_database: Database, graph_dir: Path,
                 dagster_instance: DagsterInstance) -> Iterator[Api]:
    """The app on PostgreSQL only: for generated input, where the stricter store matters."""
    resources = make_resources(postgres_database.url, graph_dir)
    app, executor = make_api(postgres_database, resources, dagster_instance)
    with serve(app) as url:
        yield Api(url, postgres_database, executor)
    executor.close()


@pytest.fixture
def cut_off_database(postgres_app_url: str, postgres_database: Database
                     ) -> Iterator[tuple[Database, TcpProxy]]:
    """The session's PostgreSQL database, reached through a proxy the test can cut."""
    target = make_url(postgres_app_url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432)
    proxy.start()
    url = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        yield get_database(url), proxy
    finally:
        proxy.stop()
        dispose_database(url)
