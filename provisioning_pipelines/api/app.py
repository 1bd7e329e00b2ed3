"""The HTTP API: billing webhooks, subscriptions, subgraphs, operations and their SSE stream.

Paths, fields and status codes are a public contract. Every ``/v1`` path but the webhook needs
``Authorization: Bearer <api key>``; a user sees only their own subscriptions, graphs and
operations, and anyone else's answers 404, exactly like one that does not exist. One module per
resource holds its endpoints; this one assembles them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from dagster import DagsterInstance
from starlette.applications import Starlette

from provisioning_pipelines.api import graphs, health, operations, subscriptions, webhooks
from provisioning_pipelines.api.context import ApiContext
from provisioning_pipelines.direct import DirectExecutor, default_executor
from provisioning_pipelines.settings import Settings, get_settings
from provisioning_pipelines.storage.events import DEFAULT_KEEPALIVE_SECONDS


def create_app(settings: Settings | None = None, executor: DirectExecutor | None = None,
               *, dagster_instance: Callable[[], DagsterInstance] | None = None,
               keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS) -> Starlette:
    api = ApiContext(settings=settings or get_settings(),
                     executor=executor or default_executor(),
                     dagster_instance=dagster_instance or functools.cache(DagsterInstance.get),
                     keepalive_seconds=keepalive_seconds)
    routes = [route for module in (webhooks, subscriptions, graphs, operations, health)
              for route in module.routes(api)]
    return Starlette(routes=routes)
