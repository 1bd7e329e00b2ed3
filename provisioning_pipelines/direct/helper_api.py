"""The helper API: provisioning from an API process or a script, in-process.

The async functions run the work on the process-wide executor's thread pool, so an event loop
never blocks on SQL or file work; each has a ``*_sync`` twin for scripts. Each returns a
``ProvisioningResult`` (``operation_id``, ``result``) and raises a ``ProvisioningError`` subclass
whose message names the field at fault.
"""

from __future__ import annotations

import atexit
import threading

from provisioning_pipelines.direct.executor import (
    DirectExecutor,
    ProvisioningResult,
    build_executor,
)
from provisioning_pipelines.settings import get_settings

_default: DirectExecutor | None = None
_default_lock = threading.Lock()


def default_executor() -> DirectExecutor:
    """The process-wide executor, built from the settings on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = build_executor(get_settings())
            atexit.register(_default.close)
        return _default


def configure(executor: DirectExecutor | None) -> DirectExecutor | None:
    """Replace the process-wide executor (tests, or an app with its own resources)."""
    global _default
    with _default_lock:
        previous, _default = _default, executor
    return previous


async def run_graph_provisioning(subscription_id: str, *,
                                 operation_id: str | None = None) -> ProvisioningResult:
    """Provision a paid graph subscription; returns the operation id and the graph."""
    executor = default_executor()
    return await executor.run_async(executor.graph, subscription_id, operation_id=operation_id)


async def run_repository_provisioning(subscription_id: str, *,
                                      operation_id: str | None = None) -> ProvisioningResult:
    """Provision a paid repository subscription: access and the plan's credits."""
    executor = default_executor()
    return await executor.run_async(executor.repository, subscription_id,
                                    operation_id=operation_id)


async def run_subgraph_creation(user_id: str, parent_graph_id: str, name: str, *,
                                description: str | None = None, fork_parent: bool = False,
                                operation_id: str | None = None) -> ProvisioningResult:
    """Create a subgraph of a graph the user administers, optionally forking its data."""
    executor = default_executor()
    return await executor.run_async(executor.subgraph, user_id, parent_graph_id, name,
                                    description=description, fork_parent=fork_parent,
                                    operation_id=operation_id)


def run_graph_provisioning_sync(subscription_id: str, *,
                                operation_id: str | None = None) -> ProvisioningResult:
    return default_executor().graph(subscription_id, operation_id=operation_id)


def run_repository_provisioning_sync(subscription_id: str, *,
                                     operation_id: str | None = None) -> ProvisioningResult:
    return default_executor().repository(subscription_id, operation_id=operation_id)


def run_subgraph_creation_sync(user_id: str, parent_graph_id: str, name: str, *,
                               description: str | None = None, fork_parent: bool = False,
                               operation_id: str | None = None) -> ProvisioningResult:
    return default_executor().subgraph(user_id, parent_graph_id, name, description=description,
                                       fork_parent=fork_parent, operation_id=operation_id)
