"""``/v1/operations/{id}``: an operation's status, and its events as a Server-Sent Events stream.

The stream replays after ``Last-Event-ID`` (or ``?after=``), then tails live with no gap, sends a
keepalive comment while idle, and closes after the terminal event.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provisioning_pipelines.api.context import ApiContext, guard
from provisioning_pipelines.errors import InvalidRequest, NotFound
from provisioning_pipelines.storage.events import Operation, event_id_key


def routes(api: ApiContext) -> list[Route]:
    def operation_of(request: Request) -> Operation:
        user = api.user_of(request)
        operation_id = request.path_params["operation_id"]
        operation = api.store.get(operation_id)
        if operation is None or operation.user_id != user.user_id:
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
            async for event in api.store.subscribe(operation.id, after,
                                                   keepalive=api.keepalive_seconds):
                if event is None:
                    yield ServerSentEvent(comment="keepalive")
                else:
                    yield ServerSentEvent(data=_dumps(event.data), event=event.type,
                                          id=event.id)

        return EventSourceResponse(stream(), ping=None,
                                   headers={"Cache-Control": "no-cache",
                                            "X-Accel-Buffering": "no"})

    return [
        Route("/v1/operations/{operation_id}", guard(show_operation)),
        Route("/v1/operations/{operation_id}/events", guard(operation_events)),
    ]


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), default=str)
