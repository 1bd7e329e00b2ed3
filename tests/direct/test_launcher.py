"""With direct provisioning off, the helper launches the Dagster job through a real webserver and
daemon (the production dagster.yaml on dagster-postgres) and mirrors the run into the operation."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioning_pipelines.cli.dev import ROOT, dagster_servers
from provisioning_pipelines.direct import DirectExecutor
from provisioning_pipelines.direct.launcher import GraphQLJobLauncher
from provisioning_pipelines.storage.db import get_database
from provisioning_pipelines.storage.models import Subscription
from tests.conftest import (
    REDIS_URL,
    _truncate_all,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    make_resources,
)
from tests.factories import new_customer, paid_graph_subscription


@pytest.fixture
def production_shape(tmp_path: Path, postgres_app_url: str, redis_prefix: str
                     ) -> Iterator[tuple[dict[str, Any], str]]:
    """Webserver and daemon on the production dagster.yaml, sharing app database and Redis."""
    _truncate_all(postgres_app_url)
    dagster_url = create_postgres_database("pp_dagster_prod")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    graphs = tmp_path / "graphs"
    env = {"DATABASE_URL": postgres_app_url, "GRAPH_DATA_DIR": str(graphs),
           "REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": redis_prefix,
           "DAGSTER_PG_URL": dagster_url}
    resources = make_resources(postgres_app_url, graphs, REDIS_URL=REDIS_URL,
                               REDIS_KEY_PREFIX=redis_prefix,
                               PROVISIONING_RETRY_BACKOFF_SECONDS=30)
    port = free_port()
    try:
        with dagster_servers(home, port=port, env=env) as url:
            yield resources, url
    finally:
        drop_postgres_database(dagster_url)


def test_launched_run_provisions_and_streams_into_the_same_operation(
    production_shape: tuple[dict[str, Any], str],
) -> None:
    resources, url = production_shape
    database = get_database(resources["database"].url)
    executor = DirectExecutor(resources, launcher=GraphQLJobLauncher(url, resources,
                                                                    poll_seconds=0.25))
    user = new_customer(database)
    sub_id = paid_graph_subscription(database, user)

    made = executor.graph(sub_id)

    assert made.result["status"] == "active" and made.result["run_id"]
    with database.session() as session:
        sub = session.get(Subscription, sub_id)
        assert (sub.status, sub.resource_id) == ("active", made.result["resource_id"])
    types = [e.type for e in executor.store.events(made.operation_id)]
    assert types[0] == "operation_started" and types[-1] == "operation_completed"
    assert "operation_progress" in types  # written by the run's own process, through Redis
