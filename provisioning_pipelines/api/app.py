"""The HTTP API: billing webhooks, subscriptions, subgraphs, operations and their SSE stream.

Paths, fields and status codes here are a public contract. Every ``/v1`` path but the webhook
needs ``Authorization: Bearer <api key>``; a user sees only their own subscriptions, graphs and
operations, and anyone else's answers 404, exactly like one that does not exist. Services raise
``ProvisioningError``s; they are mapped to status codes once, in ``_error``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from dagster import DagsterInstance
from sqlalchemy.exc import IntegrityError
from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provisioning_pipelines.direct import DirectExecutor, ProvisioningResult, default_executor
from provisioning_pipelines.errors import InvalidRequest, NotFound, ProvisioningError
from provisioning_pipelines.services import accounts, graphs, subscriptions, webhooks
from provisioning_pipelines.settings import Settings, get_settings
from provisioning_pipelines.storage.events import event_id_key
from provisioning_pipelines.storage.models import GraphUser, Subscription, User

logger = logging.getLogger("provisioning_pipelines.api")
KEEPALIVE_SECONDS = 15.0


class Unauthorized(ProvisioningError):
    status_code = 401
    code = "unauthorized"
    retryable = False


def create_app(settings: Settings | None = None, executor: DirectExecutor | None = None,
               *, dagster_instance: Callable[[], DagsterInstance] | None = None,
               keepalive_seconds: float = KEEPALIVE_SECONDS) -> Starlette:
    settings = settings or get_settings()
    executor = executor or default_executor()
    database = executor.resources["database"].get()
    store = executor.store
    background: set[asyncio.Task[Any]] = set()
    instance = dagster_instance or functools.cache(DagsterInstance.get)

    def start(call: Callable[..., ProvisioningResult], *args: Any, **kwargs: Any) -> None:
        """Provision in the background; the outcome lands on the operation."""
        task = asyncio.create_task(executor.run_async(call, *args, **kwargs))
        background.add(task)
        task.add_done_callback(_forget(background))

    def user_of(request: Request) -> User:
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else None
        with database.session() as session:
            user = accounts.authenticate(session, key)
        if user is None:
            raise Unauthorized("Authorization: a valid 'Bearer <api key>' is required")
        return user

    async def billing_webhook(request: Request) -> Response:
        payload = await request.body()
        event = webhooks.verify(payload, request.headers.get("stripe-signature"),
                                settings.billing_webhook_secret)

        def apply() -> tuple[webhooks.Applied, str | None, str | None]:
            with database.session() as session:
                applied = webhooks.record_and_apply(session, event)
                subscription = (session.get(Subscription, applied.subscription_id)
                                if applied.paid else None)
                if subscription is None:
                    return applied, None, None
                return applied, subscription.user_id, subscription.resource_type

        def duplicate() -> bool:
            with database.session() as session:
                return webhooks.is_duplicate(session, event["id"])

        try:
            applied, owner, resource_type = await run_in_threadpool(apply)
        except IntegrityError:
            if not await run_in_threadpool(duplicate):
                raise
            return JSONResponse({"received": True, "duplicate": True, "operation_id": None})
        operation_id = None
        if applied.paid and settings.direct_graph_provisioning_enabled:
            kind = f"{resource_type}_provisioning"
            operation_id = await run_in_threadpool(executor.open_operation, kind, owner)
            call = executor.graph if resource_type == "graph" else executor.repository
            start(call, applied.subscription_id, operation_id=operation_id)
        body: dict[str, Any] = {"received": True, "duplicate": False,
                                "operation_id": operation_id}
        if applied.ignored:
            body["ignored"] = applied.ignored
        return JSONResponse(body)

    async def create_subscription(request: Request) -> Response:
        body = await _json(request)

        def create() -> dict[str, str]:
            user = user_of(request)
            with database.session() as session:
                subscription = subscriptions.request_subscription(session, user.id, body)
                return {"subscription_id": subscription.id, "status": subscription.status}

        return JSONResponse(await run_in_threadpool(create), status_code=201)

    def show_subscription(request: Request) -> Response:
        user = user_of(request)
        subscription_id = request.path_params["subscription_id"]
        with database.session() as session:
            subscription = session.get(Subscription, subscription_id)
            if subscription is None or subscription.user_id != user.id:
                raise NotFound(f"no subscription {subscription_id!r}", field="subscription_id")
            return JSONResponse({
                "subscription_id": subscription.id, "status": subscription.status,
                "resource_type": subscription.resource_type,
                "resource_id": subscription.resource_id, "plan_name": subscription.plan_name,
                "error": subscription.last_error,
            })

    async def create_subgraph(request: Request) -> Response:
        graph_id = request.path_params["graph_id"]
        body = await _json(request)

        def visible() -> User:
            user = user_of(request)
            with database.session() as session:
                if session.get(GraphUser, (graph_id, user.id)) is None:
                    raise NotFound(f"no graph {graph_id!r}", field="graph_id")
            return user

        user = await run_in_threadpool(visible)
        name = graphs.validate_subgraph_name(body.get("name"))
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            raise InvalidRequest("description: expected a string", field="description")
        fork_parent = body.get("fork_parent", False)
        if not isinstance(fork_parent, bool):
            raise InvalidRequest("fork_parent: expected true or false", field="fork_parent")
        operation_id = await run_in_threadpool(executor.open_operation, "subgraph_creation",
                                               user.id)
        start(executor.subgraph, user.id, graph_id, name, description=description,
              fork_parent=fork_parent, operation_id=operation_id)
        return JSONResponse({"operation_id": operation_id}, status_code=202)

    def operation_of(request: Request) -> Any:
        user = user_of(request)
        operation_id = request.path_params["operation_id"]
        operation = store.get(operation_id)
        if operation is None or operation.user_id != user.id:
            raise NotFound(f"no operation {operation_id!r}", field="operation_id")
        return operation

    def show_operation(request: Request) -> Response:
        operation = operation_of(request)
        return JSONResponse({"operation_id": operation.id, "status": operation.status,
                             "progress": operation.progress, "message": operation.message,
                             "result": operation.result, "error": operation.error})

    async def operation_events(request: Request) -> Response:
        operation = await run_in_threadpool(operation_of, request)
        after = request.headers.get("last-event-id") or request.query_params.get("after")
        if after:
            try:
                event_id_key(after)
            except ValueError:
                raise InvalidRequest(f"Last-Event-ID: {after!r} is not an event id",
                                     field="Last-Event-ID") from None

        async def stream() -> AsyncIterator[ServerSentEvent]:
            async for event in store.subscribe(operation.id, after,
                                               keepalive=keepalive_seconds):
                if event is None:
                    yield ServerSentEvent(comment="keepalive")
                else:
                    yield ServerSentEvent(data=_dumps(event.data), event=event.type,
                                          id=event.id)

        return EventSourceResponse(stream(), ping=None,
                                   headers={"Cache-Control": "no-cache",
                                            "X-Accel-Buffering": "no"})

    def healthz(request: Request) -> Response:
        checks = {"database": _check(database.ping)}
        checks["redis"] = (_check(store.ping) if settings.redis_url
                           else {"ok": True, "detail": "in-memory operation store"})
        checks["dagster"] = _check(lambda: instance().get_runs_count() >= 0)
        healthy = all(check["ok"] for check in checks.values())
        return JSONResponse({"ok": healthy, **checks}, status_code=200 if healthy else 503)

    routes = [
        Route("/v1/webhooks/billing", _guard(billing_webhook), methods=["POST"]),
        Route("/v1/subscriptions", _guard(create_subscription), methods=["POST"]),
        Route("/v1/subscriptions/{subscription_id}", _guard(show_subscription)),
        Route("/v1/graphs/{graph_id}/subgraphs", _guard(create_subgraph), methods=["POST"]),
        Route("/v1/operations/{operation_id}", _guard(show_operation)),
        Route("/v1/operations/{operation_id}/events", _guard(operation_events)),
        Route("/healthz", _guard(healthz)),
    ]
    return Starlette(routes=routes)


def _guard(endpoint: Callable[[Request], Awaitable[Response] | Response]
           ) -> Callable[[Request], Awaitable[Response]]:
    """Map service errors to answers once; plain functions run in the thread pool, so SQL and
    Redis calls never block the event loop."""

    async def guarded(request: Request) -> Response:
        try:
            if inspect.iscoroutinefunction(endpoint):
                return await endpoint(request)
            return await run_in_threadpool(endpoint, request)  # type: ignore[arg-type]
        except ProvisioningError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status_code)

    return guarded


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise InvalidRequest("body: not valid JSON", field="body") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body: expected a JSON object", field="body")
    return body


def _check(probe: Callable[[], Any]) -> dict[str, Any]:
    try:
        probe()
        return {"ok": True}
    except Exception as exc:
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), default=str)


def _forget(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("background provisioning ended with an error: %s", task.exception())

    return done
