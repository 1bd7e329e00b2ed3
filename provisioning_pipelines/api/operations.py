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
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import anyio
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from provisioning_pipelines import metrics
from provisioning_pipelines.api import pages
from provisioning_pipelines.api.context import RETRY_AFTER_SECONDS, ApiContext, logger
from provisioning_pipelines.api.models import Page
from provisioning_pipelines.api.spec import Content, Endpoint
from provisioning_pipelines.direct.rebuild import rebuild_lost_operation
from provisioning_pipelines.errors import InvalidRequest, NotFound
from provisioning_pipelines.storage.events import (
    EVENT_TYPES,
    EventStoreUnavailable,
    Operation,
    OperationEvent,
    event_id_key,
    page_key,
)

#: Seconds a stream gets to send its final event once the server shuts down.
SHUTDOWN_GRACE_SECONDS = 2.0
#: A client whose socket takes nothing for this long is dropped (it reconnects with
#: Last-Event-ID and misses nothing); until then only its own stream waits, never the others.
SLOW_CLIENT_TIMEOUT_SECONDS = 30.0


class OperationView(BaseModel):
    """An operation's status: ``pending``, ``running``, then ``completed``, ``failed`` or
    ``cancelled``; ``result`` once completed, ``error`` and ``error_code`` once failed."""

    operation_id: str
    status: str
    progress: int = Field(ge=0, le=100)
    message: str
    result: dict[str, Any] | None
    error: str | None
    error_code: str | None


class OperationSummary(OperationView):
    kind: str = Field(description="graph_provisioning, repository_provisioning, "
                                  "subgraph_creation, suspension, reactivation, graph_deletion, "
                                  "subgraph_deletion, graph_backup, graph_restore, "
                                  "graph_replacement or graph_move")
    created_at: str = Field(json_schema_extra={"format": "date-time"})


class OperationList(BaseModel):
    operations: list[OperationSummary]
    next_cursor: str | None = Field(description="the next page's cursor; null on the last")


#: An event's id as the stream gives it: ``<ms>-<seq>`` (as Redis streams number them).
EVENT_ID = r"^[0-9]{1,15}(-[0-9]{1,15})?$"


class EventsAfter(BaseModel):
    after: str | None = Field(None, pattern=f"^({EVENT_ID[1:-1]})?$",
                              description="replay after this event id (as Last-Event-ID; "
                                          "empty: from the start)")


class LastEventId(BaseModel):
    last_event_id: str | None = Field(None, alias="Last-Event-ID", pattern=EVENT_ID,
                                      description="replay after this event id")


#: Before OpenAPI 3.2 (``itemSchema``), the schema of an event stream describes one event.
EVENT = {"type": "object", "required": ["data"], "properties": {
    "id": {"type": "string", "description": "the event's id: send it as Last-Event-ID"},
    "event": {"type": "string", "enum": [*EVENT_TYPES, "stream_error"]},
    "data": {"type": "string", "contentMediaType": "application/json",
             "description": "the operation's status, progress and message (or the stream's "
                            "error) as JSON"},
    "retry": {"type": "integer", "description": "milliseconds before reconnecting"}}}
EVENT_STREAM = Content("text/event-stream", EVENT, (
    "Server-Sent Events: `id:` (the event id), `event:` (operation_started, "
    "operation_progress, operation_completed, operation_error, operation_cancelled, or "
    "stream_error with a `retry:` hint), `data:` the operation as JSON; a keepalive comment "
    "while idle; the stream ends after the terminal event"))


def endpoints(api: ApiContext) -> list[Endpoint]:
    def operation_of(request: Request) -> Operation:
        user = api.user_of(request)
        operation_id = request.path_params["operation_id"]
        operation = api.store.get(operation_id)
        if operation is None:  # lost by the event store? a provisioning's is rebuilt
            operation = rebuild_lost_operation(api.database, api.store, operation_id,
                                               user.user_id)
        if operation is None or operation.user_id != user.user_id:
            raise NotFound(f"no operation {operation_id!r}", field="operation_id")
        return operation

    def show_operation(request: Request) -> Response:
        return JSONResponse(_view(operation_of(request)))

    def list_operations(request: Request) -> Response:
        user = api.user_of(request)
        page = pages.page_request(request, "operations", timed=False)
        found = api.store.operations_of(user.user_id, limit=page.limit + 1,
                                        before=page.after)
        shown = found[:page.limit]
        next_key = page_key(shown[-1]) if len(found) > page.limit else None
        return JSONResponse(pages.page_answer(
            "operations", [_view(operation, kind=True) for operation in shown], "operations",
            next_key))

    async def operation_events(request: Request) -> Response:
        operation = await run_in_threadpool(operation_of, request)
        header = request.headers.get("last-event-id") or None
        after = header or request.query_params.get("after") or None
        if after is not None:
            try:
                event_id_key(after)
            except ValueError:
                named = "Last-Event-ID" if header else "after"  # the one the client sent
                raise InvalidRequest(f"{named}: {after[:40]!r} is not an event id",
                                     field=named) from None
            if operation.is_terminal and not await run_in_threadpool(
                    api.store.events, operation.id, after):
                # The client saw the end already: 204 tells an EventSource to stop retrying.
                return Response(status_code=204)

        shutdown = anyio.Event()

        async def stream() -> AsyncIterator[ServerSentEvent | bytes]:
            # One task per stream wakes it at shutdown; the events themselves need none.
            stopping = asyncio.create_task(_wake_at(shutdown, api, operation.id))
            metrics.STREAMS.inc()
            ended = False
            try:
                async for event in api.fanout.subscribe(operation.id, after,
                                                        keepalive=api.keepalive_seconds,
                                                        stop=shutdown.is_set):
                    if event is None:
                        yield KEEPALIVE
                    else:
                        ended = event.is_terminal
                        yield encoded(operation.id, event)
                if shutdown.is_set() and not ended:
                    yield stream_error("the server is restarting; reconnect shortly")
            except EventStoreUnavailable as exc:
                logger.warning("operation %s: stream ended, event store down (%s)",
                               operation.id, exc)
                yield stream_error("the event store is unavailable; reconnect shortly")
            finally:
                stopping.cancel()
                metrics.STREAMS.dec()

        return SseStream(stream(), ping=None, shutdown_event=shutdown,
                       shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
                       headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return [
        Endpoint("GET", "/v1/operations", list_operations,
                 "My operations that have not expired, newest first", {200: OperationList},
                 query=Page, tag="operations"),
        Endpoint("GET", "/v1/operations/{operation_id}", show_operation,
                 "An operation's status", {200: OperationView}, tag="operations"),
        Endpoint("GET", "/v1/operations/{operation_id}/events", operation_events,
                 "An operation's events as Server-Sent Events: replayed, then live",
                 {200: EVENT_STREAM, 204: None}, query=EventsAfter, headers=LastEventId,
                 tag="operations", description="A reconnect after the end gets 204, which "
                 "stops an EventSource; an `after` or `Last-Event-ID` that is not an event "
                 "id is a 422."),
    ]


class SseStream(EventSourceResponse):
    """An SSE response that drops a client whose socket has taken nothing for
    ``SLOW_CLIENT_TIMEOUT_SECONDS`` (it reconnects with Last-Event-ID and misses nothing).

    A watchdog per stream looks every half timeout at the send in progress, instead of a timer
    around every send (sse-starlette's ``send_timeout``): with a thousand viewers, that timer
    alone made every event reach the last of them half as fast again.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        sending_since: float | None = None

        async def timed_send(message: Any) -> None:
            nonlocal sending_since
            sending_since = time.monotonic()
            await send(message)
            sending_since = None

        async def watchdog(streaming: anyio.CancelScope) -> None:
            while True:
                await anyio.sleep(SLOW_CLIENT_TIMEOUT_SECONDS / 2)
                since = sending_since
                if since is not None and time.monotonic() - since > SLOW_CLIENT_TIMEOUT_SECONDS:
                    metrics.SLOW_CLIENTS.inc()
                    logger.info("dropped an SSE client that took nothing for %g s",
                                SLOW_CLIENT_TIMEOUT_SECONDS)
                    streaming.cancel()
                    return

        async with anyio.create_task_group() as group:
            group.start_soon(watchdog, group.cancel_scope)
            await super().__call__(scope, receive, timed_send)
            group.cancel_scope.cancel()


async def _wake_at(shutdown: anyio.Event, api: ApiContext, operation_id: str) -> None:
    await shutdown.wait()
    api.fanout.wake(operation_id)


KEEPALIVE = ServerSentEvent(comment="keepalive").encode()
#: Encoded events, shared by every stream of an operation: a thousand viewers, one encoding.
_ENCODED: OrderedDict[tuple[str, str], bytes] = OrderedDict()
_ENCODED_MAX = 10_000


def encoded(operation_id: str, event: OperationEvent) -> bytes:
    """The event as SSE bytes, encoded once per process (a bounded, oldest-out cache)."""
    key = (operation_id, event.id)
    chunk = _ENCODED.get(key)
    if chunk is None:
        chunk = ServerSentEvent(data=_dumps(event.data), event=event.type,
                                id=event.id).encode()
        _ENCODED[key] = chunk
        if len(_ENCODED) > _ENCODED_MAX:
            _ENCODED.popitem(last=False)
    return chunk


def _view(operation: Operation, *, kind: bool = False) -> dict[str, Any]:
    view = {"operation_id": operation.id, "status": operation.status,
            "progress": operation.progress, "message": operation.message,
            "result": operation.result, "error": operation.error,
            "error_code": operation.error_code}
    if kind:
        view.update(kind=operation.kind, created_at=operation.created_at.isoformat())
    return view


def stream_error(message: str) -> ServerSentEvent:
    """The last event of a stream the server cannot go on with: reconnect after ``retry``."""
    return ServerSentEvent(event="stream_error", retry=RETRY_AFTER_SECONDS * 1000,
                           data=_dumps({"error": "unavailable", "message": message}))


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), default=str)
