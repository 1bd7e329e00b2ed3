"""Dagster's side: assets and their checks, jobs built from the flows, sensors, a schedule,
resources and the reporter.

``build_definitions`` assembles them from the settings; ``definitions.py`` calls it when Dagster
loads the code location, not when the module is imported.
"""

from __future__ import annotations

import warnings

from dagster import BetaWarning, Definitions

from provisioning_pipelines.orchestration.assets import ASSETS
from provisioning_pipelines.orchestration.billing import billing_outbox_sensor
from provisioning_pipelines.orchestration.checks import (
    CHECKS,
    build_run_failure_sensor,
    provisioning_checks_job,
    provisioning_checks_schedule,
)
from provisioning_pipelines.orchestration.jobs import JOBS
from provisioning_pipelines.orchestration.reaper import lifecycle_reaper_sensor
from provisioning_pipelines.orchestration.schedules import SCHEDULES
from provisioning_pipelines.orchestration.sensors import build_sensors
from provisioning_pipelines.runtime.resources import build_resources
from provisioning_pipelines.settings import Settings


def build_definitions(settings: Settings) -> Definitions:
    with warnings.catch_warnings():
        # Dagster 1.13's own sensor decorators pass ``owners=None`` to a beta parameter and warn
        # about it on every load; nothing of ours uses owners.
        warnings.filterwarnings("ignore", category=BetaWarning, message=".*`owners`")
        return _definitions(settings)


def _definitions(settings: Settings) -> Definitions:
    return Definitions(
        assets=ASSETS,
        asset_checks=CHECKS,
        jobs=[*JOBS.values(), provisioning_checks_job],
        schedules=[provisioning_checks_schedule, *SCHEDULES],
        sensors=[*build_sensors(grace_seconds=settings.sensor_grace_seconds,
                                direct_enabled=settings.direct_graph_provisioning_enabled,
                                interval_seconds=settings.sensor_interval_seconds),
                 lifecycle_reaper_sensor(interval_seconds=settings.sensor_interval_seconds,
                                         alert_minutes=settings.unprovisioned_alert_minutes),
                 billing_outbox_sensor(interval_seconds=settings.sensor_interval_seconds),
                 build_run_failure_sensor()],
        resources=build_resources(settings, env_vars=True),
    )


__all__ = ["build_definitions"]
