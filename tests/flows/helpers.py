"""Running flows in tests: through the Dagster job on a real instance, or directly."""

from __future__ import annotations

import logging
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult, RunConfig

from provisioning_pipelines.flows import Flow, Outcome, execute_flow
from provisioning_pipelines.orchestration.jobs import JOBS
from provisioning_pipelines.runtime.resources import step_context


def run_job(flow: Flow, config: Any, *, instance: DagsterInstance, resources: dict[str, Any],
            tags: dict[str, str] | None = None) -> ExecuteInProcessResult:
    first_op = flow.steps[0].name
    return JOBS[flow.name].execute_in_process(
        run_config=RunConfig(ops={first_op: config}), instance=instance, resources=resources,
        raise_on_error=False, tags=tags,
    )


def direct_context(resources: dict[str, Any]) -> Any:
    return step_context(resources, method="direct", log=logging.getLogger("tests"),
                        operation_id=None)


def run_direct(flow: Flow, config: Any, resources: dict[str, Any]) -> Outcome:
    return execute_flow(flow, config, direct_context(resources))


def job_error(result: ExecuteInProcessResult) -> str:
    """The message of the step failure that ended a run."""
    failures = [event for event in result.all_events if event.is_step_failure]
    assert failures, "the run did not fail"
    data = failures[0].step_failure_data
    return data.error.message if data.error else ""
