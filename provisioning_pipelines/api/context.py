"""What every endpoint shares: the app's stores, authentication, error mapping and JSON bodies.

Services raise ``ProvisioningError``s; ``guard`` maps them to answers once for every endpoint.
A plain (non-async) endpoint runs in the thread pool, so SQL and Redis calls never block the
event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from dagster import DagsterInstance
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from provisioning_pipelines.direct import DirectExecutor, ProvisioningResult
from provisioning_pipelines.errors import InvalidRequest, ProvisioningError
from provisioning_pipelines.services import accounts
from provisioning_pipelines.services.accounts import Identity
from provisioning_pipelines.settings import Settings
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.events import OperationStore

logger = logging.getLogger("provisioning_pipelines.api")

Endpoint = Callable[[Request], Awaitable[Response] | Response]


class Unauthorized(ProvisioningError):
    status_code = 401
    code = "unauthorized"
    retryable = False


@dataclass
class ApiContext:
    """The app's settings and stores, and the provisionings it started in the background."""

    settings: Settings
    executor: DirectExecutor
    dagster_instance: Callable[[], DagsterInstance]
    keepalive_seconds: float
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def database(self) -> Database:
        return self.executor.resources["database"].get()

    @property
    def store(self) -> OperationStore:
        return self.executor.store

    def start(self, call: Callable[..., ProvisioningResult], *args: Any, **kwargs: Any) -> None:
        """Provision in the background; the outcome lands on the operation."""
        task = asyncio.create_task(self.executor.run_async(call, *args, **kwargs))
        self.background.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("background provisioning ended with an error: %s", task.exception())

    def user_of(self, request: Request) -> Identity:
        """The caller, from ``Authorization: Bearer <api key>``; 401 otherwise."""
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else None
        with self.database.session() as session:
            user = accounts.authenticate(session, key)
        if user is None:
            raise Unauthorized("Authorization: a valid 'Bearer <api key>' is required")
        return user


def guard(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """Map service errors to answers once; plain functions run in the thread pool."""

    async def guarded(request: Request) -> Response:
        try:
            if inspect.iscoroutinefunction(endpoint):
                return await endpoint(request)
            return await run_in_threadpool(endpoint, request)  # type: ignore[arg-type]
        except ProvisioningError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status_code)

    return guarded


async def read_json(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or 422 naming what is wrong with it."""
    try:
        body = await request.json()
    except ValueError:
        raise InvalidRequest("body: not valid JSON", field="body") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body: expected a JSON object", field="body")
    return body
