"""The lifecycle flows run by both paths: ``run`` is a Dagster job, then the direct executor."""

from __future__ import annotations

from typing import Any

import pytest
from dagster import DagsterInstance

from tests.flows.host_servers import remote_resources, servers  # noqa: F401  (fixtures)
from tests.flows.lifecycle_helpers import PATHS, Runner


@pytest.fixture(params=PATHS)
def run(request: pytest.FixtureRequest, dagster_instance: DagsterInstance,
        resources: dict[str, Any]) -> Runner:
    return Runner(request.param, dagster_instance, resources)
