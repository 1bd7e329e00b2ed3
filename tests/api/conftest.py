"""The app under uvicorn, on the test's database and resources."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance

from provisioning_pipelines.storage.db import Database
from tests.api.helpers import Api, make_api, serve
from tests.conftest import make_resources


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
