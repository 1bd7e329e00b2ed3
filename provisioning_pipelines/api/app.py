"""The HTTP API: billing webhooks, subscriptions, graphs and their lifecycle, operations and
their SSE stream.

Paths, fields and status codes are a public contract. Every ``/v1`` path but the webhook needs
``Authorization: Bearer <api key>``; a user sees only their own subscriptions, graphs and
operations, and anyone else's answers 404, exactly like one that does not exist. One module per
resource holds its endpoints; this one assembles them.

While the app runs, it heals what crashed (``direct/recovery.py``: lapsed claims resumed, stray
files swept) and tells the billing system of cancellations and reactivations decided here. On
shutdown (SIGTERM), open streams end with a final event, in-flight provisionings get
``SHUTDOWN_GRACE_SECONDS`` to finish, and the claims of those that did not are given back at
once, so another worker continues them without waiting for a lease to lapse.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from dagster import DagsterInstance
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from provisioning_pipelines.api import (
    backups,
    graphs,
    health,
    members,
    metrics,
    openapi,
    operations,
    page,
    queries,
    session,
    spec,
    subscriptions,
    webhooks,
)
from provisioning_pipelines.api.context import ApiContext
from provisioning_pipelines.direct import DirectExecutor, default_executor
from provisioning_pipelines.direct.provisioner import work_queue
from provisioning_pipelines.direct.recovery import Recovery
from provisioning_pipelines.settings import Settings, get_settings
from provisioning_pipelines.storage.events import DEFAULT_KEEPALIVE_SECONDS


async def _no_route(request: Request, exc: Exception) -> Response:
    """A path or method the API does not have answers in the API's error shape, as every
    other error does."""
    status = getattr(exc, "status_code", 404)
    code, what = ("method_not_allowed", f"{request.method} is not allowed on") \
        if status == 405 else ("not_found", "no route")
    headers = getattr(exc, "headers", None)
    return JSONResponse({"error": code, "message": f"{what} {request.url.path[:200]}",
                         "field": None}, status_code=status, headers=headers)


def create_app(settings: Settings | None = None, executor: DirectExecutor | None = None,
               *, dagster_instance: Callable[[], DagsterInstance] | None = None,
               keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS) -> Starlette:
    settings = settings or get_settings()
    settings.check_serving()  # no development secrets outside the embedded default
    api = ApiContext(settings=settings, executor=executor or default_executor(),
                     dagster_instance=dagster_instance or functools.cache(DagsterInstance.get),
                     keepalive_seconds=keepalive_seconds,
                     work=work_queue(settings) if settings.provisioning_processes else None)
    direct_on = settings.direct_graph_provisioning_enabled
    # A payment nobody claimed within one lease is resumed: a live direct path claims within
    # milliseconds, so waiting longer (as the sensors' grace does) only delays a crash's victims.
    recovery = Recovery(api.executor,
                        interval=settings.resume_interval_seconds if direct_on else 0,
                        grace_seconds=settings.claim_lease_seconds,
                        sweep_interval=settings.housekeeping_interval_seconds,
                        stray_age_seconds=settings.housekeeping_stray_age_seconds,
                        billing_interval=settings.billing_outbox_interval_seconds,
                        webhook_retention_days=settings.webhook_retention_days,
                        probe_interval=settings.graph_host_probe_seconds,
                        probe_misses=settings.graph_host_probe_misses,
                        host_token=settings.graph_host_token)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        recovery.start()
        yield
        await recovery.stop()
        await api.drain(settings.shutdown_grace_seconds)
        await api.fanout.aclose()

    modules = (webhooks, session, subscriptions, graphs, queries, backups, members, operations,
               health, metrics)
    endpoints = [endpoint for module in modules for endpoint in module.endpoints(api)]
    endpoints += openapi.docs_endpoints(api, endpoints)
    # Every API route is declared (api/spec.py) and so in /openapi.json; the HTML pages are not.
    routes = [*spec.routes(endpoints), *page.routes(api), *openapi.docs_routes()]
    middleware = []
    if settings.cors_origins:  # only origins named in CORS_ALLOW_ORIGINS, with their cookies
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=True,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID",
                           "Idempotency-Key"], max_age=600))
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware,
                    exception_handlers={404: _no_route, 405: _no_route})
    app.state.api = api
    app.state.endpoints = endpoints
    app.state.recovery = recovery
    return app
