"""What every endpoint shares: the app's stores, authentication, error mapping and bodies.

Services raise ``ProvisioningError``s; ``guard`` maps them to answers once for every endpoint,
and a store that is down to 503 naming it, so a client's mistake is never a 5xx and an outage
is told as one. A plain (non-async) endpoint runs in the thread pool, so SQL and Redis calls
never block the event loop. Bodies are read within bounds of size, time and number
(``api/bodies.py``), after authentication. Authentication is ``user_of``, and so is the one rule
for browsers: a write authenticated by the session cookie must come from an allowed origin with
a JSON body (``same_origin.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dagster import DagsterInstance
from redis.exceptions import RedisError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from provisioning_pipelines import metrics
from provisioning_pipelines.api.bodies import BodyReader, closes_connection
from provisioning_pipelines.api.limits import InFlightLimits
from provisioning_pipelines.api.same_origin import check_browser_write
from provisioning_pipelines.direct import DirectExecutor
from provisioning_pipelines.errors import (
    EngineError,
    ProvisioningError,
    ServiceUnavailable,
    Unauthorized,
)
from provisioning_pipelines.flows import Flow
from provisioning_pipelines.flows.public import describe
from provisioning_pipelines.services.access import accounts, sessions
from provisioning_pipelines.services.access.accounts import Identity
from provisioning_pipelines.services.graphs import lifecycle
from provisioning_pipelines.services.provisioning import leases
from provisioning_pipelines.settings import Settings
from provisioning_pipelines.storage.db import Database
from provisioning_pipelines.storage.errors import is_outage, what_is_down
from provisioning_pipelines.storage.events import Fanout, OperationStore
from provisioning_pipelines.storage.work_queue import WorkItem, WorkQueue

if TYPE_CHECKING:
    from provisioning_pipelines.storage.hosts.directory import HostDirectory

logger = logging.getLogger("provisioning_pipelines.api")

Endpoint = Callable[[Request], Awaitable[Response] | Response]
#: A lifecycle request's check: what it starts (flow, config) and what else the answer says.
Check = Callable[[Session, Identity], tuple[Flow, Any, dict[str, Any]]]
#: What a 503 asks a client to wait before trying again.
RETRY_AFTER_SECONDS = 5
#: The browser session's cookie (HttpOnly, SameSite=Strict): a signed token, never the key.
SESSION_COOKIE = "pp_session"


@dataclass
class ApiContext:
    """The app's settings and stores, and the provisionings it started in the background."""

    settings: Settings
    executor: DirectExecutor
    dagster_instance: Callable[[], DagsterInstance]
    keepalive_seconds: float
    #: Where background flows go when provisioning processes run them (else: here).
    work: WorkQueue | None = None
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    #: The uvicorn server running the app, when ``serve`` started it (for a second SIGTERM).
    server: Any = None
    shutting_down: bool = False
    unfinished: int = 0
    #: Every SSE stream of this process reads through it: one store reader per operation.
    fanout: Fanout = field(init=False)
    #: Every request body of this process is read through it, within its bounds.
    bodies: BodyReader = field(init=False)
    #: Per-user bounds on the unpaid work started through the API.
    limits: InFlightLimits = field(init=False)

    def __post_init__(self) -> None:
        self.fanout = Fanout(self.executor.store, keepalive=self.keepalive_seconds,
                             count_readers=metrics.STREAM_READERS.inc)
        self.limits = InFlightLimits(self.settings, self.executor.store,
                                     self.executor.open_operation)
        self.bodies = BodyReader(timeout_seconds=self.settings.body_read_timeout_seconds,
                                 max_concurrent=self.settings.body_read_max_concurrency)

    @property
    def database(self) -> Database:
        return self.executor.resources["database"].get()

    @property
    def store(self) -> OperationStore:
        return self.executor.store

    @property
    def hosts(self) -> HostDirectory:
        """The graph hosts this process reaches (a graph's size is asked of its host server)."""
        return self.executor.resources["graph_engine"].hosts()

    async def start(self, flow: Flow, config: Any, *, operation_id: str) -> None:
        """Run the flow in the background; the outcome lands on the operation. With
        provisioning processes (``direct/provisioner.py``) it is handed to them, else run on
        this process's executor, as is one that Redis refuses to take."""
        if self.work is not None:
            try:
                await run_in_threadpool(self.work.push, WorkItem(
                    flow.name, config.model_dump(), operation_id))
                return
            except RedisError as exc:
                logger.warning("operation %s: could not hand it to a provisioner (%s); "
                               "running it here", operation_id, exc)
        task = asyncio.create_task(self.executor.run_async(
            self.executor.run, flow, config, operation_id=operation_id))
        self.background.add(task)
        task.add_done_callback(self._forget)

    async def drain(self, grace_seconds: float) -> None:
        """Let the provisionings started here finish within ``grace_seconds``, then give the
        claims of any still running back, so another worker continues them at once."""
        self.shutting_down = True
        pending = set(self.background)
        if pending:
            logger.info("shutdown: waiting up to %g s for %d provisioning(s)", grace_seconds,
                        len(pending))
            deadline = asyncio.get_running_loop().time() + grace_seconds
            while pending and not self.force_exit and (
                    asyncio.get_running_loop().time() < deadline):
                _done, pending = await asyncio.wait(pending, timeout=0.1)
        released = sum(keeper.release_all() for keeper in leases.all_keepers())
        if pending or released:
            logger.warning("shutdown: %d provisioning(s) still running; gave back %d claim(s)",
                           len(pending), released)
        self.unfinished = len(pending)

    @property
    def force_exit(self) -> bool:
        """A second SIGTERM: uvicorn's server says so (``serve`` hands it to us)."""
        return bool(self.server is not None and getattr(self.server, "force_exit", False))

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("background provisioning ended with an error: %s", task.exception())

    async def launch(self, request: Request, check: Check) -> Response:
        """Check a request for a lifecycle change (who asks, and whether the state allows it:
        a refusal is a 4xx now, not a failed operation later), then run its flow in the
        background: ``202 {"operation_id", ...}``, and the progress is the operation's stream."""

        def checked() -> tuple[Identity, Flow, Any, dict[str, Any]]:
            user = self.user_of(request)
            with self.database.session() as session:
                flow, config, extra = check(session, user)
                graph_id = getattr(config, "graph_id", None) or \
                    getattr(config, "parent_graph_id", None)
                if isinstance(graph_id, str):
                    lifecycle.check_not_moving(session, graph_id)  # 503, Retry-After
            return user, flow, config, extra

        user, flow, config, extra = await run_in_threadpool(checked)
        operation_id = await self.limits.open(flow.operation_kind, user.user_id)
        await self.start(flow, config, operation_id=operation_id)
        return JSONResponse({"operation_id": operation_id, **extra}, status_code=202)

    def user_of(self, request: Request, session: Session | None = None) -> Identity:
        """The caller, from ``Authorization: Bearer <api key>`` or a browser's session cookie;
        401 otherwise. A write with the cookie is first checked for where it comes from. With
        ``session``, looked up in it (a route on the customer's path saves a session)."""
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else None
        token = request.cookies.get(SESSION_COOKIE)
        if key is None and token:
            self.check_browser(request)
        with contextlib.nullcontext(session) if session is not None else \
                self.database.session() as found:
            if key is not None:
                user = accounts.authenticate(found, key)
            else:
                user = sessions.session_user(found, token, self.settings.session_secrets)
        if user is None:
            raise Unauthorized("Authorization: a valid 'Bearer <api key>' is required")
        return user

    def check_browser(self, request: Request) -> None:
        """403 (or 415) for a write that would use or set the session cookie from a page that
        is neither this server's nor one of ``CORS_ALLOW_ORIGINS``."""
        check_browser_write(request, self.settings.cors_origins)


def guard(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """Map errors to answers once; plain functions run in the thread pool."""

    async def guarded(request: Request) -> Response:
        try:
            if inspect.iscoroutinefunction(endpoint):
                return await endpoint(request)
            return await run_in_threadpool(endpoint, request)  # type: ignore[arg-type]
        except Exception as exc:
            return error_response(exc)

    return guarded


def error_response(exc: BaseException) -> JSONResponse:
    """The answer for an error: its own status for ours, 503 for an outage, 500 otherwise."""
    if isinstance(exc, ProvisioningError):
        if isinstance(exc, EngineError):
            logger.warning("graph engine: %s", exc.message)
        headers = {}
        if isinstance(exc, ServiceUnavailable):
            headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        if closes_connection(exc):
            headers["Connection"] = "close"
        # The customer's sentence: an engine's own text (paths, its message) stays in the log.
        return JSONResponse({**exc.to_dict(), "message": describe(exc)},
                            status_code=exc.status_code, headers=headers)
    if is_outage(exc):
        down = what_is_down(exc)
        metrics.OUTAGES.labels("database" if down == "database" else "event_store").inc()
        logger.warning("%s unavailable: %s: %s", down, type(exc).__name__, exc)
        unavailable = ServiceUnavailable(f"{down} unavailable; try again shortly")
        return JSONResponse(unavailable.to_dict(), status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    logger.error("unexpected error", exc_info=exc)
    return JSONResponse({"error": "internal_error", "message": "an unexpected error; it has "
                         "been logged", "field": None}, status_code=500)
