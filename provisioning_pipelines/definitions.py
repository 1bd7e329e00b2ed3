"""The code location: assets, jobs and resources (sensors join them in a later change)."""

from dagster import Definitions

from provisioning_pipelines.assets import ASSETS
from provisioning_pipelines.jobs import JOBS
from provisioning_pipelines.resources import build_resources
from provisioning_pipelines.settings import get_settings

settings = get_settings()
settings.resolved_graph_data_dir.mkdir(parents=True, exist_ok=True)

defs = Definitions(
    assets=ASSETS,
    jobs=list(JOBS.values()),
    resources=build_resources(settings),
)
