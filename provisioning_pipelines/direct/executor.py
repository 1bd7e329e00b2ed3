"""The direct executor: a flow's steps, run in-process, without a Dagster run.

Launching a run costs seconds; the work takes milliseconds. The executor runs the very steps the
jobs' ops wrap, through the same step runner (``flows/runner.py``), with the same resources
(``runtime/resources.py``), so retries, undo and the materialization are decided in one
place for both paths.

Around the flow it keeps the operation's record and events (started, progress, completed or
error) and, after the completed event is stored, hands the materialization to the background
reporter, so Dagster's UI shows direct provisionings in the same asset history as runs. At most
``max_concurrency`` provisionings run at once; further calls wait their turn. With direct
provisioning off, the same calls launch the flow's Dagster job instead (``launcher.py``) and
mirror its outcome into the operation.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from provisioning_pipelines import metrics
from provisioning_pipelines.direct.launcher import GraphQLJobLauncher, JobLauncher
from provisioning_pipelines.flows import (
    GRAPH_FLOW,
    REPOSITORY_FLOW,
    SUBGRAPH_FLOW,
    Flow,
    Outcome,
    SubgraphConfig,
    SubscriptionConfig,
    execute_flow,
    materialization,
)
from provisioning_pipelines.flows.public import public_result
from provisioning_pipelines.runtime.progress import (
    Owner,
    ProgressReporter,
    SafeEvents,
    end_on_error,
)
from provisioning_pipelines.runtime.reporting import MaterializationReporter, build_reporter
from provisioning_pipelines.runtime.resources import build_resources, step_context
from provisioning_pipelines.services.provisioning.claims import (
    ClaimHeld,
    ClaimLost,
    Queued,
    RetryScheduled,
)
from provisioning_pipelines.settings import Settings
from provisioning_pipelines.storage.events import OperationStore

logger = logging.getLogger("provisioning_pipelines.direct")

#: How often a call waits for another worker's claim to end before trying again.
_CLAIM_POLL_SECONDS = 0.02
#: How long a progress line may wait to share its round trip to the event store with the next
#: write: a flow of milliseconds writes its lines and its end at once, a slow step's line shows
#: this late at most.
_PROGRESS_DELAY_SECONDS = 0.05
#: How long a call waits for a live holder (its heartbeat keeps the lease; a dead one's lapses).
_WAIT_FOR_HOLDER_SECONDS = 600.0


@dataclass(frozen=True)
class ProvisioningResult:
    operation_id: str
    result: dict[str, Any]


class DirectExecutor:
    def __init__(
        self,
        resources: Mapping[str, Any],
        *,
        reporter: MaterializationReporter | None = None,
        max_concurrency: int = 8,
        launcher: JobLauncher | None = None,
    ) -> None:
        self.resources = dict(resources)
        self.reporter = reporter
        self.launcher = launcher
        self.max_concurrency = max_concurrency
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="provisioning")
        self._events = SafeEvents(self.resources["operation_events"].get(),
                                  progress_delay=_PROGRESS_DELAY_SECONDS)

    @property
    def store(self) -> OperationStore:
        return self._events.store

    # --- the three provisionings, synchronous -------------------------------------------

    def graph(self, subscription_id: str, *, operation_id: str | None = None,
              retry_failed: bool = False) -> ProvisioningResult:
        config = SubscriptionConfig(subscription_id=subscription_id, retry_failed=retry_failed)
        return self.run(GRAPH_FLOW, config, operation_id=operation_id)

    def repository(self, subscription_id: str, *, operation_id: str | None = None,
                   retry_failed: bool = False) -> ProvisioningResult:
        config = SubscriptionConfig(subscription_id=subscription_id, retry_failed=retry_failed)
        return self.run(REPOSITORY_FLOW, config, operation_id=operation_id)

    def subgraph(self, user_id: str, parent_graph_id: str, name: str, *,
                 description: str | None = None, fork_parent: bool = False,
                 operation_id: str | None = None) -> ProvisioningResult:
        config = SubgraphConfig(user_id=user_id, parent_graph_id=parent_graph_id, name=name,
                                description=description, fork_parent=fork_parent)
        return self.run(SUBGRAPH_FLOW, config, operation_id=operation_id)

    # --- the operation around a flow ----------------------------------------------------

    def open_operation(self, kind: str, user_id: Owner,
                       operation_id: str | None = None) -> str:
        """Create the operation record (pending) unless it exists; returns its id."""
        return self._events.open(kind, user_id, operation_id)

    def run(self, flow: Flow, config: Any, *, operation_id: str | None = None,
            wait_for_holder: bool = True) -> ProvisioningResult:
        """Run (or launch) the flow for ``config`` as one operation; raises what it raised.

        Without an ``operation_id`` one is made; with one, that operation is continued (made if
        it does not exist). While another worker holds the claim, the call waits for it
        (``wait_for_holder``) and returns its result.
        """
        database = self.resources["database"].get()
        created = operation_id is None
        operation_id = self.open_operation(flow.operation_kind,
                                           lambda: flow.owner(database, config), operation_id)
        method = "launched" if self.launcher is not None else "direct"
        metrics.WAITING.inc()
        with self._slots:
            metrics.WAITING.dec()
            started = time.perf_counter()
            self._events.call(operation_id, "start", f"{flow.name} provisioning started")
            try:
                with metrics.RUNNING.track_inprogress():
                    if self.launcher is not None:
                        result = self.launcher.run(flow, config, operation_id=operation_id)
                        outcome = None
                    else:
                        outcome = self._execute(flow, config, operation_id, wait_for_holder)
                        result = outcome.result
            except Exception as exc:
                _count(flow, method, _outcome_of(exc), started)
                end_on_error(ProgressReporter(logger, self._events, operation_id), exc,
                             made_here=created)
                if not isinstance(exc, Queued):
                    raise
                return ProvisioningResult(operation_id, {
                    "subscription_id": getattr(config, "subscription_id", None),
                    "status": "queued", "queue_position": exc.position})
            if outcome is not None and outcome.pending:
                _count(flow, method, "queued", started)
                return ProvisioningResult(operation_id, result)
            _count(flow, method, "completed", started)
        self._events.call(operation_id, "complete",
                          {**public_result(result), "operation_id": operation_id})
        if outcome is not None and outcome.materialize and self.reporter is not None:
            self.reporter.submit(operation_id, materialization(outcome, "direct",
                                                               operation_id=operation_id))
        return ProvisioningResult(operation_id, result)

    def live_operation(self, operation_id: str | None) -> str | None:
        """``operation_id`` if that operation exists and has not ended (a crashed worker's)."""
        if operation_id is None:
            return None
        found = self._events.call(operation_id, "get")
        return operation_id if found is not None and not found.is_terminal else None

    def _execute(self, flow: Flow, config: Any, operation_id: str,
                 wait_for_holder: bool) -> Outcome:
        """Run the flow. While another worker holds the claim, wait and run again (which then
        returns that worker's result). If this worker's claim lapsed and another took over, the
        result is that worker's, said as such, not a failure."""
        ctx = step_context(self.resources, method="direct", log=logger,
                           operation_id=operation_id, events=self._events)
        deadline = time.monotonic() + _WAIT_FOR_HOLDER_SECONDS
        lost = False
        while True:
            try:
                outcome = execute_flow(flow, config, ctx)
            except ClaimHeld as held:
                if held.backoff or not wait_for_holder or time.monotonic() > deadline:
                    raise
                time.sleep(_CLAIM_POLL_SECONDS)
                continue
            except ClaimLost:
                lost = True
                time.sleep(_CLAIM_POLL_SECONDS)
                continue
            if lost and outcome.result.get("already_active"):
                outcome.result["completed_by"] = "another worker"
            return outcome

    # --- async twins, for an event loop ---------------------------------------------------

    async def run_async(self, call: Callable[..., ProvisioningResult], *args: Any,
                        **kwargs: Any) -> ProvisioningResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(call, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._events.close()
        if self.reporter is not None:
            self.reporter.close()


def _outcome_of(exc: BaseException) -> str:
    """How a call that raised ``exc`` is counted."""
    if isinstance(exc, Queued):
        return "queued"
    if isinstance(exc, RetryScheduled):
        return "retry_scheduled"
    return "claim_held" if isinstance(exc, ClaimHeld | ClaimLost) else "failed"


def _count(flow: Flow, method: str, outcome: str, started: float) -> None:
    metrics.PROVISIONINGS.labels(flow.name, method, outcome).inc()
    metrics.DURATION.labels(flow.name, method).observe(time.perf_counter() - started)


def build_executor(settings: Settings) -> DirectExecutor:
    """An executor on the settings' resources, reporting to the Dagster instance in
    ``DAGSTER_HOME`` (the embedded one gets its own), or launching runs when direct
    provisioning is off."""
    resources = build_resources(settings)
    settings.prepare_dagster_home()
    reporter = build_reporter(settings, resources["operation_events"].get())
    launcher = None
    if not settings.direct_graph_provisioning_enabled:
        launcher = GraphQLJobLauncher(settings.dagster_webserver_url, resources)
    return DirectExecutor(resources, reporter=reporter,
                          max_concurrency=settings.direct_max_concurrency, launcher=launcher)
