"""The direct executor and the helper API: a flow's steps, run in-process, without a Dagster run.

Launching a run costs seconds; the work takes milliseconds. The executor calls the very step
functions the jobs' ops wrap (``flows/``), with the same resources, and gives them what Dagster
would: the step's ``RetryPolicy`` for transient errors (Dagster does not apply it to direct
invocation, so it is honoured here), and the step's ``on_failure`` once the last try failed.

Around the flow it keeps the operation's record and events (started, progress, completed or
error) and, after the completed event is stored, hands the materialization to the background
reporter (``reporting.py``), so Dagster's UI shows direct provisionings in the same asset history
as runs. At most ``max_concurrency`` provisionings run at once; further calls wait their turn.

The helper API (``run_graph_provisioning`` and friends) is async, with ``*_sync`` twins for
scripts. With ``DIRECT_GRAPH_PROVISIONING_ENABLED=false`` the same calls launch the flow's Dagster
job through the webserver instead (``launcher.py``) and mirror its outcome into the operation.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dagster import Backoff, DagsterInstance, Jitter, RetryPolicy

from provisioning_pipelines.flows import (
    GRAPH_FLOW,
    REPOSITORY_FLOW,
    SUBGRAPH_FLOW,
    Flow,
    Outcome,
    Step,
    StepContext,
    SubgraphConfig,
    SubscriptionConfig,
)
from provisioning_pipelines.flows.steps import describe, is_transient
from provisioning_pipelines.launcher import GraphQLJobLauncher, JobLauncher
from provisioning_pipelines.reporting import MaterializationReporter
from provisioning_pipelines.resources import Owner, SafeEvents, build_resources
from provisioning_pipelines.services.billing import ClaimHeld
from provisioning_pipelines.settings import Settings, get_settings
from provisioning_pipelines.storage.events import OperationStore
from provisioning_pipelines.storage.models import Subscription

logger = logging.getLogger("provisioning_pipelines.direct")


def retry_delay(policy: RetryPolicy, retry_number: int) -> float:
    """Seconds to wait before retry ``retry_number`` (0-based), as Dagster computes it."""
    delay = policy.delay or 0.0
    if policy.backoff == Backoff.EXPONENTIAL:
        delay *= 2**retry_number
    elif policy.backoff == Backoff.LINEAR:
        delay *= retry_number + 1
    if policy.jitter == Jitter.FULL:
        delay = random.uniform(0, delay)
    elif policy.jitter == Jitter.PLUS_MINUS:
        delay = max(0.0, delay + random.uniform(-delay, delay))
    return delay


def run_step(step: Step, ctx: StepContext, value: Any) -> Any:
    retries = 0
    while True:
        try:
            return step(ctx, value)
        except Exception as exc:
            if step.retry is not None and is_transient(exc) and retries < step.retry.max_retries:
                time.sleep(retry_delay(step.retry, retries))
                retries += 1
                continue
            if step.on_failure is not None:
                step.on_failure(ctx, value, exc)
            raise


def execute_flow(flow: Flow, config: Any, ctx: StepContext) -> Outcome:
    """Run every step of the flow, passing each output on; returns the last step's outcome."""
    value: Any = config
    for flow_step in flow.steps:
        value = run_step(flow_step, ctx, value)
    assert isinstance(value, Outcome), f"flow {flow.name} must end with an Outcome"
    return value


def direct_context(
    resources: dict[str, Any], *, operation_id: str | None = None, log: Any = None,
    store: SafeEvents | None = None,
) -> StepContext:
    """A step context from the same resources the Dagster definitions use.

    Progress goes straight to the operation's events, synchronously and in order.
    """
    log = log or logger
    progress = resources["progress"].reporter(log, operation_id, events=store)
    return StepContext(
        database=resources["database"].get(),
        engine=resources["graph_engine"].get(),
        graph_data_dir=resources["graph_engine"].graph_data_dir,
        progress=progress,
        policy=resources["policy"].get(),
        method="direct",
        log=log,
    )


@dataclass(frozen=True)
class ProvisioningResult:
    operation_id: str
    result: dict[str, Any]


class DirectExecutor:
    def __init__(
        self,
        resources: dict[str, Any],
        *,
        reporter: MaterializationReporter | None = None,
        max_concurrency: int = 8,
        launcher: JobLauncher | None = None,
    ) -> None:
        self.resources = resources
        self.reporter = reporter
        self.launcher = launcher
        self.max_concurrency = max_concurrency
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="provisioning")
        self._events = SafeEvents(resources["operation_events"].get())

    @property
    def store(self) -> OperationStore:
        return self._events.store

    # --- the three provisionings, synchronous -------------------------------------------

    def graph(self, subscription_id: str, *, operation_id: str | None = None,
              retry_failed: bool = False) -> ProvisioningResult:
        return self.run(GRAPH_FLOW, SubscriptionConfig(subscription_id=subscription_id,
                                                       retry_failed=retry_failed),
                        kind="graph_provisioning",
                        user_id=lambda: self._subscriber(subscription_id),
                        operation_id=operation_id)

    def repository(self, subscription_id: str, *, operation_id: str | None = None,
                   retry_failed: bool = False) -> ProvisioningResult:
        return self.run(REPOSITORY_FLOW, SubscriptionConfig(subscription_id=subscription_id,
                                                            retry_failed=retry_failed),
                        kind="repository_provisioning",
                        user_id=lambda: self._subscriber(subscription_id),
                        operation_id=operation_id)

    def subgraph(self, user_id: str, parent_graph_id: str, name: str, *,
                 description: str | None = None, fork_parent: bool = False,
                 operation_id: str | None = None) -> ProvisioningResult:
        config = SubgraphConfig(user_id=user_id, parent_graph_id=parent_graph_id, name=name,
                                description=description, fork_parent=fork_parent)
        return self.run(SUBGRAPH_FLOW, config, kind="subgraph_creation", user_id=user_id,
                        operation_id=operation_id)

    def _subscriber(self, subscription_id: str) -> str | None:
        with self.resources["database"].get().session() as session:
            row = session.get(Subscription, subscription_id)
            return row.user_id if row is not None else None

    # --- the operation around a flow ----------------------------------------------------

    def open_operation(self, kind: str, user_id: Owner,
                       operation_id: str | None = None) -> str:
        """Create the operation record (pending) unless it exists; returns its id."""
        return self._events.open(kind, user_id, operation_id)

    def run(self, flow: Flow, config: Any, *, kind: str, user_id: Owner,
            operation_id: str | None = None) -> ProvisioningResult:
        operation_id = self.open_operation(kind, user_id, operation_id)
        with self._slots:
            self._events.call(operation_id, "start", f"{flow.name} provisioning started")
            try:
                if self.launcher is not None:
                    result = self.launcher.run(flow, config, operation_id=operation_id)
                    outcome = None
                else:
                    outcome = self._execute(flow, config, operation_id)
                    result = outcome.result
            except Exception as exc:
                self._events.call(operation_id, "fail", describe(exc))
                raise
        self._events.call(operation_id, "complete", {**result, "operation_id": operation_id})
        if outcome is not None and outcome.materialize and self.reporter is not None:
            self.reporter.submit(operation_id, outcome.asset_key,
                                 {**outcome.materialization_metadata("direct"),
                                  "operation_id": operation_id})
        return ProvisioningResult(operation_id, result)

    def _execute(self, flow: Flow, config: Any, operation_id: str) -> Outcome:
        """Run the flow; while another worker holds the claim, wait for it and run again
        (which then returns that worker's result) rather than fail the caller."""
        ctx = direct_context(self.resources, operation_id=operation_id, store=self._events)
        deadline = time.monotonic() + ctx.policy.claim_lease_seconds
        while True:
            try:
                return execute_flow(flow, config, ctx)
            except ClaimHeld as held:
                if held.backoff or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    # --- async twins, for an event loop ---------------------------------------------------

    async def run_async(self, call: Callable[..., ProvisioningResult], *args: Any,
                        **kwargs: Any) -> ProvisioningResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(call, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self.reporter is not None:
            self.reporter.close()


# --- the helper API ---------------------------------------------------------------------------

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


def build_executor(settings: Settings) -> DirectExecutor:
    resources = build_resources(settings)
    settings.prepare_dagster_home()
    store = resources["operation_events"].get()
    reporter = MaterializationReporter(DagsterInstance.get, store,
                                       timeout=settings.dagster_materialization_timeout)
    launcher = None
    if not settings.direct_graph_provisioning_enabled:
        launcher = GraphQLJobLauncher(settings.dagster_webserver_url, resources)
    return DirectExecutor(resources, reporter=reporter,
                          max_concurrency=settings.direct_max_concurrency, launcher=launcher)


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
