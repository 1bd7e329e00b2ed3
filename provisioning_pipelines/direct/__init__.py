"""Provisioning without a Dagster run: the direct executor, its launcher, the helper API.

``from provisioning_pipelines import direct`` gives the helper API (``run_graph_provisioning``
and friends, with ``*_sync`` twins) and the executor they run on.
"""

from provisioning_pipelines.direct.executor import (
    DirectExecutor,
    ProvisioningResult,
    build_executor,
)
from provisioning_pipelines.direct.helper_api import (
    configure,
    default_executor,
    run_graph_provisioning,
    run_graph_provisioning_sync,
    run_repository_provisioning,
    run_repository_provisioning_sync,
    run_subgraph_creation,
    run_subgraph_creation_sync,
)

__all__ = [
    "DirectExecutor",
    "ProvisioningResult",
    "build_executor",
    "configure",
    "default_executor",
    "run_graph_provisioning",
    "run_graph_provisioning_sync",
    "run_repository_provisioning",
    "run_repository_provisioning_sync",
    "run_subgraph_creation",
    "run_subgraph_creation_sync",
]
