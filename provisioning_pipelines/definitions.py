"""The code location: assets, jobs, sensors and resources, configured from the settings."""

from dagster import Definitions

from provisioning_pipelines.assets import ASSETS
from provisioning_pipelines.jobs import JOBS
from provisioning_pipelines.resources import build_resources
from provisioning_pipelines.sensors import build_sensors
from provisioning_pipelines.settings import get_settings

settings = get_settings()
settings.resolved_graph_data_dir.mkdir(parents=True, exist_ok=True)

defs = Definitions(
    assets=ASSETS,
    jobs=list(JOBS.values()),
    sensors=build_sensors(grace_seconds=settings.sensor_grace_seconds,
                          direct_enabled=settings.direct_graph_provisioning_enabled,
                          interval_seconds=settings.sensor_interval_seconds),
    resources=build_resources(settings),
)
