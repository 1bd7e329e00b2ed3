"""The direct executor: a flow's steps, run in-process, in order, without launching a Dagster run.

Launching a run costs seconds; the work takes milliseconds. The executor calls the very step
functions the jobs' ops wrap (``flows/``), with the same resources, and gives them what Dagster
would: the step's ``RetryPolicy`` for transient errors (Dagster does not apply it to direct
invocation, so it is honoured here), and the step's ``on_failure`` once the last try failed.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from dagster import Backoff, Jitter, RetryPolicy

from provisioning_pipelines.flows import Flow, Outcome, Step, StepContext
from provisioning_pipelines.flows.steps import is_transient


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
    resources: dict[str, Any], *, operation_id: str | None = None, log: Any = None
) -> StepContext:
    """A step context from the same resources the Dagster definitions use."""
    log = log or logging.getLogger("provisioning_pipelines.direct")
    return StepContext(
        database=resources["database"].get(),
        engine=resources["graph_engine"].get(),
        graph_data_dir=resources["graph_engine"].graph_data_dir,
        progress=resources["progress"].reporter(log, operation_id),
        policy=resources["policy"].get(),
        method="direct",
        log=log,
    )
