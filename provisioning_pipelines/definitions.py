"""The code location's entry point (``[tool.dagster] module_name``).

Importing this module reads no setting and makes no folder: ``@definitions`` defers building
until Dagster loads the code location, in the environment it runs in.
"""

from dagster import Definitions, definitions

from provisioning_pipelines.orchestration import build_definitions
from provisioning_pipelines.settings import load_settings


@definitions
def defs() -> Definitions:
    return build_definitions(load_settings())
