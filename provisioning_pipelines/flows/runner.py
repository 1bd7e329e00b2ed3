"""The one step runner: how a step is tried, retried, undone, and how its outcome is reported.

Both execution paths are thin adapters over this module:

* **Retry.** A transient error (anything but a ``ProvisioningError``) is tried again while the
  step's ``RetryPolicy`` allows, after ``RetryPolicy.calculate_delay`` -- Dagster's own function,
  so both paths wait exactly as a Dagster retry would (0.2 s, then 0.6 s for the default policy).
  The direct executor waits here; the op adapter asks for ``hand_over_retries`` and gets a
  ``RetryLater`` instead, which it turns into Dagster's ``RetryRequested`` so the UI shows the
  retry.
* **Undo.** Once no retry is left, the step's ``on_failure`` undoes what the attempt made, then
  the error propagates.
* **Report.** ``materialization`` turns an ``Outcome`` into the ``AssetMaterialization`` that a
  run logs and the direct path reports, with ``provisioning_method`` telling the two apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from dagster import AssetKey, AssetMaterialization

from provisioning_pipelines.flows.steps import Flow, Outcome, Step, StepContext, is_transient


class RetryLater(Exception):
    """The step should be tried again after ``delay`` seconds, by the caller."""

    def __init__(self, delay: float, max_retries: int, cause: BaseException) -> None:
        super().__init__(f"retry in {delay:.3g} s after {type(cause).__name__}: {cause}")
        self.delay = delay
        self.max_retries = max_retries
        self.cause = cause


def retry_delay(step: Step, exc: BaseException, retries_done: int) -> float | None:
    """Seconds before the next try, or None when the error is final for this step."""
    if step.retry is None or not is_transient(exc) or retries_done >= step.retry.max_retries:
        return None
    return float(step.retry.calculate_delay(retries_done + 1))


def run_step(
    step: Step,
    ctx: StepContext,
    value: Any,
    *,
    retries_done: int = 0,
    hand_over_retries: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Run ``step`` on ``value``: retried while transient errors allow, undone when it fails."""
    while True:
        try:
            with step.around(ctx, value) if step.around else nullcontext():
                return step(ctx, value)
        except Exception as exc:
            delay = retry_delay(step, exc, retries_done)
            if delay is None:
                if step.on_failure is not None:
                    step.on_failure(ctx, value, exc)
                raise
            assert step.retry is not None
            if hand_over_retries:
                raise RetryLater(delay, step.retry.max_retries, exc) from exc
            ctx.log.warning(f"{step.name}: {type(exc).__name__}: {exc}; retry "
                            f"{retries_done + 1} of {step.retry.max_retries} in {delay:.3g} s")
            sleep(delay)
            retries_done += 1


def execute_flow(flow: Flow, config: Any, ctx: StepContext) -> Outcome:
    """Run every step of the flow, passing each output on; returns the last step's outcome."""
    value: Any = config
    for flow_step in flow.steps:
        value = run_step(flow_step, ctx, value)
    assert isinstance(value, Outcome), f"flow {flow.name} must end with an Outcome"
    return value


def materialization(outcome: Outcome, method: str, **metadata: Any) -> AssetMaterialization:
    """The asset event describing an outcome; ``method`` is ``dagster`` or ``direct``."""
    return AssetMaterialization(
        asset_key=AssetKey(list(outcome.asset_key)),
        metadata={**outcome.materialization_metadata(method), **metadata},
    )
