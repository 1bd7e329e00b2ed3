"""Dagster's side: assets, jobs built from the flows, sensors, resources and the reporter.

``build_definitions`` assembles them from the settings; ``definitions.py`` calls it when Dagster
loads the code location, not when the module is imported.
"""

from __future__ import annotations

from dagster import Definitions

from provisioning_pipelines.orchestration.assets import ASSETS
from provisioning_pipelines.orchestration.jobs import JOBS
from provisioning_pipelines.orchestration.resources import build_resources
from provisioning_pipelines.orchestration.sensors import build_sensors
from provisioning_pipelines.settings import Settings


def build_definitions(settings: Settings) -> Definitions:
    return Definitions(
        assets=ASSETS,
        jobs=list(JOBS.values()),
        sensors=build_sensors(grace_seconds=settings.sensor_grace_seconds,
                              direct_enabled=settings.direct_graph_provisioning_enabled,
                              interval_seconds=settings.sensor_interval_seconds),
        resources=build_resources(settings, env_vars=True),
    )


__all__ = ["build_definitions"]
