"""With direct provisioning off, the helper launches the Dagster job through a real webserver and
daemon (the production dagster.yaml on dagster-postgres) and mirrors the run into the operation."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
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


class ProductionShape(NamedTuple):
    resources: dict[str, Any]
    url: str
    home: Path  # DAGSTER_HOME: a folder holding only deploy/dagster.yaml, as deploy/ does
    storage: Path  # DAGSTER_STORAGE_DIR


@pytest.fixture
def production_shape(tmp_path: Path, postgres_app_url: str, redis_prefix: str
                     ) -> Iterator[ProductionShape]:
    """Webserver and daemon on the production dagster.yaml, sharing app database and Redis."""
    _truncate_all(postgres_app_url)
    dagster_url = create_postgres_database("pp_dagster_prod")
    home = tmp_path / "deploy"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    storage = tmp_path / "dagster_storage"
    graphs = tmp_path / "graphs"
    env = {"DATABASE_URL": postgres_app_url, "GRAPH_DATA_DIR": str(graphs),
           "REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": redis_prefix,
           "DAGSTER_PG_URL": dagster_url, "DAGSTER_STORAGE_DIR": str(storage)}
    resources = make_resources(postgres_app_url, graphs, REDIS_URL=REDIS_URL,
                               REDIS_KEY_PREFIX=redis_prefix,
                               PROVISIONING_RETRY_BACKOFF_SECONDS=30)
    port = free_port()
    try:
        with dagster_servers(home, port=port, env=env, log_dir=tmp_path / "logs") as url:
            yield ProductionShape(resources, url, home, storage)
    finally:
        drop_postgres_database(dagster_url)


def test_launched_run_provisions_and_streams_into_the_same_operation(
    production_shape: ProductionShape,
) -> None:
    resources, url, _, _ = production_shape
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


def test_the_production_instance_writes_nothing_beside_its_dagster_yaml(
    production_shape: ProductionShape,
) -> None:
    # deploy/ is in the repository: a run's outputs and compute logs go to DAGSTER_STORAGE_DIR,
    # and neither the UI's first look nor telemetry leaves a file beside dagster.yaml. (The
    # webserver and daemon make two empty folders for telemetry uploads, logs/ and .logs_queue/,
    # in DAGSTER_HOME whatever dagster.yaml says; with telemetry off nothing is put in them.)
    resources, url, home, storage = production_shape
    database = get_database(resources["database"].url)
    executor = DirectExecutor(resources, launcher=GraphQLJobLauncher(url, resources,
                                                                    poll_seconds=0.25))
    sub_id = paid_graph_subscription(database, new_customer(database))

    made = executor.graph(sub_id)
    asked = httpx.post(f"{url}/graphql", json={"query": "{ shouldShowNux }"}, timeout=30)

    assert made.result["status"] == "active"
    assert asked.json()["data"] == {"shouldShowNux": False}
    assert [p.relative_to(home) for p in home.rglob("*") if not p.is_dir()] == [
        Path("dagster.yaml")]
    assert made.result["run_id"] in {p.name for p in storage.iterdir()}  # its compute logs
