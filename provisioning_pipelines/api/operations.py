"""``/v1/operations/{id}``: an operation's status, and its events as a Server-Sent Events stream.

Every stream of one operation in this process reads through one shared reader (``Fanout``).
The stream replays after ``Last-Event-ID`` (or ``?after=``; empty means from the start), then
tails live with no gap, sends a keepalive comment while idle, and closes after the terminal event.
A stream the server cannot go on with (the event store went down, the server shuts down) ends
with a ``stream_error`` event and a ``retry:`` hint, never with a cut body: the client reconnects
with the last id it saw and misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from sse_starlette.sse import EventSourceResponse, SendTimeoutError, ServerSentEvent
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provisioning_pipelines import metrics
from provisioning_pipelines.api.context import RETRY_AFTER_SECONDS, ApiContext, guard, logger
from provisioning_pipelines.errors import InvalidRequest, NotFound
from provisioning_pipelines.storage.events import EventStoreUnavailable, Operation, event_id_key

#: Seconds a stream gets to send its final event once the server shuts down.
SHUTDOWN_GRACE_SECONDS = 2.0
#: A client that takes no event for this long is dropped (it reconnects with Last-Event-ID and
#: misses nothing); until then its own socket holds it back, never the other viewers.
SLOW_CLIENT_TIMEOUT_SECONDS = 30.0


def routes(api: ApiContext) -> list[Route]:
    def operation_of(request: Request) -> Operation:
        user = api.user_of(request)
        operation_id = request.path_params["operation_id"]
        operation = api.store.get(operation_id)
        if operation is None or operation.user_id != user.user_id:
            raise NotFound(f"no operation {operation_id!r}", field="operation_id")
        return operation

    def show_operation(request: Request) -> Response:
        return JSONResponse(_view(operation_of(request)))

    def list_operations(request: Request) -> Response:
        user = api.user_of(request)
        return JSONResponse({"operations": [_view(operation, kind=True) for operation in
                                            api.store.operations_of(user.user_id)]})

    async def operation_events(request: Request) -> Response:
        operation = await run_in_threadpool(operation_of, request)
        after = (request.headers.get("last-event-id")
                 or request.query_params.get("after") or None)
        if after is not None:
            try:
                event_id_key(after)
            except ValueError:
                raise InvalidRequest(f"Last-Event-ID: {after[:40]!r} is not an event id",
                                     field="Last-Event-ID") from None
            if operation.is_terminal and not await run_in_threadpool(
                    api.store.events, operation.id, after):
                # The client saw the end already: 204 tells an EventSource to stop retrying.
                return Response(status_code=204)

        shutdown = anyio.Event()

        async def stream() -> AsyncIterator[ServerSentEvent]:
            events = api.fanout.subscribe(operation.id, after, keepalive=api.keepalive_seconds)
            metrics.STREAMS.inc()
            try:
                async for event in until(events, shutdown):
                    if event is None:
                        yield ServerSentEvent(comment="keepalive")
                    else:
                        yield ServerSentEvent(data=_dumps(event.data), event=event.type,
                                              id=event.id)
            except EventStoreUnavailable as exc:
                logger.warning("operation %s: stream ended, event store down (%s)",
                               operation.id, exc)
                yield stream_error("the event store is unavailable; reconnect shortly")
            except ShuttingDown:
                yield stream_error("the server is restarting; reconnect shortly")
            finally:
                metrics.STREAMS.dec()

        return _Stream(stream(), ping=None, shutdown_event=shutdown,
                                   shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
                                   send_timeout=SLOW_CLIENT_TIMEOUT_SECONDS,
                                   headers={"Cache-Control": "no-cache",
                                            "X-Accel-Buffering": "no"})

    return [
        Route("/v1/operations", guard(list_operations)),
        Route("/v1/operations/{operation_id}", guard(show_operation)),
        Route("/v1/operations/{operation_id}/events", guard(operation_events)),
    ]


class _Stream(EventSourceResponse):
    """An SSE response that drops a client taking no event for ``SLOW_CLIENT_TIMEOUT_SECONDS``
    as the ordinary event it is, not as a server error."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except* SendTimeoutError:
            metrics.SLOW_CLIENTS.inc()
            logger.info("dropped an SSE client that took no event for %g s",
                        SLOW_CLIENT_TIMEOUT_SECONDS)


class ShuttingDown(Exception):
    """The server is shutting down: streams end with a final event."""


async def until(events: AsyncIterator[Any], shutdown: anyio.Event) -> AsyncIterator[Any]:
    """The items of ``events`` until ``shutdown`` is set (then ``ShuttingDown``)."""
    stop = asyncio.ensure_future(shutdown.wait())
    try:
        while True:
            following = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({following, stop},
                                         return_when=asyncio.FIRST_COMPLETED)
            if following not in done:
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await following
                raise ShuttingDown
            try:
                item = following.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        stop.cancel()
        await events.aclose()


def _view(operation: Operation, *, kind: bool = False) -> dict[str, Any]:
    view = {"operation_id": operation.id, "status": operation.status,
            "progress": operation.progress, "message": operation.message,
            "result": operation.result, "error": operation.error}
    if kind:
        view.update(kind=operation.kind, created_at=operation.created_at.isoformat())
    return view


def stream_error(message: str) -> ServerSentEvent:
    """The last event of a stream the server cannot go on with: reconnect after ``retry``."""
    return ServerSentEvent(event="stream_error", retry=RETRY_AFTER_SECONDS * 1000,
                           data=_dumps({"error": "unavailable", "message": message}))


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), default=str)
